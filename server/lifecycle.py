"""Admission of UploadVideo streams into this process.

Graceful shutdown: once draining, new uploads are refused with UNAVAILABLE while
streams already running are allowed to finish within the grace period. A cap on the
streams one process runs at once: beyond it a new stream is refused at once
(RESOURCE_EXHAUSTED SERVER_BUSY, RetryInfo), never queued without bound."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from server.errors import LimitExceeded, Reason, Unavailable

BUSY_RETRY_SECONDS = 1.0


class Admission:
    def __init__(self, *, max_in_flight: int = 0) -> None:
        """``max_in_flight`` 0: no cap."""
        self._max = max_in_flight
        self._draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def drain(self) -> None:
        self._draining = True

    def check_open(self) -> None:
        if self._draining:
            raise Unavailable(
                Reason.SHUTTING_DOWN, "the server is shutting down; retry on another replica"
            )

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        self.check_open()
        if self._max and self._in_flight >= self._max:
            raise LimitExceeded(
                Reason.SERVER_BUSY,
                f"this server runs {self._max} uploads at once; retry shortly (another "
                "replica may have room)",
                metadata={"limit": "max_streams_per_process", "max": str(self._max)},
                retry_after_seconds=BUSY_RETRY_SECONDS,
            )
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def wait_idle(self, grace_seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), grace_seconds)
        except TimeoutError:
            return False
        return True
