"""Frame sampling for detection. Runs only inside the media worker process.

First the video stream's packet index is read (demux only, no decoding: ~15 ms for
a minute of 1080p), then ``frame_plan`` says which frames to decode at the least
cost; each planned run seeks to its keyframe, decodes exactly the packets it needs
and drains the decoder. The runs are shared among ``threads`` threads, each with its
own demuxer (``VIDSCAN_DECODE_THREADS``). An index that cannot be trusted (or is larger than the
bound) falls back to seeking to evenly spaced timestamps, as does a plan that
yields fewer frames than it promised (a damaged stream).

Frames are resized to the model's square input as RGB uint8 (NHWC); models whose
contract wants FP32 get them normalised here. The tensor goes to the shared-memory
region the server named in the request (Triton reads it from there), else to an
``.npy`` file next to the input: 32 frames are too large for a pipe answer.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from server.media import frame_plan
from server.media.messages import SampledFrames, SampleRequest
from server.media.probe import ProbeFailure, _why

# The fallback sampler seeks when the next target is this far ahead, else decodes on.
SEEK_AHEAD_SECONDS = 2.0
_DECODE_ERRORS = (av.error.InvalidDataError, av.error.PermissionError)


@dataclass(frozen=True)
class Sampled:
    pixels: list[np.ndarray]  # each [size, size, 3] RGB uint8
    times: list[float]
    kind: str  # the plan taken (frame_plan.FramePlan.kind), or "seek" (fallback)
    decoded: int  # packets fed to the decoder


def sample(
    path: Path,
    *,
    count: int,
    duration: float,
    shape: FrameShape,
    policy: str,
    max_packets: int,
    threads: int = 1,
) -> Sampled:
    """Up to ``count`` distinct frames spread over the video (fewer for short or
    damaged videos), with the times of the frames actually decoded. ``threads``
    share the planned runs, each thread with its own demuxer and decoder."""
    try:
        with _opened(path) as (container, stream):
            packets = read_index(container, stream, max_packets=max_packets)
            time_base = Fraction(stream.time_base) if stream.time_base else None
            planned = (
                frame_plan.plan(packets, count=count, policy=policy, time_base=time_base)
                if packets and time_base
                else None
            )
            if planned is not None:
                result = _decode_in_threads(
                    path, container, stream, planned, shape=shape, threads=threads
                )
                if len(result.times) >= planned.frames:
                    return result
            return _sample_by_seeking(
                container, stream, count=count, duration=duration, shape=shape
            )
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise ProbeFailure("VIDEO_UNDECODABLE", f"frame sampling failed: {_why(exc)}") from exc


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[Any, Any]]:
    """The container and its first video stream, decoded with slice threads only:
    frame threads (PyAV's "AUTO") hold frames back for a pipeline that a run of a few
    packets after a seek never fills (measured on the bench's 1080p clips, 32 frames:
    AUTO 163-194 ms, SLICE 107-151 ms, no threads 138-210 ms)."""
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        yield container, stream


def _decode_in_threads(
    path: Path,
    container: Any,
    stream: Any,
    planned: frame_plan.FramePlan,
    *,
    shape: FrameShape,
    threads: int,
) -> Sampled:
    """The plan's runs shared among ``threads``: each run starts at its own keyframe,
    so runs decode independently; this thread takes the first share on the open
    container, the others open the file again (PyAV releases the GIL in the decoder,
    so the shares run in parallel). Measured on the bench's 1080p clips, 32 frames,
    idle 2 cores, index read included: one thread 120-194 ms, two 104-136 ms (most
    gain on single-slice streams, where slice threads have nothing to share)."""
    shares = _split(planned.runs, threads)
    if len(shares) == 1:
        return _decode_plan(container, stream, planned, shape=shape)

    def decode_share(runs: tuple[frame_plan.Run, ...]) -> Sampled:
        share = replace(planned, runs=runs)
        with _opened(path) as (own_container, own_stream):
            return _decode_plan(own_container, own_stream, share, shape=shape)

    with ThreadPoolExecutor(max_workers=len(shares) - 1) as pool:
        others = [pool.submit(decode_share, runs) for runs in shares[1:]]
        results = [_decode_plan(container, stream, replace(planned, runs=shares[0]), shape=shape)]
        results += [future.result() for future in others]
    pairs = sorted(
        ((t, pixels) for r in results for t, pixels in zip(r.times, r.pixels, strict=True)),
        key=lambda pair: pair[0],
    )
    return Sampled(
        pixels=[pixels for _, pixels in pairs],
        times=[t for t, _ in pairs],
        kind=planned.kind,
        decoded=sum(r.decoded for r in results),
    )


def _split(runs: tuple[frame_plan.Run, ...], threads: int) -> list[tuple[frame_plan.Run, ...]]:
    """Runs shared into at most ``threads`` groups of about equal cost (decoded
    packets; dearest run first to the cheapest group), each kept in stream order so
    its demuxer only seeks forward."""
    count = max(1, min(threads, len(runs)))
    groups: list[list[int]] = [[] for _ in range(count)]
    costs = [0] * count
    for index in sorted(range(len(runs)), key=lambda i: -runs[i].packets):
        cheapest = costs.index(min(costs))
        groups[cheapest].append(index)
        costs[cheapest] += runs[index].packets
    return [tuple(runs[i] for i in sorted(group)) for group in groups if group]


def read_index(container: Any, stream: Any, *, max_packets: int) -> list[frame_plan.Packet]:
    """The stream's packets (pts, dts, keyframe flag) in decode order, read without
    decoding. Empty when there are more than ``max_packets``: planning is then left
    to the fallback, whose work is bounded by the number of frames asked for."""
    packets: list[frame_plan.Packet] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if len(packets) == max_packets:
                return []
            packets.append(
                frame_plan.Packet(pts=packet.pts, dts=packet.dts, keyframe=packet.is_keyframe)
            )
    except _DECODE_ERRORS:
        pass  # unreadable from here on: plan on what could be read
    return packets


def _decode_plan(
    container: Any, stream: Any, planned: frame_plan.FramePlan, *, shape: FrameShape
) -> Sampled:
    pixels: list[np.ndarray] = []
    times: list[float] = []
    decoded = 0
    for run in planned.runs:
        keep = set(run.keep)
        for frame in _run_frames(container, stream, run):
            stamp = frame.pts if frame.pts is not None else getattr(frame, "dts", None)
            if stamp in keep:
                keep.discard(stamp)
                pixels.append(shape.rgb(frame))
                times.append(float(stamp * planned.time_base))
        decoded += run.packets
    order = sorted(range(len(times)), key=times.__getitem__)
    return Sampled(
        pixels=[pixels[i] for i in order],
        times=[times[i] for i in order],
        kind=planned.kind,
        decoded=decoded,
    )


def _run_frames(container: Any, stream: Any, run: frame_plan.Run) -> Iterator[Any]:
    """Seeks to the run's keyframe, feeds the decoder its ``packets`` packets, then
    drains it (so B-frames come out without decoding further)."""
    container.seek(run.key_pts, stream=stream, backward=True, any_frame=False)
    fed = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            break
        stamp = packet.pts if packet.pts is not None else packet.dts
        if fed == 0 and not (packet.is_keyframe and stamp == run.key_pts):
            if stamp is not None and stamp > run.key_pts and packet.is_keyframe:
                break  # landed after our keyframe: the index was wrong
            continue  # landed before it: skip to it without decoding
        fed += 1
        with contextlib.suppress(*_DECODE_ERRORS):  # a damaged packet yields nothing
            yield from packet.decode()
        if fed == run.packets:
            break
    with contextlib.suppress(*_DECODE_ERRORS):
        yield from stream.codec_context.decode(None)


def _sample_by_seeking(
    container: Any, stream: Any, *, count: int, duration: float, shape: FrameShape
) -> Sampled:
    """The fallback: evenly spaced timestamps, each reached by seeking to the keyframe
    before it and decoding forward (or decoding on, when the next target is near)."""
    pixels: list[np.ndarray] = []
    times: list[float] = []
    decoded = 0
    decoder: Iterator[Any] | None = None
    position = -1.0
    step = duration / count if duration > 0 else 0.0
    for target in [step * i for i in range(count)] if step else [0.0]:
        if decoder is None or target - position > SEEK_AHEAD_SECONDS:
            offset = int(target / float(stream.time_base)) if stream.time_base else 0
            container.seek(offset, stream=stream, backward=True, any_frame=False)
            decoder = _decoded(container, stream)
        last = None
        for frame in decoder:
            decoded += 1
            position = _frame_time(frame)
            last = frame
            if position + 1e-6 >= target:
                break
        else:
            decoder = None  # ran out: take the final frame if it is new
        if last is not None and (not times or _frame_time(last) > times[-1]):
            pixels.append(shape.rgb(last))
            times.append(_frame_time(last))
    return Sampled(pixels=pixels, times=times, kind="seek", decoded=decoded)


def _frame_time(frame: Any) -> float:
    if frame.pts is None or frame.time_base is None:
        return float(frame.time or 0.0)
    return float(frame.pts * frame.time_base)


def _decoded(container: Any, stream: Any) -> Iterator[Any]:
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except _DECODE_ERRORS:
            continue  # a damaged packet: skip it, later keyframes may be fine


@dataclass(frozen=True)
class FrameShape:
    """How a decoded frame becomes a model's ``size`` x ``size`` RGB input: stretched
    to the square (whole-frame classifiers), or *letterboxed* -- scaled to fit with its
    aspect ratio kept, at the top-left, the rest black -- so that a face detector sees
    faces undistorted and its boxes map back to source pixels by one scale factor
    (``size / max(width, height)``)."""

    size: int
    letterbox: bool = False

    def rgb(self, frame: Any) -> np.ndarray:
        # swscale's area averaging: the right filter for a large downscale, and ~5x
        # faster than PyAV's default here (1.4 vs 7 ms for 1080p -> 224).
        if not self.letterbox:
            stretched: np.ndarray = frame.reformat(
                width=self.size, height=self.size, format="rgb24", interpolation="AREA"
            ).to_ndarray()
            return stretched
        scale = self.size / max(frame.width, frame.height)
        width = max(1, min(self.size, round(frame.width * scale)))
        height = max(1, min(self.size, round(frame.height * scale)))
        fitted = frame.reformat(
            width=width, height=height, format="rgb24", interpolation="AREA"
        ).to_ndarray()
        canvas = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        canvas[:height, :width] = fitted
        return canvas


def to_tensor(
    pixels: list[np.ndarray],
    *,
    datatype: str,
    layout: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> np.ndarray:
    """The batch in the model's form: UINT8 NHWC as decoded, or (older contracts)
    FP32 normalised on the CPU here, NCHW or NHWC."""
    batch = np.stack(pixels)
    if datatype == "UINT8":
        return batch if layout == "NHWC" else np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    scale = np.float32(1.0 / 255.0)
    floats = (batch.astype(np.float32) * scale - np.asarray(mean, np.float32)) / np.asarray(
        std, np.float32
    )
    if layout == "NCHW":
        floats = floats.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(floats, dtype=np.float32)


def write_shared(tensor: np.ndarray, *, key: str, capacity: int) -> None:
    """Writes the tensor at the start of the POSIX shared-memory object ``key`` that
    the server created (and registered with Triton). Opened by path, not through
    ``multiprocessing.shared_memory``, whose resource tracker would unlink it when
    this process exits."""
    if tensor.nbytes > capacity:
        raise ValueError(f"{tensor.nbytes} bytes of frames do not fit the {capacity}-byte region")
    fd = os.open(f"/dev/shm/{key.lstrip('/')}", os.O_RDWR)
    try:
        with mmap.mmap(fd, capacity) as region:
            view = np.frombuffer(region, dtype=tensor.dtype, count=tensor.size)
            view[:] = tensor.reshape(-1)
            del view
    finally:
        os.close(fd)


def sample_to_file(request: SampleRequest) -> SampledFrames:
    """The worker operation ``sample_frames``: the tensor goes to ``request.shm_key``
    when set, else to ``request.out``."""
    started = time.perf_counter()
    sampled = sample(
        Path(request.path),
        count=request.count,
        duration=request.duration,
        shape=FrameShape(request.size, letterbox=request.resize == "letterbox"),
        policy=request.policy,
        max_packets=request.max_packets,
        threads=request.threads,
    )
    if len(sampled.times) < request.min_frames:
        raise ProbeFailure(
            "VIDEO_UNDECODABLE",
            f"only {len(sampled.times)} of {request.count} frames could be decoded "
            f"(at least {request.min_frames} needed)",
        )
    tensor = to_tensor(
        sampled.pixels,
        datatype=request.datatype,
        layout=request.layout,
        mean=request.mean,
        std=request.std,
    )
    if request.shm_key:
        write_shared(tensor, key=request.shm_key, capacity=request.shm_bytes)
    else:
        np.save(request.out, tensor)
    return SampledFrames(
        frames=len(sampled.times),
        times=tuple(round(t, 3) for t in sampled.times),
        decode_ms=round((time.perf_counter() - started) * 1000, 1),
        plan=sampled.kind,
        decoded=sampled.decoded,
        nbytes=tensor.nbytes,
    )
