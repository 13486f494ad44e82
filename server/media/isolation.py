"""Runs media jobs in the warm worker pool with a wall-clock limit per job.

A worker that crashes (signal), hangs (killed at the limit) or answers a refusal
becomes an ``InvalidUpload`` for that one upload; a worker that fails on its own
becomes ``Internal``; no free worker within the caller's deadline becomes
``Unavailable(MEDIA_WORKERS_BUSY)``. The server process itself never touches the
media. This is the one place that maps worker outcomes to errors.

``deadline`` (keyword, every operation) is the ``time.monotonic()`` instant by
which the caller needs an answer (an RPC's deadline); a job waits for a worker
until shortly before it (``REPLY_MARGIN_SECONDS``), and never longer than
``queue_wait_seconds``, which is also the wait of callers without a deadline (the
background analyzer).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from server import tracing
from server.errors import Internal, InvalidUpload, Reason, reason_from_name
from server.media.messages import (
    OPS,
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
from server.media.pool import Answered, Crashed, MediaPool, PoolOptions, TimedOut

T = TypeVar("T")

# A job stops waiting for a worker this long (at most half the time left) before its
# caller's deadline, so that the caller hears UNAVAILABLE with RetryInfo rather than
# its own DEADLINE_EXCEEDED: the upload still has to be suspended (its tail saved to
# the object store, its progress to the session store) before the answer goes out.
REPLY_MARGIN_SECONDS = 1.0
# CPU a pool worker may spend starting (interpreter + PyAV import), on top of its jobs.
WORKER_START_CPU_SECONDS = 30


@dataclass(frozen=True)
class MediaWorkerConfig:
    timeout_seconds: float
    memory_limit_bytes: int
    max_pixels: int
    max_seconds: float
    max_fps: float
    fault_injection: str = ""
    workers: int = 1
    recycle_jobs: int = 100
    queue_wait_seconds: float = 30.0

    @property
    def cpu_seconds(self) -> int:
        """RLIMIT_CPU of one job: its wall-clock limit, rounded up, plus one."""
        return int(self.timeout_seconds) + 1

    def pool_options(self) -> PoolOptions:
        """A worker's lifetime CPU limit: start-up plus ``recycle_jobs`` jobs at their
        own limit, so recycling and the per-job limits bound it together."""
        return PoolOptions(
            workers=self.workers,
            recycle_jobs=self.recycle_jobs,
            memory_bytes=self.memory_limit_bytes,
            cpu_budget_seconds=WORKER_START_CPU_SECONDS + self.recycle_jobs * self.cpu_seconds,
        )


class MediaInspector:
    def __init__(self, *, config: MediaWorkerConfig, pool: MediaPool) -> None:
        self._config = config
        self._pool = pool

    @property
    def pool(self) -> MediaPool:
        return self._pool

    async def probe_header(
        self, path: Path, *, deadline: float | None = None, taken: asyncio.Event | None = None
    ) -> HeaderInfo:
        """``taken``: set once a worker has the job (``MediaPool.run``)."""
        return await self._run(ProbeRequest(path=str(path)), HeaderInfo, deadline, taken)

    async def validate(self, path: Path, *, deadline: float | None = None) -> VideoInfo:
        limits = MediaLimits(
            max_pixels=self._config.max_pixels,
            max_seconds=self._config.max_seconds,
            max_fps=self._config.max_fps,
        )
        request = ValidateRequest(path=str(path), limits=limits)
        return await self._run(request, VideoInfo, deadline)

    async def sample_frames(
        self, request: SampleRequest, *, deadline: float | None = None
    ) -> SampledFrames:
        return await self._run(request, SampledFrames, deadline)

    def _wait_seconds(self, deadline: float | None) -> float:
        wait = self._config.queue_wait_seconds
        if deadline is None:
            return wait
        left = deadline - time.monotonic()
        return min(wait, left - min(REPLY_MARGIN_SECONDS, left / 2))

    async def _run(
        self,
        request: Request,
        result: type[T],
        deadline: float | None,
        taken: asyncio.Event | None = None,
    ) -> T:
        assert RESULTS[type(request)] is result, "each operation answers its own type"
        cfg = self._config
        sandbox = Sandbox(
            memory_bytes=cfg.memory_limit_bytes,
            cpu_seconds=cfg.cpu_seconds,
            fault=cfg.fault_injection,
        )
        op = next(name for name, cls in OPS.items() if isinstance(request, cls))
        with tracing.span(f"media {op}", {"vidscan.media.op": op}):
            outcome = await self._pool.run(
                encode_request(request, sandbox),
                timeout_seconds=cfg.timeout_seconds,
                wait_seconds=self._wait_seconds(deadline),
                taken=taken,
            )
            tracing.event("media worker answered", outcome=type(outcome).__name__)
        if isinstance(outcome, TimedOut):
            raise InvalidUpload(
                Reason.VIDEO_UNDECODABLE,
                f"inspecting the video took longer than {cfg.timeout_seconds:g} s",
            )
        if isinstance(outcome, Crashed):
            raise InvalidUpload(
                Reason.VIDEO_UNDECODABLE,
                f"the media decoder crashed ({outcome.signal_name}) on this file",
            )
        if not isinstance(outcome, Answered):
            raise Internal(Reason.MEDIA_WORKER_FAILED, f"media worker failed: {outcome.detail}")
        try:
            answer = decode_answer(outcome.line, result)
        except (MessageError, ValueError) as exc:
            raise Internal(
                Reason.MEDIA_WORKER_FAILED, f"media worker answered badly: {exc}"
            ) from exc
        if isinstance(answer, Refusal):
            reason = reason_from_name(answer.reason, Reason.VIDEO_UNDECODABLE)
            raise InvalidUpload(reason, answer.message)
        return answer
