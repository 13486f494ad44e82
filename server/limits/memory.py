"""In-process limits for the embedded default and unit tests.

Single process only: a second replica would keep limits of its own. Memory stays
bounded without a background task: whenever the tables have doubled since the last
sweep, entries that hold nothing (full buckets, groups whose leases all ran out)
are dropped, which costs O(1) amortised per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from server.limits.port import TOKEN_EPSILON, Rate, check_lease

# Tables smaller than this are never swept: not worth the walk.
SWEEP_MIN_ENTRIES = 1024


class _Sweeper:
    """Says when a table has grown enough since the last sweep to sweep it again."""

    def __init__(self) -> None:
        self._threshold = SWEEP_MIN_ENTRIES

    def due(self, size: int) -> bool:
        return size > self._threshold

    def swept(self, size: int) -> None:
        self._threshold = max(SWEEP_MIN_ENTRIES, 2 * size)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float  # clock reading when ``tokens`` was right
    full_at: float  # when the bucket is full again, if nobody takes


class MemoryTokenBuckets:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._sweeper = _Sweeper()

    async def take(self, key: str, rate: Rate) -> float:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            tokens = float(rate.burst)
        else:
            elapsed = max(0.0, now - bucket.updated)  # a clock that steps back adds nothing
            tokens = min(float(rate.burst), bucket.tokens + elapsed * rate.per_second)
        if tokens >= 1 - TOKEN_EPSILON:
            tokens, wait = max(0.0, tokens - 1), 0.0
        else:
            wait = (1 - tokens) / rate.per_second
        full_at = now + (rate.burst - tokens) / rate.per_second
        self._buckets[key] = _Bucket(tokens=tokens, updated=now, full_at=full_at)
        if self._sweeper.due(len(self._buckets)):
            # A full bucket is the same as none at all, so forgetting it changes nothing.
            self._buckets = {k: b for k, b in self._buckets.items() if b.full_at > now}
            self._sweeper.swept(len(self._buckets))
        return wait

    async def close(self) -> None:
        return None


class MemoryLeaseSets:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._groups: dict[str, dict[str, float]] = {}  # group -> member -> expiry
        self._sweeper = _Sweeper()

    def _live(self, group: str, now: float) -> dict[str, float]:
        """The group's unexpired members; an emptied group is deleted."""
        members = self._groups.get(group)
        if members is None:
            return {}
        live = {m: expiry for m, expiry in members.items() if expiry > now}
        if live:
            self._groups[group] = live
        else:
            del self._groups[group]
        return live

    async def acquire(self, group: str, member: str, *, ttl_seconds: float, limit: int) -> bool:
        check_lease(ttl_seconds=ttl_seconds, limit=limit)
        now = self._clock()
        live = self._live(group, now)
        if len(live) - (member in live) >= limit:
            return False
        live[member] = now + ttl_seconds
        self._groups[group] = live
        if self._sweeper.due(len(self._groups)):
            # Groups nobody asks about again would otherwise keep their dead leases.
            for name in list(self._groups):
                self._live(name, now)
            self._sweeper.swept(len(self._groups))
        return True

    async def release(self, group: str, member: str) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._groups[group]

    async def count(self, group: str) -> int:
        return len(self._live(group, self._clock()))

    async def close(self) -> None:
        return None
