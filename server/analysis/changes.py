"""Change notification for analyses: "analysis X changed, read it again".

A notification carries only the analysis id, never its state: the database stays
the one source of truth and a watcher re-reads the row when woken. Notifications are
best effort (a lost one only delays a watcher until its next periodic re-read), so
publishing never fails the analysis that changed.

``ChangeHub`` is the in-memory fan-out every process has: one entry per open
watcher, woken by id. ``MemoryChanges`` feeds it directly (the embedded default, one
process); ``server/analysis/redis_changes.py`` feeds it from one Redis subscription
per process, so a change made by another replica's worker reaches this one's
watchers. ``NotifyingAnalyses`` is the decorator that publishes after each state
change of the analysis lifecycle, so the analyzer needs no knowledge of watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any, Protocol

from server.records.model import AnalysisRecord, VideoRecord
from server.records.port import AnalysisRepository


class Signal:
    """One watcher's doorbell: set by a notification, consumed by ``wait``."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """True when rung (since the last wait), False after ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class ChangePublisher(Protocol):
    async def publish(self, analysis_id: str) -> None:
        """Tells every process that ``analysis_id`` changed. Never raises: a failure
        is logged, and watchers find the change on their next re-read."""
        ...


class ChangeFeed(Protocol):
    def subscribe(self, analysis_id: str) -> AbstractAsyncContextManager[Signal]:
        """A signal rung on each change of ``analysis_id`` while the context is open."""
        ...


class AnalysisChanges(ChangePublisher, ChangeFeed, Protocol):
    async def close(self) -> None: ...


class ChangeHub:
    """The in-process fan-out: notifications by id to the signals of open watchers."""

    def __init__(self) -> None:
        self._signals: dict[str, set[Signal]] = {}

    @property
    def watched(self) -> int:
        """Analyses with at least one open subscription."""
        return len(self._signals)

    @contextlib.asynccontextmanager
    async def subscribe(self, analysis_id: str) -> AsyncIterator[Signal]:
        signal = Signal()
        self._signals.setdefault(analysis_id, set()).add(signal)
        try:
            yield signal
        finally:
            signals = self._signals.get(analysis_id)
            if signals is not None:
                signals.discard(signal)
                if not signals:
                    del self._signals[analysis_id]

    def notify(self, analysis_id: str) -> None:
        for signal in self._signals.get(analysis_id, ()):
            signal.ring()

    def notify_all(self) -> None:
        """Wakes every watcher: after notifications may have been lost (a reconnect)."""
        for signals in self._signals.values():
            for signal in signals:
                signal.ring()


class MemoryChanges:
    """The embedded default: publisher and watchers share one process."""

    def __init__(self) -> None:
        self.hub = ChangeHub()

    async def publish(self, analysis_id: str) -> None:
        self.hub.notify(analysis_id)

    def subscribe(self, analysis_id: str) -> AbstractAsyncContextManager[Signal]:
        return self.hub.subscribe(analysis_id)

    async def close(self) -> None:
        return None


class NotifyingAnalyses:
    """An ``AnalysisRepository`` that publishes after each lifecycle write (claim ->
    RUNNING, complete -> ANALYZED, fail -> FAILED, release -> PENDING)."""

    def __init__(self, *, inner: AnalysisRepository, changes: ChangePublisher) -> None:
        self._inner = inner
        self._changes = changes

    async def get(self, analysis_id: str) -> AnalysisRecord | None:
        return await self._inner.get(analysis_id)

    async def video(self, video_id: str) -> VideoRecord | None:
        return await self._inner.video(video_id)

    async def claim(self, analysis_id: str, *, lease: timedelta) -> AnalysisRecord | None:
        row = await self._inner.claim(analysis_id, lease=lease)
        if row is not None:
            await self._changes.publish(analysis_id)
        return row

    async def complete(
        self, analysis_id: str, *, result: Mapping[str, Any], duration_ms: float
    ) -> None:
        await self._inner.complete(analysis_id, result=result, duration_ms=duration_ms)
        await self._changes.publish(analysis_id)

    async def fail(self, analysis_id: str, *, reason: str, message: str) -> None:
        await self._inner.fail(analysis_id, reason=reason, message=message)
        await self._changes.publish(analysis_id)

    async def release(self, analysis_id: str, *, reason: str, message: str) -> None:
        await self._inner.release(analysis_id, reason=reason, message=message)
        await self._changes.publish(analysis_id)

    async def unfinished(self, *, limit: int = 100) -> list[str]:
        return await self._inner.unfinished(limit=limit)

    async def recent_duration_ms(self) -> float | None:
        return await self._inner.recent_duration_ms()
