"""Which frames to decode: a plan made from the packet index, before any decoding.

Pure logic (no PyAV): the input is the video stream's packets in decode order (pts,
dts, keyframe flag, as the demuxer reports them without decoding), the output an
ordered list of runs, each "seek to this keyframe, decode this many packets, keep
these frames", with its cost in decoded packets.

Why: a frame can only be decoded from the keyframe before it, so a frame ``k``
packets after a keyframe costs ``k + 1`` decodes. Seeking to evenly spaced times on
a video with 8 s GOPs decodes nearly the whole file; the keyframes themselves cost
one decode each. Policies (``VIDSCAN_FRAME_POLICY``):

* ``cheapest`` (default): the least decoding for ``count`` distinct frames spread over
  the whole video. Keyframes first (the ones nearest evenly spaced times); with
  fewer keyframes than ``count``, every keyframe plus the frames right after it
  (each GOP gets a share proportional to the time it covers, so the frames stay
  spread). When exact timestamps cost at most ``EXACT_COST_FACTOR`` times that
  (short GOPs, short clips), the exact plan is taken instead. Trade-off: on long-GOP
  videos the frames cluster right after keyframes (scene cuts, every few seconds)
  instead of sitting at evenly spaced times.
* ``exact``: the frame nearest each evenly spaced timestamp, whatever it costs (each
  GOP that holds targets is decoded once, up to its last target).

Cost is counted in decoded packets (frames since the keyframe); a keyframe is dearer than
a P-frame (on the bench's 1080p clips, 30 keyframes + 2 P-frames take longer than 8
keyframes + 24 P-frames), so a byte-weighted cost could trade spread for speed further.

A stream whose index cannot be trusted (no timestamps, keyframes going backwards) or
that has more packets than the bound gives ``None``: the caller falls back to
seeking (``server/media/frames.py``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

POLICIES = ("cheapest", "exact")
# Exact timestamps are taken by the cheapest policy when they cost at most this many
# times the cheapest plan (a clip shorter than a GOP, GOPs of a frame or two).
EXACT_COST_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class Packet:
    """One video packet as demuxed, in decode order; timestamps in stream units."""

    pts: int | None
    dts: int | None
    keyframe: bool


@dataclass(frozen=True)
class Run:
    """Seek to the keyframe with ``key_pts``, decode ``packets`` packets from it (in
    decode order), keep the frames whose pts is in ``keep`` (ascending)."""

    key_pts: int
    key_dts: int | None
    packets: int
    keep: tuple[int, ...]


@dataclass(frozen=True)
class FramePlan:
    kind: str  # "keyframes", "after_keyframes", "exact", "all"
    runs: tuple[Run, ...]
    time_base: Fraction

    @property
    def cost(self) -> int:
        """Packets decoded in all."""
        return sum(run.packets for run in self.runs)

    @property
    def frames(self) -> int:
        return sum(len(run.keep) for run in self.runs)

    def times(self) -> list[float]:
        return [float(pts * self.time_base) for run in self.runs for pts in run.keep]


@dataclass(frozen=True)
class _Gop:
    key_pts: int
    key_dts: int | None
    # Frames reachable from this keyframe: (pts, offset in decode order), by pts.
    frames: tuple[tuple[int, int], ...]

    def run(self, chosen: Sequence[tuple[int, int]]) -> Run:
        return Run(
            key_pts=self.key_pts,
            key_dts=self.key_dts,
            packets=max(offset for _, offset in chosen) + 1,
            keep=tuple(sorted(pts for pts, _ in chosen)),
        )


def plan(
    packets: Sequence[Packet], *, count: int, policy: str, time_base: Fraction
) -> FramePlan | None:
    """The decode plan for ``count`` distinct frames, or None if the index is unusable."""
    if policy not in POLICIES:
        raise ValueError(f"unknown frame policy {policy!r}")
    gops = _gops(packets)
    if gops is None or count < 1:
        return None
    exact = _exact(gops, count, time_base)
    if policy == "exact":
        return exact
    cheap = _cheapest(gops, count, time_base)
    if exact.cost <= EXACT_COST_FACTOR * cheap.cost:
        return exact
    return cheap


def _gops(packets: Sequence[Packet]) -> list[_Gop] | None:
    """Packets grouped from each keyframe to the next. A frame whose pts comes before
    its GOP's keyframe (an open GOP's leading B-frames) needs the previous GOP: it is
    not reachable. Without any keyframe flag the first packet starts the only GOP."""
    starts = [i for i, p in enumerate(packets) if p.keyframe and _time(p) is not None]
    if not starts:
        first = next((i for i, p in enumerate(packets) if _time(p) is not None), None)
        if first is None:
            return None
        starts = [first]
    gops: list[_Gop] = []
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else len(packets)
        key = packets[start]
        key_time = _time(key)
        assert key_time is not None
        if gops and key_time <= gops[-1].key_pts:
            return None  # keyframes out of order: the index cannot be trusted
        frames = sorted(
            (t, offset)
            for offset, p in enumerate(packets[start:stop])
            if (t := _time(p)) is not None and t >= key_time
        )
        if len({t for t, _ in frames}) != len(frames):
            return None  # two frames with one timestamp
        gops.append(_Gop(key_pts=key_time, key_dts=key.dts, frames=tuple(frames)))
    return gops


def _time(packet: Packet) -> int | None:
    return packet.pts if packet.pts is not None else packet.dts


def _targets(gops: Sequence[_Gop], count: int) -> list[float]:
    """Evenly spaced times (in stream units) from the first frame to the last,
    the first one on the first frame."""
    first = gops[0].key_pts
    last = max(pts for gop in gops for pts, _ in gop.frames[-1:])
    span = last - first
    return [first + span * i / count for i in range(count)]


def _exact(gops: Sequence[_Gop], count: int, time_base: Fraction) -> FramePlan:
    reachable = [(pts, n, offset) for n, gop in enumerate(gops) for pts, offset in gop.frames]
    reachable.sort()
    times = [pts for pts, _, _ in reachable]
    if len(reachable) <= count:
        return _all(gops, time_base)
    chosen: dict[int, list[tuple[int, int]]] = {}
    taken: set[int] = set()
    for target in _targets(gops, count):
        i = _nearest_free(times, target, taken)  # never twice the same frame
        taken.add(i)
        pts, n, offset = reachable[i]
        chosen.setdefault(n, []).append((pts, offset))
    runs = tuple(gops[n].run(chosen[n]) for n in sorted(chosen))
    return FramePlan(kind="exact", runs=runs, time_base=time_base)


def _all(gops: Sequence[_Gop], time_base: Fraction) -> FramePlan:
    runs = tuple(gop.run(gop.frames) for gop in gops if gop.frames)
    return FramePlan(kind="all", runs=runs, time_base=time_base)


def _cheapest(gops: Sequence[_Gop], count: int, time_base: Fraction) -> FramePlan:
    if sum(len(gop.frames) for gop in gops) <= count:
        return _all(gops, time_base)
    if len(gops) >= count:
        keys = [gop.key_pts for gop in gops]
        picked = _spread_keyframes(keys, _targets(gops, count))
        runs = tuple(gops[n].run(gops[n].frames[:1]) for n in picked)
        return FramePlan(kind="keyframes", runs=runs, time_base=time_base)
    shares = _shares(gops, count)
    chosen: list[Run] = []
    for gop, share in zip(gops, shares, strict=True):
        if share:
            cheapest_first = sorted(gop.frames, key=lambda frame: frame[1])[:share]
            chosen.append(gop.run(cheapest_first))
    return FramePlan(kind="after_keyframes", runs=tuple(chosen), time_base=time_base)


def _spread_keyframes(keys: Sequence[int], targets: Sequence[float]) -> list[int]:
    """For each target in turn, the keyframe nearest it among those after the one
    picked before, leaving enough keyframes for the targets still to come."""
    picked: list[int] = []
    low = 0
    for i, target in enumerate(targets):
        high = len(keys) - (len(targets) - i)  # the last index this target may take
        j = low + _nearest(keys[low : high + 1], target)
        picked.append(j)
        low = j + 1
    return picked


def _shares(gops: Sequence[_Gop], count: int) -> list[int]:
    """Frames per GOP: one each (its keyframe), the rest in proportion to the time
    each GOP covers (largest remainders), never more than a GOP holds."""
    ends = [gop.key_pts for gop in gops[1:]]
    last = gops[-1].frames[-1][0] if gops[-1].frames else gops[-1].key_pts
    ends.append(last + 1)
    spans = [max(1, end - gop.key_pts) for gop, end in zip(gops, ends, strict=True)]
    room = [len(gop.frames) for gop in gops]
    shares = [min(1, r) for r in room]
    left = count - sum(shares)
    while left > 0:
        open_ = [n for n in range(len(gops)) if shares[n] < room[n]]
        if not open_:
            break
        total = sum(spans[n] for n in open_)
        wants = {n: left * spans[n] / total for n in open_}
        granted = 0
        for n in open_:
            extra = min(math.floor(wants[n]), room[n] - shares[n])
            shares[n] += extra
            granted += extra
        if granted == 0:  # hand out single frames by largest remainder
            for n in sorted(open_, key=lambda n: wants[n] - math.floor(wants[n]), reverse=True):
                if granted == left:
                    break
                shares[n] += 1
                granted += 1
        left -= granted
    return shares


def _nearest_free(values: Sequence[float], target: float, taken: set[int]) -> int:
    """Like ``_nearest``, skipping indexes already taken (fewer than ``values``)."""
    i = _nearest(values, target)
    for step in range(len(values)):
        free = [j for j in (i - step, i + step) if 0 <= j < len(values) and j not in taken]
        if free:
            return min(free, key=lambda j: (abs(values[j] - target), j))
    raise ValueError("every value is taken")


def _nearest(values: Sequence[float], target: float) -> int:
    """Index of the value nearest ``target`` in ascending ``values`` (the earlier on a tie)."""
    i = bisect.bisect_left(values, target)
    if i == 0:
        return 0
    if i == len(values):
        return len(values) - 1
    return i - 1 if target - values[i - 1] <= values[i] - target else i
