"""The limit ports: token buckets (how often) and lease sets (how many at once).

Two small ports rather than one "limiter": a caller that caps concurrent streams
needs no bucket, and a fake of one need not implement the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

# A bucket this close to a whole token counts as holding it, so that a caller who
# waits exactly the seconds ``take`` returned is not refused by a rounding error.
TOKEN_EPSILON = 1e-9


@dataclass(frozen=True)
class Rate:
    """A token bucket's shape: ``burst`` tokens at most, refilled ``per_second``."""

    per_second: float  # refill rate (> 0)
    burst: int  # bucket capacity (>= 1)

    def __post_init__(self) -> None:
        # Checked here once, so that no adapter divides by zero or stores NaN.
        if not (math.isfinite(self.per_second) and self.per_second > 0):
            raise ValueError(f"Rate.per_second must be a finite number > 0, not {self.per_second}")
        if self.burst < 1:
            raise ValueError(f"Rate.burst must be >= 1, not {self.burst}")

    @property
    def refill_seconds(self) -> float:
        """From empty to full: after this long idle a bucket is as good as new."""
        return self.burst / self.per_second


def check_lease(*, ttl_seconds: float, limit: int) -> None:
    """The arguments of ``LeaseSets.acquire`` every adapter accepts, checked alike."""
    if not (math.isfinite(ttl_seconds) and ttl_seconds > 0):
        raise ValueError(f"ttl_seconds must be a finite number > 0, not {ttl_seconds}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")


class TokenBuckets(Protocol):
    async def take(self, key: str, rate: Rate) -> float:
        """Takes one token from bucket ``key``: 0.0 when taken; else the seconds until
        one is available (nothing taken)."""
        ...

    async def close(self) -> None: ...


class LeaseSets(Protocol):
    """Capped sets of expiring members, e.g. a user's active sessions or open streams.

    Members expire so that a replica that dies holding a lease does not hold the
    slot for ever; holders refresh (acquire again) well within the ttl."""

    async def acquire(self, group: str, member: str, *, ttl_seconds: float, limit: int) -> bool:
        """Adds (or refreshes, if present) ``member`` in ``group`` with an expiry ttl
        from now, unless the group already holds ``limit`` unexpired members other than
        ``member``; True when held. Expired members are dropped first. Atomic.

        A refused member that was present keeps its old expiry (only possible when
        ``limit`` was lowered below the members already held)."""
        ...

    async def release(self, group: str, member: str) -> None: ...

    async def count(self, group: str) -> int:
        """Unexpired members."""
        ...

    async def close(self) -> None: ...
