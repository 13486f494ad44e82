"""UserLimits over in-memory stores (pure logic): refusals carry the limit and a retry
delay, and a flood of refused calls does not reach the shared store."""

from __future__ import annotations

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
