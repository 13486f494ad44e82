"""Following one analysis until it is final: what WatchAnalysis streams.

A watcher subscribes to the analysis' change notifications *before* its first read,
so no change can fall between the read and the subscription. Then it re-reads the
row from the database each time it is notified, and every ``poll_seconds`` anyway:
the row is the truth, a notification only says when to look, and a lost one only
delays. It yields a record each time the row differs from the one it yielded last,
and stops after a final one (ANALYZED or FAILED).

A process holds at most ``max_watchers`` open watches (each is a stream, a
subscription entry and a periodic read); the next is refused with SERVER_BUSY. A
watch ends when its caller stops iterating or is cancelled (the client's deadline,
a dropped connection): the slot and the subscription are released on the way out.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Final

from server.analysis.changes import ChangeFeed
from server.errors import LimitExceeded, NotFound, Reason
from server.records.model import AnalysisRecord

DEFAULT_POLL_SECONDS: Final = 5.0
DEFAULT_MAX_WATCHERS: Final = 1000
# The RetryInfo of SERVER_BUSY: watches are long, a slot frees up only slowly.
BUSY_RETRY_SECONDS: Final = 5.0

ReadAnalysis = Callable[[], Awaitable[AnalysisRecord | None]]


class AnalysisWatch:
    def __init__(
        self,
        *,
        feed: ChangeFeed,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        max_watchers: int = DEFAULT_MAX_WATCHERS,
    ) -> None:
        """``max_watchers`` 0 means no limit."""
        self._feed = feed
        self._poll = poll_seconds
        self._max = max_watchers
        self._open = 0

    @property
    def watchers(self) -> int:
        """Watches open in this process now."""
        return self._open

    async def follow(
        self, analysis_id: str, read: ReadAnalysis
    ) -> AsyncGenerator[AnalysisRecord, None]:
        """The analysis now, then each change, until it is final. ``read`` returns the
        row as the caller may see it (None: not there, or not theirs: NOT_FOUND)."""
        with self._slot():
            async with self._feed.subscribe(analysis_id) as signal:
                last: AnalysisRecord | None = None
                while True:
                    row = await read()
                    if row is None:
                        raise NotFound(
                            Reason.ANALYSIS_NOT_FOUND,
                            "analysis not found",
                            metadata={"analysis_id": analysis_id},
                        )
                    if row != last:
                        yield row
                        last = row
                    if row.status.terminal:
                        return
                    await signal.wait(self._poll)

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        if self._max and self._open >= self._max:
            raise LimitExceeded(
                Reason.SERVER_BUSY,
                f"this server follows {self._open} analyses already; retry later",
                retry_after_seconds=BUSY_RETRY_SECONDS,
            )
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1
