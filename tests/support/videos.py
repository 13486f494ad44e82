"""Test videos made on the fly with PyAV (no binaries are committed)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@dataclass(frozen=True)
class VideoSpec:
    container: str  # PyAV/FFmpeg muxer name: mp4, mov, matroska, webm, avi
    codec: str  # h264, hevc, vp9, mpeg4, ...
    suffix: str
    faststart: bool = False


SPECS = {
    "mp4": VideoSpec("mp4", "h264", ".mp4"),
    "mp4-faststart": VideoSpec("mp4", "h264", ".mp4", faststart=True),
    "mov": VideoSpec("mov", "h264", ".mov"),
    "webm": VideoSpec("webm", "libvpx-vp9", ".webm"),
    "mkv": VideoSpec("matroska", "hevc", ".mkv"),
    "avi": VideoSpec("avi", "mpeg4", ".avi"),
}


def make_video(
    path: Path,
    *,
    spec: VideoSpec,
    seconds: float = 1.0,
    fps: int = 10,
    width: int = 160,
    height: int = 120,
    noise: bool = False,
) -> Path:
    """Writes a short synthetic clip (moving gradient, or noise for large files)."""
    options = {"movflags": "+faststart"} if spec.faststart else {}
    with av.open(str(path), mode="w", format=spec.container, options=options) as out:
        stream = out.add_stream(spec.codec, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        if spec.codec in ("h264", "hevc"):
            stream.options = {"preset": "ultrafast"}
        if spec.codec == "hevc":
            stream.options = {"preset": "ultrafast", "x265-params": "log-level=error"}
        if spec.codec == "libvpx-vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8"}
        stream.time_base = Fraction(1, fps)
        rng = np.random.default_rng(7)
        xs = np.arange(width, dtype=np.uint16)
        for index in range(max(1, int(seconds * fps))):
            if noise:
                image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            else:
                row = ((xs + index * 4) % 256).astype(np.uint8)
                image = np.broadcast_to(row, (height, width))[..., None].repeat(3, axis=2)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_audio_only(path: Path, *, seconds: float = 1.0) -> Path:
    """An M4A-style MP4 with one AAC track and no video (must be refused)."""
    rate = 16000
    with av.open(str(path), mode="w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        samples = np.zeros((1, int(rate * seconds)), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_damaged_after_first_second(path: Path, *, seconds: int = 8, fps: int = 10) -> Path:
    """A clip whose container and first GOP are intact (so it passes the upload
    checks, which decode the first frame) but whose later packets are zeroed:
    most sampled frames cannot be decoded."""
    spec = SPECS["mp4"]
    with av.open(str(path), mode="w", format=spec.container) as out:
        stream = out.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        stream.codec_context.gop_size = fps
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
    damaged = []
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.pts is not None and packet.pts * packet.time_base >= 1 and packet.size:
                damaged.append((packet.pos, packet.size))
    data = bytearray(path.read_bytes())
    for position, size in damaged:
        data[position : position + size] = bytes(size)
    path.write_bytes(bytes(data))
    return path
