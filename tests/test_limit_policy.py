"""UserLimits over in-memory stores (pure logic): refusals carry the limit and a retry
delay, and a flood of refused calls does not reach the shared store."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from server.errors import LimitExceeded, Reason
from server.limits.memory import MemoryLeaseSets, MemoryTokenBuckets
from server.limits.policy import LimitRules, UserLimits
from server.limits.port import Rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingBuckets(MemoryTokenBuckets):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.calls = 0

    async def take(self, key: str, rate: Rate) -> float:
        self.calls += 1
        return await super().take(key, rate)


def limits(clock: Clock, buckets: CountingBuckets) -> UserLimits:
    rules = LimitRules(
        create_rate=Rate(per_second=1.0, burst=2),
        unary_rate=None,
        max_sessions=2,
        session_ttl_seconds=60,
        max_streams=0,
    )
    return UserLimits(
        buckets=buckets, leases=MemoryLeaseSets(clock=clock), rules=rules, clock=clock
    )


async def test_a_refused_bucket_is_not_asked_again_before_it_can_refill() -> None:
    clock = Clock()
    buckets = CountingBuckets(clock)
    policy = limits(clock, buckets)
    await policy.check_rate("u", "create")
    await policy.check_rate("u", "create")
    for _ in range(50):
        with pytest.raises(LimitExceeded) as caught:
            await policy.check_rate("u", "create")
        assert caught.value.reason == Reason.RATE_LIMITED
        assert caught.value.retry_after_seconds and caught.value.retry_after_seconds > 0
    assert buckets.calls == 3  # two taken, one refused; the other 49 answered locally
    clock.now += 1.0  # one token refilled
    await policy.check_rate("u", "create")
    await policy.check_rate("other", "create")  # another user has a bucket of their own
    await policy.check_rate("u", "unary")  # no unary limit configured


async def test_session_slots() -> None:
    clock = Clock()
    policy = limits(clock, CountingBuckets(clock))
    await policy.hold_session("u", "s1")
    await policy.hold_session("u", "s2")
    with pytest.raises(LimitExceeded) as caught:
        await policy.hold_session("u", "s3")
    assert caught.value.reason == Reason.TOO_MANY_SESSIONS
    assert caught.value.metadata["limit"] == "max_sessions_per_user"
    await policy.release_session("u", "s1")
    await policy.hold_session("u", "s3")
    clock.now += 61  # the slots expire with their sessions
    await policy.hold_session("u", "s4")
    await policy.hold_session("u", "s5")


class LosingLeases(MemoryLeaseSets):
    """Renewals (every acquire after the first) block until cancelled and then lose
    the cancellation, as a Redis call it lands in can (redis-py 8)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.calls = 0
        self.renewing = asyncio.Event()

    async def acquire(self, group: str, member: str, *, ttl_seconds: float, limit: int) -> bool:
        self.calls += 1
        if self.calls > 1:
            self.renewing.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()  # only a cancellation ends this
        return await super().acquire(group, member, ttl_seconds=ttl_seconds, limit=limit)


async def test_a_stream_ends_when_its_lease_renewal_loses_the_cancellation() -> None:
    clock = Clock()
    leases = LosingLeases(clock)
    rules = LimitRules(
        create_rate=None, unary_rate=None, max_sessions=0, session_ttl_seconds=60, max_streams=2
    )
    policy = UserLimits(
        buckets=MemoryTokenBuckets(clock=clock),
        leases=leases,
        rules=rules,
        clock=clock,
        renew_seconds=0.01,
    )

    async def upload() -> None:
        async with policy.stream("u"):
            await leases.renewing.wait()  # the upload ends while a renewal is mid-call

    task = asyncio.create_task(upload())
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:
        task.cancel()
    assert done, "the stream waited for a renewal that lost its cancellation"
    task.result()
    assert await leases.count("streams:u") == 0  # the slot is free
    calls = leases.calls
    await asyncio.sleep(0.1)
    assert leases.calls == calls  # and the renewal stopped
