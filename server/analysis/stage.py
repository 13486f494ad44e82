"""The step after a video is stored: queue its analysis, then run it inline for up
to the wait budget so that a quick verdict comes back in the UploadResult.

The job is enqueued *before* the inline attempt, so if this process dies mid-way a
queue worker finishes it. Without a detector (no Triton reachable), the analysis
stays PENDING, the upload answers PROCESSING, and workers pick it up when Triton is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from server.analysis.analyzer import Analyzer
from server.analysis.queue import JobQueue
from server.errors import InvalidUpload, Reason, Unavailable, VidscanError
from server.records.model import AnalysisRecord, AnalysisStatus
from server.records.port import AnalysisRepository
from server.stopping import cancel_and_wait
from server.upload.pipeline import StoredUpload

log = logging.getLogger(__name__)

DEFAULT_ESTIMATE_SECONDS = 15
# The estimate in a PROCESSING answer comes from the last analyses' durations, read
# from the database at most this often per process (one query per upload otherwise).
ESTIMATE_REFRESH_SECONDS = 5.0
POLL_SECONDS = 0.1
# What the answer itself needs after the inline wait: the verdict is useless to a
# client whose deadline passed while the server was still waiting for it.
ANSWER_MARGIN_SECONDS = 0.5
# close() waits this long for inline analyses it cancelled.
STOP_SECONDS = 5.0


class AnalysisStage:
    def __init__(
        self,
        *,
        allowed_models: Sequence[str],
        default_model: str,
        queue: JobQueue,
        analyses: AnalysisRepository,
        analyzer: Analyzer | None,
        wait_budget_seconds: float,
    ) -> None:
        """``wait_budget_seconds`` <= 0 leaves every analysis to the queue workers."""
        self._allowed = tuple(allowed_models)
        self._default = default_model
        self._queue = queue
        self._analyses = analyses
        self._analyzer = analyzer
        self._budget = wait_budget_seconds
        self._inline: set[asyncio.Task[AnalysisRecord | None]] = set()
        self._closed = False
        self._estimate: tuple[float, int] | None = None  # (loop time read, seconds)

    def check_model(self, requested: str) -> str:
        """The model to use for a request, refusing names outside the allow-list."""
        if not requested:
            return self._default
        if requested not in self._allowed:
            raise InvalidUpload(
                Reason.MODEL_NOT_ALLOWED,
                f"model {requested!r} is not offered; choose one of {', '.join(self._allowed)}",
                metadata={"allowed_models": ",".join(self._allowed)},
            )
        return requested

    async def after_upload(
        self, stored: StoredUpload, *, time_left: float | None = None
    ) -> AnalysisRecord:
        """The upload's analysis: its verdict when it comes within the wait budget
        (and within ``time_left``, the call's remaining deadline, less the time to
        answer), else the record as it stands, PROCESSING with an estimate."""
        if stored.deduplicated:
            return stored.analysis  # the existing video's analysis, run or running
        if stored.analysis.status.terminal:
            return stored.analysis  # a finish that was resumed after its analysis ran
        analysis_id = stored.analysis.id
        try:
            await self._queue.enqueue(analysis_id)
        except VidscanError:
            # The row is PENDING in the database; the recovery sweep will queue it.
            log.exception("could not enqueue analysis %s", analysis_id)
        budget = self._budget
        if time_left is not None:
            budget = min(budget, time_left - ANSWER_MARGIN_SECONDS)
        if self._analyzer is None or budget <= 0 or self._closed:
            if stored.spool_path is not None:
                await asyncio.to_thread(stored.spool_path.unlink, True)
            return await self._estimated(stored.analysis)
        deadline = asyncio.get_running_loop().time() + budget
        task = asyncio.create_task(self._run_inline(analysis_id, stored.spool_path))
        self._inline.add(task)
        task.add_done_callback(self._inline.discard)
        done, _ = await asyncio.wait({task}, timeout=budget)
        if task in done and not task.cancelled() and task.exception() is None:
            row = task.result()
            if row is not None and row.status.terminal:
                return row
        # A queue worker may have taken the job first: wait for it within the budget.
        row = await self._analyses.get(analysis_id)
        while row is not None and row.status is AnalysisStatus.RUNNING:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(POLL_SECONDS, remaining))
            row = await self._analyses.get(analysis_id)
        if row is not None and row.status.terminal:
            return row
        return await self._estimated(row or stored.analysis)

    async def _run_inline(self, analysis_id: str, spool: Path | None) -> AnalysisRecord | None:
        """Runs the analysis here; without a local copy the analyzer fetches the
        object (a sealed upload finished on another replica than received it)."""
        assert self._analyzer is not None
        try:
            return await self._analyzer.run(analysis_id, local_path=spool)
        except Unavailable as exc:
            log.warning("analysis %s left to the workers: %s", analysis_id, exc.message)
            return None
        finally:
            if spool is not None:
                await asyncio.to_thread(spool.unlink, True)

    async def _estimated(self, row: AnalysisRecord) -> AnalysisRecord:
        """The record with how long its analysis is expected to take, from the last
        analyses' durations (a value for the answer; nothing is stored), read again
        once the one in hand is ESTIMATE_REFRESH_SECONDS old."""
        now = asyncio.get_running_loop().time()
        if self._estimate is not None and now - self._estimate[0] < ESTIMATE_REFRESH_SECONDS:
            return replace(row, estimated_seconds=self._estimate[1])
        seconds = DEFAULT_ESTIMATE_SECONDS
        try:
            recent = await self._analyses.recent_duration_ms()
        except VidscanError:
            return replace(row, estimated_seconds=seconds)  # asked again next time
        if recent:
            seconds = max(1, round(recent / 1000))
        self._estimate = (now, seconds)
        return replace(row, estimated_seconds=seconds)

    async def close(self) -> None:
        """Lets inline analyses finish (they are short) before the process exits; one
        still running after the wait budget is cancelled (its lease lets a worker take
        it over) and waited for STOP_SECONDS more at most, so that the adapters close
        after it."""
        self._closed = True
        if self._inline:
            await asyncio.wait(self._inline, timeout=self._budget)
            # Bounded too: a cancellation lost inside a Redis call (server/stopping.py)
            # must not hold the shutdown.
            stuck = await cancel_and_wait(set(self._inline), within=STOP_SECONDS)
            if stuck:
                log.warning("%d inline analysis task(s) did not stop when cancelled", len(stuck))
