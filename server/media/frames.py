"""Frame sampling for detection. Runs only inside the media worker process.

N timestamps evenly spaced over the duration; each is reached by seeking to the
keyframe before it and decoding forward only as far as needed, so a long video is
never decoded whole. Frames are resized and normalised as the model's contract says
and written as one float32 NCHW array (``.npy``) next to the input, because 32 frames
at 224x224 are ~19 MB, too much for a pipe answer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from server.media.messages import SampledFrames, SampleRequest
from server.media.probe import ProbeFailure, _why

# Seeking is cheaper than decoding forward once the next target is this far ahead.
SEEK_AHEAD_SECONDS = 2.0


def _targets(duration: float, count: int) -> list[float]:
    if duration <= 0:
        return [0.0]
    step = duration / count
    return [step * i for i in range(count)]


def _frame_time(frame: Any) -> float:
    if frame.pts is None or frame.time_base is None:
        return float(frame.time or 0.0)
    return float(frame.pts * frame.time_base)


def _decoded(container: Any, stream: Any) -> Any:
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except (av.error.InvalidDataError, av.error.PermissionError):
            continue  # a damaged packet: skip it, later keyframes may be fine


def sample(path: Path, *, count: int, duration: float) -> tuple[list[Any], list[float]]:
    """Up to ``count`` decoded frames near evenly spaced timestamps (fewer for short
    or damaged videos), with the times actually taken."""
    frames: list[Any] = []
    times: list[float] = []
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            decoder = None
            position = -1.0
            for target in _targets(duration, count):
                if decoder is None or target - position > SEEK_AHEAD_SECONDS:
                    offset = int(target / float(stream.time_base)) if stream.time_base else 0
                    container.seek(offset, stream=stream, backward=True, any_frame=False)
                    decoder = _decoded(container, stream)
                last = None
                for frame in decoder:
                    position = _frame_time(frame)
                    last = frame
                    if position + 1e-6 >= target:
                        break
                else:
                    decoder = None  # ran out: take the final frame if it is new
                if last is not None and (not times or _frame_time(last) > times[-1]):
                    frames.append(last)
                    times.append(_frame_time(last))
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise ProbeFailure("VIDEO_UNDECODABLE", f"frame sampling failed: {_why(exc)}") from exc
    return frames, times


def to_tensor(
    frames: list[Any], *, size: int, mean: list[float], std: list[float], layout: str
) -> np.ndarray:
    pixels = np.stack(
        [f.reformat(width=size, height=size, format="rgb24").to_ndarray() for f in frames]
    ).astype(np.float32)
    scale = np.float32(1.0 / 255.0)
    batch: np.ndarray = (pixels * scale - np.asarray(mean, np.float32)) / np.asarray(
        std, np.float32
    )
    if layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)


def sample_to_file(request: SampleRequest) -> SampledFrames:
    """The worker operation ``sample_frames``: writes the tensor to ``request.out``."""
    started = time.perf_counter()
    frames, times = sample(Path(request.path), count=request.count, duration=request.duration)
    minimum = request.min_frames
    if len(frames) < minimum:
        raise ProbeFailure(
            "VIDEO_UNDECODABLE",
            f"only {len(frames)} of {request.count} frames could be decoded "
            f"(at least {minimum} needed)",
        )
    tensor = to_tensor(
        frames,
        size=request.size,
        mean=list(request.mean),
        std=list(request.std),
        layout=request.layout,
    )
    np.save(request.out, tensor)
    return SampledFrames(
        frames=len(frames),
        times=tuple(round(t, 3) for t in times),
        decode_ms=round((time.perf_counter() - started) * 1000, 1),
    )
