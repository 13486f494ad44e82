"""Per-user abuse limits, on top of the two ports (``port.py``).

- **Request rates**: one token bucket per user for CreateUploadSession, one for the
  other unary RPCs together (UploadVideo streams are capped by count instead).
- **Active sessions**: a user holds at most ``max_sessions`` sessions that are
  neither completed, cancelled nor expired. A session's slot is a lease that expires
  with the session, so a session forgotten by its client frees its slot by itself.
- **Open streams**: at most ``max_streams`` UploadVideo streams per user, over every
  replica; each stream's lease is renewed while it runs, so a replica that dies
  frees its streams' slots within ``STREAM_LEASE_SECONDS``.

Every refusal is RESOURCE_EXHAUSTED with a stable reason, the limit's name in
ErrorInfo.metadata, and RetryInfo. The stores are shared by all replicas (Redis) or
in this process's memory (the embedded default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from server.errors import LimitExceeded, Reason
from server.limits.port import LeaseSets, Rate, TokenBuckets
from server.stopping import cancel_and_wait

log = logging.getLogger(__name__)

STREAM_LEASE_SECONDS = 60.0
# How long a stream's end waits for its lease renewal to stop once told to.
RENEWAL_STOP_SECONDS = 1.0
MAX_REMEMBERED_REFUSALS = 10_000
# How soon a client refused for too many sessions or streams should look again.
SLOT_RETRY_SECONDS = 5.0

RateKind = Literal["create", "unary"]


@dataclass(frozen=True)
class LimitRules:
    create_rate: Rate | None  # None: no limit
    unary_rate: Rate | None
    max_sessions: int  # 0: no limit
    session_ttl_seconds: float
    max_streams: int  # 0: no limit


class UserLimits:
    def __init__(
        self,
        *,
        buckets: TokenBuckets,
        leases: LeaseSets,
        rules: LimitRules,
        clock: Callable[[], float] = time.monotonic,
        renew_seconds: float = STREAM_LEASE_SECONDS / 3,
    ) -> None:
        self._buckets = buckets
        self._leases = leases
        self._rules = rules
        self._clock = clock
        self._renew_seconds = renew_seconds
        # Buckets known to be empty until then: no token can appear before the time
        # the store itself gave, so asking it again before that is wasted.
        self._refused_until: dict[str, float] = {}

    def _remember_refusal(self, key: str, until: float, now: float) -> None:
        if len(self._refused_until) >= MAX_REMEMBERED_REFUSALS:
            self._refused_until = {k: t for k, t in self._refused_until.items() if t > now}
            if len(self._refused_until) >= MAX_REMEMBERED_REFUSALS:
                return
        self._refused_until[key] = until

    async def check_rate(self, user_id: str, kind: RateKind) -> None:
        """Takes one request from the user's bucket, or refuses with RATE_LIMITED."""
        rate = self._rules.create_rate if kind == "create" else self._rules.unary_rate
        if rate is None:
            return
        key = f"{kind}:{user_id}"
        now = self._clock()
        wait = self._refused_until.get(key, 0.0) - now
        if wait <= 0:  # else: refused again without asking the store (a flood is cheap)
            wait = await self._buckets.take(key, rate)
            if wait > 0:
                self._remember_refusal(key, now + wait, now)
        if wait > 0:
            raise LimitExceeded(
                Reason.RATE_LIMITED,
                f"too many requests: at most {rate.per_second:g}/s "
                f"(bursts of {rate.burst}) per user",
                metadata={
                    "limit": f"{kind}_rate",
                    "per_second": f"{rate.per_second:g}",
                    "burst": str(rate.burst),
                },
                retry_after_seconds=_retry_after(wait),
            )

    async def hold_session(self, user_id: str, session_id: str) -> None:
        """Takes a slot for a new session, or refuses with TOO_MANY_SESSIONS."""
        cap = self._rules.max_sessions
        if not cap:
            return
        held = await self._leases.acquire(
            f"sessions:{user_id}",
            session_id,
            ttl_seconds=self._rules.session_ttl_seconds,
            limit=cap,
        )
        if not held:
            raise LimitExceeded(
                Reason.TOO_MANY_SESSIONS,
                f"this user holds {cap} active upload sessions, the most allowed: "
                "finish or cancel one first",
                metadata={"limit": "max_sessions_per_user", "max": str(cap)},
                retry_after_seconds=SLOT_RETRY_SECONDS,
            )

    async def release_session(self, user_id: str, session_id: str) -> None:
        """The session ended (completed, cancelled): its slot is free."""
        if self._rules.max_sessions:
            await self._leases.release(f"sessions:{user_id}", session_id)

    @contextlib.asynccontextmanager
    async def stream(self, user_id: str) -> AsyncIterator[None]:
        """One of the user's open UploadVideo streams, or TOO_MANY_STREAMS."""
        cap = self._rules.max_streams
        if not cap:
            yield
            return
        group, member = f"streams:{user_id}", uuid.uuid4().hex
        held = await self._leases.acquire(
            group, member, ttl_seconds=STREAM_LEASE_SECONDS, limit=cap
        )
        if not held:
            raise LimitExceeded(
                Reason.TOO_MANY_STREAMS,
                f"this user has {cap} uploads streaming at once, the most allowed",
                metadata={"limit": "max_streams_per_user", "max": str(cap)},
                retry_after_seconds=SLOT_RETRY_SECONDS,
            )
        stop = asyncio.Event()
        renewal = asyncio.create_task(self._renew(group, member, cap, stop))
        try:
            yield
        finally:
            # Stopped by a flag as well as cancelled, within a bound (server/stopping.py):
            # unbounded, a renewal that lost its cancellation in a Redis call kept a
            # finished upload waiting until its client's deadline (~1 in 150 uploads at
            # 50 concurrent).
            stop.set()
            try:
                await cancel_and_wait([renewal], within=RENEWAL_STOP_SECONDS)
            finally:
                try:
                    await asyncio.shield(self._leases.release(group, member))
                except Exception:  # the lease expires by itself
                    log.warning("could not release a stream slot of %s", user_id, exc_info=True)

    async def _renew(self, group: str, member: str, cap: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self._renew_seconds)
            if stop.is_set():
                return
            try:
                # Renewing a member it holds never fails on the cap.
                await self._leases.acquire(
                    group, member, ttl_seconds=STREAM_LEASE_SECONDS, limit=cap
                )
            except Exception:
                log.warning("could not renew a stream slot in %s", group, exc_info=True)


def _retry_after(wait_seconds: float) -> float:
    """Whole milliseconds, at least one: a client told 0 would retry at once."""
    return max(0.001, math.ceil(wait_seconds * 1000) / 1000)
