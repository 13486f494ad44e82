"""The recovery sweep: the database says which analyses need a worker, the queue says
which it holds a job for; the rest get a job again.

A job goes missing when its enqueue failed (Redis down at that moment), when Redis
lost its data (a restart without persistence, FLUSHALL), or when the in-memory queue
of the embedded default ended with its process. Re-queueing is safe even when a
stray copy exists: the analysis is claimed with a lease, and a worker acknowledges a
job whose analysis is already finished without running it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from server.analysis.queue import RecoverableQueue
from server.clock import Clock
from server.errors import VidscanError
from server.records.model import AnalysisRecord

log = logging.getLogger(__name__)

# Unfinished analyses looked at per sweep, oldest first. Larger than any backlog we
# expect, so that held jobs at the head of the list do not hide lost ones behind them.
SWEEP_BATCH = 1000


class UnfinishedAnalyses(Protocol):
    """What the sweep reads from the database (``AnalysisRepository`` has it)."""

    async def unfinished(self, *, limit: int = ...) -> list[str]: ...

    async def get(self, analysis_id: str) -> AnalysisRecord | None: ...


class QueueRecovery:
    def __init__(
        self,
        *,
        analyses: UnfinishedAnalyses,
        queue: RecoverableQueue,
        clock: Clock,
        min_age: timedelta,
        batch: int = SWEEP_BATCH,
    ) -> None:
        """``min_age`` leaves alone analyses younger than that: their upload may not
        have enqueued them yet."""
        self._analyses = analyses
        self._queue = queue
        self._clock = clock
        self._min_age = min_age
        self._batch = batch

    async def sweep(self) -> int:
        """Enqueues every unfinished analysis older than ``min_age`` that the queue
        holds no job for; returns how many it enqueued."""
        candidates = await self._analyses.unfinished(limit=self._batch)
        if not candidates:
            return 0
        held = await self._queue.held(candidates)
        missing = [aid for aid in candidates if aid not in held]
        requeued = 0
        for analysis_id in await self._old_enough(missing):
            await self._queue.enqueue(analysis_id)
            requeued += 1
        if requeued:
            log.warning("recovery: re-queued %d analyses whose jobs were missing", requeued)
        return requeued

    async def _old_enough(self, analysis_ids: Sequence[str]) -> list[str]:
        """Those still unfinished and created before ``now - min_age``. Read row by
        row: normally only a few analyses have no job."""
        cutoff = self._clock() - self._min_age
        old: list[str] = []
        for analysis_id in analysis_ids:
            row = await self._analyses.get(analysis_id)
            if row is not None and not row.status.terminal and row.created_at < cutoff:
                old.append(analysis_id)
        return old

    async def run_forever(self, *, stop: asyncio.Event, interval_seconds: float) -> None:
        """Sweeps every ``interval_seconds`` until ``stop`` is set; a sweep that fails
        (database or Redis down) is logged and tried again on the next round."""
        while not stop.is_set():
            try:
                await self.sweep()
            except VidscanError:
                log.exception("recovery sweep failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_seconds)
