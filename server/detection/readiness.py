"""Keeps the detector's model contracts loaded and reports Triton's readiness.

A Triton started after the server, or restarted under it, is picked up without a
restart of ours: the contracts are (re)loaded and the change is reported (the
health service's ``vidscan.detector`` status, or a log line in a worker).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from server.detection.triton import TritonDetector
from server.errors import VidscanError

log = logging.getLogger(__name__)

DETECTOR_RETRY_SECONDS = 5.0


async def keep_detector_loaded(
    detector: TritonDetector,
    on_change: Callable[[bool], Awaitable[None]],
    *,
    interval_seconds: float = DETECTOR_RETRY_SECONDS,
) -> None:
    state: bool | None = None
    while True:
        try:
            if not detector.loaded:
                await detector.load()
            ready = await detector.ready()
        except VidscanError as exc:
            log.warning("detector not ready: %s", exc.message)
            ready = False
        if ready != state:
            state = ready
            await on_change(ready)
        await asyncio.sleep(interval_seconds)
