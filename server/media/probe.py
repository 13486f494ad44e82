"""PyAV inspection of untrusted files. Runs only inside the media worker process.

Every PyAV/FFmpeg exception is translated here (``ProbeFailure``) and leaves the
worker as a JSON answer; the server never imports PyAV.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from server.media.messages import HeaderInfo, MediaLimits, VideoInfo

# How far we read looking for the first decodable frame before calling a stream
# undecodable: enough for long GOP openings, small enough to bound the work.
MAX_PACKETS_FOR_FIRST_FRAME = 300


def _why(exc: BaseException) -> str:
    """FFmpeg's words for a failure, without the server-side file path."""
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


class ProbeFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _open(path: Path) -> Any:
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise ProbeFailure(
            "CORRUPT_CONTAINER", f"the container cannot be parsed: {_why(exc)}"
        ) from exc


def _video_stream(container: Any) -> Any:
    streams = list(container.streams.video)
    if not streams:
        raise ProbeFailure("NO_VIDEO_STREAM", "the file has no video stream")
    stream = streams[0]
    if stream.codec_context is None or not stream.codec_context.name:
        raise ProbeFailure("VIDEO_UNDECODABLE", "the video stream's codec is unknown")
    return stream


def probe_header(path: Path) -> HeaderInfo:
    """Early check on the bytes received so far: a parseable container header with a
    video stream whose codec has a decoder. Reads no frames."""
    with _open(path) as container:
        stream = _video_stream(container)
        return HeaderInfo(codec=str(stream.codec_context.name))


def _fps(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(Fraction(rate)) if rate else 0.0


def _duration(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / float(av.time_base)
    # WebM/MKV written live may carry no duration: take the last packet's end.
    last = 0.0
    container.seek(0)
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base is not None:
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            last = max(last, end)
    return last


def _decode_first_frame(container: Any, stream: Any) -> None:
    container.seek(0)
    try:
        for count, packet in enumerate(container.demux(stream)):
            for _frame in packet.decode():
                return
            if count >= MAX_PACKETS_FOR_FIRST_FRAME:
                break
    except (av.error.FFmpegError, ValueError) as exc:
        raise ProbeFailure(
            "VIDEO_UNDECODABLE", f"the video stream cannot be decoded: {_why(exc)}"
        ) from exc
    raise ProbeFailure("VIDEO_UNDECODABLE", "no decodable video frame found")


def validate(path: Path, limits: MediaLimits) -> VideoInfo:
    """Full validation after the last byte: stream, codec, geometry, rate, duration,
    and one decoded frame. The limits guard against decode bombs."""
    with _open(path) as container:
        stream = _video_stream(container)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if width <= 0 or height <= 0:
            raise ProbeFailure("VIDEO_UNDECODABLE", "the video stream has no frame size")
        if width * height > limits.max_pixels:
            raise ProbeFailure(
                "VIDEO_LIMITS_EXCEEDED",
                f"{width}x{height} exceeds the limit of {limits.max_pixels} pixels per frame",
            )
        fps = _fps(stream)
        if fps > limits.max_fps:
            raise ProbeFailure(
                "VIDEO_LIMITS_EXCEEDED", f"{fps:.1f} fps exceeds the limit of {limits.max_fps}"
            )
        try:
            duration = _duration(container, stream)
        except (av.error.FFmpegError, ValueError) as exc:
            raise ProbeFailure(
                "CORRUPT_CONTAINER", f"the container cannot be read: {_why(exc)}"
            ) from exc
        if duration > limits.max_seconds:
            raise ProbeFailure(
                "VIDEO_LIMITS_EXCEEDED",
                f"{duration:.0f} s exceeds the limit of {limits.max_seconds:.0f} s",
            )
        _decode_first_frame(container, stream)
        return VideoInfo(
            container=str(container.format.name),
            codec=str(stream.codec_context.name),
            width=width,
            height=height,
            fps=round(fps, 3),
            duration_seconds=round(duration, 3),
        )
