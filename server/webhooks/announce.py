"""The analyzer's final-state hook: enqueue a delivery, nothing more.

Called just before the analysis' final state is written, so that a crash between the
two cannot lose the event: the job is in the durable queue first, and the delivery
worker waits (without using an attempt) until the row says final. The HTTP call is
the worker's, never the caller's: an inline analysis on the upload's path only adds
one enqueue.
"""

from __future__ import annotations

from server.analysis.queue import JobQueue
from server.records.model import AnalysisRecord


class WebhookAnnouncer:
    def __init__(self, *, queue: JobQueue) -> None:
        self._queue = queue

    async def before_final(self, analysis: AnalysisRecord) -> None:
        if analysis.callback_url:
            await self._queue.enqueue(analysis.id)
