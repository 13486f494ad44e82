"""Frame sampling on real (generated) videos: the planner's choices decoded with PyAV.

Every reported time must be the time of the frame actually returned: each sampled
image is compared with the frame a full decode shows at that time.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from support.videos import SPECS, make_damaged_after_first_second, make_video

from server.media import frame_plan, frames
from server.media.probe import ProbeFailure

SIZE = 32


def encode(path: Path, *, seconds: int, fps: int, options: dict[str, str]) -> Path:
    """H.264 with x264 options (GOP length, B-frames); a gradient moving 4 px a frame."""
    with av.open(str(path), mode="w", format="mp4") as out:
        stream = out.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"preset": "ultrafast", **options}
        stream.time_base = Fraction(1, fps)
        xs = np.arange(160, dtype=np.uint16)
        for index in range(seconds * fps):
            row = ((xs + index * 4) % 256).astype(np.uint8)
            image = np.broadcast_to(row, (120, 160))[..., None].repeat(3, axis=2)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def every_frame(path: Path) -> dict[float, np.ndarray]:
    with av.open(str(path)) as container:
        return {
            round(float(f.pts * f.time_base), 3): frames.FrameShape(SIZE).rgb(f)
            for f in container.decode(container.streams.video[0])
        }


def check_true_times(path: Path, sampled: frames.Sampled) -> None:
    reference = every_frame(path)
    assert sampled.times == sorted(set(sampled.times)), "distinct, ascending"
    for time, pixels in zip(sampled.times, sampled.pixels, strict=True):
        np.testing.assert_array_equal(pixels, reference[round(time, 3)])


def sample(
    path: Path, *, count: int = 32, policy: str = "cheapest", threads: int = 1
) -> frames.Sampled:
    with av.open(str(path)) as container:
        duration = float(container.duration or 0) / av.time_base
    return frames.sample(
        path,
        count=count,
        duration=duration,
        shape=frames.FrameShape(SIZE),
        policy=policy,
        max_packets=100_000,
        threads=threads,
    )


def test_long_gops_decode_keyframes_and_the_frames_right_after(tmp_path: Path) -> None:
    # 30 s at 10 fps, a keyframe every 8 s: 4 keyframes for 32 frames.
    path = encode(tmp_path / "long.mp4", seconds=30, fps=10, options={"g": "80"})
    result = sample(path)
    assert result.kind == "after_keyframes"
    assert len(result.times) == 32
    assert result.decoded == 32  # no frame decoded that is not used
    assert result.times[0] == 0.0 and result.times[-1] >= 24.0  # the whole video
    check_true_times(path, result)


def test_exact_policy_takes_evenly_spaced_frames(tmp_path: Path) -> None:
    path = encode(tmp_path / "long.mp4", seconds=30, fps=10, options={"g": "80"})
    result = sample(path, policy="exact")
    assert result.kind == "exact"
    assert len(result.times) == 32
    assert np.diff(result.times).min() > 0.8  # ~0.93 s apart
    assert result.decoded > 200  # the cost the cheapest policy avoids
    check_true_times(path, result)


def test_short_gops_with_b_frames(tmp_path: Path) -> None:
    # 2 s GOPs with B-frames (decode order != presentation order): 20 keyframes.
    options = {"x264-params": "keyint=20:min-keyint=20:scenecut=0:bframes=2:b-adapt=0"}
    path = encode(tmp_path / "b.mp4", seconds=40, fps=10, options=options)
    with av.open(str(path)) as container:
        pts = [p.pts for p in container.demux(container.streams.video[0]) if p.size]
    assert pts != sorted(pts), "the clip really has B-frames"
    result = sample(path)
    assert len(result.times) == 32
    assert result.decoded <= 40
    check_true_times(path, result)
    exact = sample(path, policy="exact")
    assert len(exact.times) == 32
    check_true_times(path, exact)


@pytest.mark.parametrize("threads", [2, 3, 8])
@pytest.mark.parametrize("policy", ["cheapest", "exact"])
def test_decoding_threads_share_the_runs_and_change_nothing(
    tmp_path: Path, policy: str, threads: int
) -> None:
    """VIDSCAN_DECODE_THREADS: the same frames, times and decode count as one thread
    (more threads than runs: as many as there are runs), B-frames included."""
    options = {"x264-params": "keyint=20:min-keyint=20:scenecut=0:bframes=2:b-adapt=0"}
    path = encode(tmp_path / "b.mp4", seconds=40, fps=10, options=options)
    alone = sample(path, policy=policy)
    shared = sample(path, policy=policy, threads=threads)
    assert (shared.kind, shared.times, shared.decoded) == (alone.kind, alone.times, alone.decoded)
    for mine, theirs in zip(shared.pixels, alone.pixels, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    check_true_times(path, shared)


def test_runs_are_split_by_cost_and_kept_in_stream_order() -> None:
    runs = tuple(
        frame_plan.Run(key_pts=k, key_dts=k, packets=n, keep=(k,))
        for k, n in [(0, 9), (10, 1), (20, 1), (30, 8), (40, 1)]
    )
    shares = frames._split(runs, 2)
    assert [[r.key_pts for r in share] for share in shares] == [[0, 20], [10, 30, 40]]
    assert [sum(r.packets for r in share) for share in shares] == [10, 10]
    assert frames._split(runs, 1) == [runs]
    assert len(frames._split(runs[:2], 8)) == 2  # never more shares than runs


@pytest.mark.parametrize("spec", ["mkv", "webm", "avi", "mov"])
def test_other_containers_and_codecs(tmp_path: Path, spec: str) -> None:
    path = make_video(tmp_path / f"v{SPECS[spec].suffix}", spec=SPECS[spec], seconds=4, fps=10)
    result = sample(path)
    assert len(result.times) == 32
    check_true_times(path, result)


def vfr(path: Path, *, gop: int) -> Path:
    """5 s of frames at 25 fps, then 10 s at 1 fps (timestamps in ms)."""
    times = [i * 40 for i in range(125)] + [5000 + i * 1000 for i in range(10)]
    with av.open(str(path), mode="w", format="matroska") as out:
        stream = out.add_stream("h264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(gop)}
        stream.codec_context.time_base = Fraction(1, 1000)
        for index, ms in enumerate(times):
            image = np.full((120, 160, 3), index % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = ms
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize(("gop", "policy"), [(1, "cheapest"), (10, "exact")])
def test_variable_frame_rate_is_spread_by_time(tmp_path: Path, gop: int, policy: str) -> None:
    path = vfr(tmp_path / "vfr.mkv", gop=gop)
    result = sample(path, count=10, policy=policy)
    assert len(result.times) == 10
    # 125 of the 135 frames are in the first 5 s; the targets are 1.4 s apart.
    assert sum(1 for t in result.times if t >= 5.0) >= 5
    check_true_times(path, result)


def test_a_damaged_stream_falls_back_and_reports_what_it_got(tmp_path: Path) -> None:
    path = make_damaged_after_first_second(tmp_path / "damaged.mp4")
    result = sample(path)
    assert result.kind == "seek"  # the plan promised frames the stream could not give
    assert len(result.times) < 32


def test_an_index_over_the_bound_falls_back_to_seeking(tmp_path: Path) -> None:
    path = encode(tmp_path / "long.mp4", seconds=10, fps=10, options={"g": "80"})
    result = frames.sample(
        path,
        count=8,
        duration=10.0,
        shape=frames.FrameShape(SIZE),
        policy="cheapest",
        max_packets=50,
    )
    assert result.kind == "seek"
    assert len(result.times) == 8
    check_true_times(path, result)


def test_garbage_is_undecodable(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(4096))
    with pytest.raises(ProbeFailure):
        frames.sample(
            path,
            count=8,
            duration=1.0,
            shape=frames.FrameShape(SIZE),
            policy="cheapest",
            max_packets=10,
        )


def test_letterboxed_frames_keep_the_aspect_ratio_at_the_top_left(tmp_path: Path) -> None:
    """A 16:9 frame letterboxed into 224x224: scaled by 224/1280, the picture fills
    the top 126 rows, the rest is black (a face detector's boxes then map back to
    source pixels by that one factor)."""
    path = tmp_path / "wide.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        image = np.full((720, 1280, 3), 200, dtype=np.uint8)
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        frame = next(container.decode(container.streams.video[0]))
    boxed = frames.FrameShape(224, letterbox=True).rgb(frame)
    assert boxed.shape == (224, 224, 3)
    rows = round(720 * 224 / 1280)
    assert rows == 126
    assert abs(int(boxed[: rows - 1].mean()) - 200) <= 3, "the picture is on top"
    assert int(boxed[rows + 1 :].max()) == 0, "below it, black"
