"""The frame planner's pure logic: packet indexes made up in the test, no video."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from server.media.frame_plan import Packet, plan

TB = Fraction(1, 30)


def ipp(frames: int, *, gop: int) -> list[Packet]:
    """Decode order == presentation order, a keyframe every ``gop`` frames."""
    return [Packet(pts=i, dts=i, keyframe=i % gop == 0) for i in range(frames)]


def with_b_frames(frames: int, *, gop: int) -> list[Packet]:
    """I P B B P B B ...: each P is decoded before the two B-frames shown before it."""
    packets: list[Packet] = []
    for start in range(0, frames, gop):
        size = min(gop, frames - start)
        order, shown = [0], 0
        for p in range(3, size, 3):
            order += [p, *range(shown + 1, p)]
            shown = p
        order += range(shown + 1, size)
        for n, offset in enumerate(order):
            packets.append(Packet(pts=start + offset, dts=start + n - 1, keyframe=offset == 0))
    return packets


def test_enough_keyframes_costs_one_decode_per_frame() -> None:
    result = plan(ipp(1800, gop=30), count=32, policy="cheapest", time_base=TB)
    assert result is not None
    assert result.kind == "keyframes"
    assert result.frames == 32 and result.cost == 32
    keep = [pts for run in result.runs for pts in run.keep]
    assert all(pts % 30 == 0 for pts in keep)
    assert len(set(keep)) == 32
    assert keep[0] == 0 and keep[-1] >= 1700  # spread over the whole video


def test_long_gops_take_frames_right_after_each_keyframe() -> None:
    # 60 s at 30 fps with 8.3 s GOPs (x264's default keyint 250): 8 keyframes.
    result = plan(ipp(1800, gop=250), count=32, policy="cheapest", time_base=TB)
    assert result is not None
    assert result.kind == "after_keyframes"
    assert result.frames == 32
    assert len(result.runs) == 8  # every GOP is used, so the whole duration is covered
    assert result.cost == 32  # consecutive frames from each keyframe
    assert all(run.keep[0] == run.key_pts for run in result.runs)
    # The short last GOP (50 frames, 1.7 s) gets a smaller share than the 8.3 s ones.
    assert len(result.runs[-1].keep) < len(result.runs[0].keep)


def test_exact_policy_decodes_each_gop_once_up_to_its_last_target() -> None:
    result = plan(ipp(1800, gop=250), count=32, policy="exact", time_base=TB)
    assert result is not None
    assert result.kind == "exact"
    assert result.times() == pytest.approx([i * 1799 / 32 / 30 for i in range(32)], abs=1 / 30)
    assert len(result.runs) == 7  # the short last GOP holds no target
    for run in result.runs:
        assert run.packets == run.keep[-1] - run.key_pts + 1
    assert 1500 < result.cost < 1800


def test_cheapest_takes_exact_times_when_they_are_cheap() -> None:
    # A 4 s clip at 10 fps in one GOP: exact costs 40 decodes, the cheapest 32.
    result = plan(ipp(40, gop=250), count=32, policy="cheapest", time_base=Fraction(1, 10))
    assert result is not None
    assert result.kind == "exact"
    assert result.frames == 32


def test_fewer_frames_than_asked_gives_them_all() -> None:
    result = plan(ipp(10, gop=5), count=32, policy="cheapest", time_base=TB)
    assert result is not None
    assert result.kind == "all"
    assert [pts for run in result.runs for pts in run.keep] == list(range(10))
    assert result.cost == 10


def test_b_frames_cost_what_is_decoded_before_them() -> None:
    packets = with_b_frames(1800, gop=60)
    assert [p.pts for p in packets[:7]] == [0, 3, 1, 2, 6, 4, 5]
    result = plan(packets, count=32, policy="cheapest", time_base=TB)
    assert result is not None
    # 30 keyframes for 32 frames: two GOPs give a second frame, the P-frame decoded
    # right after the keyframe (pts 3), not the B-frame shown next (pts 1, 3 decodes).
    assert result.kind == "after_keyframes"
    assert result.frames == 32 and result.cost == 32
    seconds = [run for run in result.runs if len(run.keep) == 2]
    assert len(seconds) == 2
    assert all(run.keep == (run.key_pts, run.key_pts + 3) for run in seconds)


def test_b_frames_exact_plan_counts_decode_order() -> None:
    packets = with_b_frames(60, gop=60)
    result = plan(packets, count=2, policy="exact", time_base=TB)
    assert result is not None
    (run,) = result.runs
    assert run.keep == (0, 29)  # targets 0 and 29.5: the earlier frame on a tie
    decode_order = [p.pts for p in packets]
    assert run.packets == decode_order.index(29) + 1 > 29


def test_open_gop_leading_frames_are_not_reachable() -> None:
    # Second GOP: keyframe pts 10, then B-frames shown before it (8, 9) that need
    # the first GOP's frames.
    packets = [Packet(pts=i, dts=i, keyframe=i == 0) for i in range(8)]
    packets += [Packet(pts=10, dts=8, keyframe=True), Packet(pts=8, dts=9, keyframe=False)]
    packets += [Packet(pts=9, dts=10, keyframe=False), Packet(pts=11, dts=11, keyframe=False)]
    result = plan(packets, count=10, policy="cheapest", time_base=TB)
    assert result is not None
    assert result.kind == "all"  # 10 reachable frames, not 12
    assert [run.keep for run in result.runs] == [tuple(range(8)), (10, 11)]


def test_no_keyframe_flags_decodes_from_the_start() -> None:
    packets = [Packet(pts=i, dts=i, keyframe=False) for i in range(100)]
    result = plan(packets, count=4, policy="cheapest", time_base=TB)
    assert result is not None
    assert len(result.runs) == 1 and result.runs[0].key_pts == 0
    assert len(result.runs[0].keep) == 4


def test_variable_frame_rate_spreads_by_time_not_by_frame_count() -> None:
    # 100 frames in the first second, then one frame a second for 10 s; a keyframe each.
    pts = list(range(0, 1000, 10)) + list(range(1000, 11000, 1000))
    packets = [Packet(pts=t, dts=t, keyframe=True) for t in pts]
    result = plan(packets, count=10, policy="cheapest", time_base=Fraction(1, 1000))
    assert result is not None
    times = result.times()
    assert sum(1 for t in times if t < 1.0) <= 2  # not 10 frames from the first second


def test_pts_missing_uses_dts() -> None:
    packets = [Packet(pts=None, dts=i, keyframe=i % 10 == 0) for i in range(100)]
    result = plan(packets, count=5, policy="cheapest", time_base=TB)
    assert result is not None and result.frames == 5


@pytest.mark.parametrize(
    "packets",
    [
        [],
        [Packet(pts=None, dts=None, keyframe=True)] * 5,
        # keyframes going backwards: a damaged or hostile index
        [Packet(pts=100, dts=100, keyframe=True), Packet(pts=5, dts=5, keyframe=True)],
        # two frames claim one timestamp
        [Packet(pts=0, dts=0, keyframe=True), Packet(pts=1, dts=1, keyframe=False)] * 2,
    ],
    ids=["empty", "no-timestamps", "keyframes-backwards", "duplicate-pts"],
)
def test_an_unusable_index_gives_no_plan(packets: list[Packet]) -> None:
    assert plan(packets, count=8, policy="cheapest", time_base=TB) is None


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown frame policy"):
        plan(ipp(10, gop=5), count=2, policy="fastest", time_base=TB)


@pytest.mark.parametrize("seed", range(40))
def test_random_indexes_give_distinct_frames_at_no_more_than_the_exact_cost(seed: int) -> None:
    rng = random.Random(seed)
    frames = rng.randint(1, 900)
    gop = rng.choice([1, 2, 12, 60, 250, 1000])
    packets = with_b_frames(frames, gop=gop) if rng.random() < 0.5 else ipp(frames, gop=gop)
    count = rng.choice([1, 8, 32, 64])
    cheap = plan(packets, count=count, policy="cheapest", time_base=TB)
    exact = plan(packets, count=count, policy="exact", time_base=TB)
    assert cheap is not None and exact is not None
    for result in (cheap, exact):
        keep = [pts for run in result.runs for pts in run.keep]
        assert len(keep) == len(set(keep))  # distinct frames
        assert keep == sorted(keep)  # runs in presentation order
        assert all(run.packets >= len(run.keep) for run in result.runs)
    assert cheap.frames == exact.frames == min(count, frames)
    assert cheap.cost <= exact.cost


def test_exact_never_takes_a_frame_twice_when_targets_crowd() -> None:
    # 40 frames, 39 targets: neighbouring targets share a nearest frame.
    result = plan(ipp(40, gop=1000), count=39, policy="exact", time_base=TB)
    assert result is not None and result.frames == 39
