"""Runs the media worker in a child process with a wall-clock limit.

A child that crashes (signal), hangs (killed at the deadline) or answers a refusal
becomes an ``InvalidUpload`` for that one upload; a worker that cannot run at all
becomes ``Internal``. The server process itself never touches the media.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from server.errors import Internal, InvalidUpload, Reason
from server.media.messages import (
    RESULTS,
    HeaderInfo,
    MediaLimits,
    MessageError,
    ProbeRequest,
    Refusal,
    Request,
    SampledFrames,
    SampleRequest,
    Sandbox,
    ValidateRequest,
    VideoInfo,
    decode_answer,
    encode_request,
)

T = TypeVar("T")

_REASONS = {r.value: r for r in Reason}


@dataclass(frozen=True)
class MediaWorkerConfig:
    timeout_seconds: float
    memory_limit_bytes: int
    max_pixels: int
    max_seconds: float
    max_fps: float
    fault_injection: str = ""


class MediaInspector:
    def __init__(self, *, config: MediaWorkerConfig) -> None:
        self._config = config

    async def probe_header(self, path: Path) -> HeaderInfo:
        return await self._run(ProbeRequest(path=str(path)), HeaderInfo)

    async def validate(self, path: Path) -> VideoInfo:
        limits = MediaLimits(
            max_pixels=self._config.max_pixels,
            max_seconds=self._config.max_seconds,
            max_fps=self._config.max_fps,
        )
        return await self._run(ValidateRequest(path=str(path), limits=limits), VideoInfo)

    async def sample_frames(self, request: SampleRequest) -> SampledFrames:
        return await self._run(request, SampledFrames)

    async def _run(self, request: Request, result: type[T]) -> T:
        assert RESULTS[type(request)] is result, "each operation answers its own type"
        cfg = self._config
        sandbox = Sandbox(
            memory_bytes=cfg.memory_limit_bytes,
            cpu_seconds=int(cfg.timeout_seconds) + 1,
            fault=cfg.fault_injection,
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.media.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(
                process.communicate(encode_request(request, sandbox)), cfg.timeout_seconds
            )
        except TimeoutError:
            raise InvalidUpload(
                Reason.VIDEO_UNDECODABLE,
                f"inspecting the video took longer than {cfg.timeout_seconds:g} s",
            ) from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        code = process.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            raise InvalidUpload(
                Reason.VIDEO_UNDECODABLE, f"the media decoder crashed ({name}) on this file"
            )
        if code != 0:
            detail = stderr.decode(errors="replace").strip()[-300:]
            raise Internal(Reason.MEDIA_WORKER_FAILED, f"media worker failed: {detail}")
        try:
            answer = decode_answer(stdout, result)
        except (MessageError, ValueError) as exc:
            raise Internal(
                Reason.MEDIA_WORKER_FAILED, f"media worker answered badly: {exc}"
            ) from exc
        if isinstance(answer, Refusal):
            reason = _REASONS.get(answer.reason, Reason.VIDEO_UNDECODABLE)
            raise InvalidUpload(reason, answer.message)
        return answer
