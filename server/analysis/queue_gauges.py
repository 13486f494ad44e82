"""Samples the analysis queue into the metrics: depth and the oldest job's age."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from server import metrics
from server.analysis.queue import QueueStatistics
from server.errors import VidscanError

log = logging.getLogger(__name__)


async def sample_queue(
    queue: QueueStatistics, *, stop: asyncio.Event, interval_seconds: float
) -> None:
    """Every ``interval_seconds`` until ``stop``; a queue that cannot answer keeps the
    last values (its outage shows in health and in the error counters)."""
    while not stop.is_set():
        try:
            stats = await queue.stats()
        except VidscanError as exc:
            log.debug("queue statistics unavailable: %s", exc)
        else:
            metrics.QUEUE_DEPTH.set(stats.depth)
            metrics.QUEUE_OLDEST_SECONDS.set(stats.oldest_age_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_seconds)
