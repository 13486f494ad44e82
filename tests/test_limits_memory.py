"""The in-process limits on a fake clock: a bucket spends its burst, then says how
long to wait and refills at its rate; a lease set caps its members, counts a
refreshed member once, and frees a slot on expiry or release. Idle entries are
forgotten, so that memory stays bounded."""

from __future__ import annotations

import pytest

from server.limits.memory import SWEEP_MIN_ENTRIES, MemoryLeaseSets, MemoryTokenBuckets
from server.limits.port import Rate


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- Rate --------------------------------------------------------------------------


@pytest.mark.parametrize("per_second", [0.0, -1.0, float("nan"), float("inf")])
def test_rate_needs_a_positive_finite_refill(per_second: float) -> None:
    with pytest.raises(ValueError, match="per_second"):
        Rate(per_second=per_second, burst=1)


def test_rate_needs_room_for_a_token() -> None:
    with pytest.raises(ValueError, match="burst"):
        Rate(per_second=1.0, burst=0)


# --- token buckets -----------------------------------------------------------------


async def test_burst_then_refusal_with_the_wait_for_one_token(clock: FakeClock) -> None:
    buckets = MemoryTokenBuckets(clock)
    rate = Rate(per_second=2.0, burst=3)
    assert [await buckets.take("k", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await buckets.take("k", rate) == pytest.approx(0.5)
    clock.advance(0.25)  # half a token back: the wait shrinks, nothing is taken
    assert await buckets.take("k", rate) == pytest.approx(0.25)


async def test_refill_over_time_up_to_the_burst(clock: FakeClock) -> None:
    buckets = MemoryTokenBuckets(clock)
    rate = Rate(per_second=4.0, burst=2)
    for _ in range(2):
        assert await buckets.take("k", rate) == 0.0
    clock.advance(0.25)  # one token
    assert await buckets.take("k", rate) == 0.0
    assert await buckets.take("k", rate) > 0
    clock.advance(60)  # a long idle refills to the burst, not beyond
    assert [await buckets.take("k", rate) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.25)]


async def test_fractional_rate(clock: FakeClock) -> None:
    buckets = MemoryTokenBuckets(clock)
    rate = Rate(per_second=0.5, burst=1)
    assert await buckets.take("k", rate) == 0.0
    assert await buckets.take("k", rate) == pytest.approx(2.0)
    clock.advance(1.5)
    assert await buckets.take("k", rate) == pytest.approx(0.5)
    clock.advance(0.5)
    assert await buckets.take("k", rate) == 0.0


async def test_waiting_the_returned_time_is_enough(clock: FakeClock) -> None:
    buckets = MemoryTokenBuckets(clock)
    rate = Rate(per_second=3.0, burst=1)  # 1/3 s is not exact in binary
    await buckets.take("k", rate)
    for _ in range(10):
        clock.advance(await buckets.take("k", rate))
        assert await buckets.take("k", rate) == 0.0


async def test_buckets_are_separate(clock: FakeClock) -> None:
    buckets = MemoryTokenBuckets(clock)
    rate = Rate(per_second=1.0, burst=1)
    assert await buckets.take("a", rate) == 0.0
    assert await buckets.take("b", rate) == 0.0
    assert await buckets.take("a", rate) > 0


async def test_a_clock_that_steps_back_refills_nothing(clock: FakeClock) -> None:
    buckets = MemoryTokenBuckets(clock)
    rate = Rate(per_second=1.0, burst=1)
    await buckets.take("k", rate)
    clock.advance(-10)
    assert await buckets.take("k", rate) == pytest.approx(1.0)


async def test_full_buckets_are_forgotten(clock: FakeClock) -> None:
    buckets = MemoryTokenBuckets(clock)
    rate = Rate(per_second=10.0, burst=1)
    for i in range(SWEEP_MIN_ENTRIES):  # up to the threshold, not over it
        await buckets.take(f"idle-{i}", rate)
    clock.advance(rate.refill_seconds)  # all of them full again
    await buckets.take("busy", rate)  # over: the sweep runs
    assert set(buckets._buckets) == {"busy"}
    assert await buckets.take("idle-0", rate) == 0.0  # forgotten = full


# --- lease sets --------------------------------------------------------------------


async def test_leases_are_capped(clock: FakeClock) -> None:
    leases = MemoryLeaseSets(clock)
    assert await leases.acquire("g", "a", ttl_seconds=10, limit=2)
    assert await leases.acquire("g", "b", ttl_seconds=10, limit=2)
    assert not await leases.acquire("g", "c", ttl_seconds=10, limit=2)
    assert await leases.count("g") == 2
    assert await leases.acquire("other", "c", ttl_seconds=10, limit=2)


async def test_refresh_counts_a_member_once(clock: FakeClock) -> None:
    leases = MemoryLeaseSets(clock)
    assert await leases.acquire("g", "a", ttl_seconds=10, limit=2)
    assert await leases.acquire("g", "a", ttl_seconds=10, limit=2)
    assert await leases.count("g") == 1
    assert await leases.acquire("g", "b", ttl_seconds=10, limit=2)
    assert await leases.acquire("g", "a", ttl_seconds=10, limit=2)  # full, yet a is held
    assert await leases.count("g") == 2


async def test_refresh_extends_the_expiry(clock: FakeClock) -> None:
    leases = MemoryLeaseSets(clock)
    await leases.acquire("g", "a", ttl_seconds=10, limit=1)
    clock.advance(8)
    await leases.acquire("g", "a", ttl_seconds=10, limit=1)
    clock.advance(8)  # 16 s after the first acquire, 8 s after the refresh
    assert await leases.count("g") == 1
    assert not await leases.acquire("g", "b", ttl_seconds=10, limit=1)


async def test_expiry_frees_a_slot(clock: FakeClock) -> None:
    leases = MemoryLeaseSets(clock)
    await leases.acquire("g", "a", ttl_seconds=10, limit=1)
    clock.advance(9.9)
    assert not await leases.acquire("g", "b", ttl_seconds=10, limit=1)
    clock.advance(0.1)  # a's expiry: a lease ends at now + ttl
    assert await leases.count("g") == 0
    assert await leases.acquire("g", "b", ttl_seconds=10, limit=1)


async def test_release_frees_a_slot(clock: FakeClock) -> None:
    leases = MemoryLeaseSets(clock)
    await leases.acquire("g", "a", ttl_seconds=10, limit=1)
    await leases.release("g", "a")
    await leases.release("g", "a")  # again, and an unknown group: no error
    await leases.release("nobody", "a")
    assert await leases.count("g") == 0
    assert await leases.acquire("g", "b", ttl_seconds=10, limit=1)


async def test_a_lowered_limit_refuses_even_a_refresh(clock: FakeClock) -> None:
    leases = MemoryLeaseSets(clock)
    for member in "abc":
        await leases.acquire("g", member, ttl_seconds=10, limit=3)
    assert not await leases.acquire("g", "a", ttl_seconds=10, limit=2)  # b and c are 2
    assert await leases.count("g") == 3  # a keeps its old lease until it runs out


async def test_bad_lease_arguments_are_refused(clock: FakeClock) -> None:
    leases = MemoryLeaseSets(clock)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await leases.acquire("g", "a", ttl_seconds=0, limit=1)
    with pytest.raises(ValueError, match="limit"):
        await leases.acquire("g", "a", ttl_seconds=1, limit=-1)


async def test_empty_groups_are_deleted(clock: FakeClock) -> None:
    leases = MemoryLeaseSets(clock)
    await leases.acquire("released", "a", ttl_seconds=10, limit=1)
    await leases.release("released", "a")
    await leases.acquire("counted", "a", ttl_seconds=1, limit=1)
    for i in range(SWEEP_MIN_ENTRIES - 1):  # up to the threshold, not over it
        await leases.acquire(f"abandoned-{i}", "a", ttl_seconds=1, limit=1)
    clock.advance(1)
    assert await leases.count("counted") == 0  # deleted by being looked at
    await leases.acquire("live", "a", ttl_seconds=10, limit=1)
    await leases.acquire("live-2", "a", ttl_seconds=10, limit=1)  # over: the sweep runs
    assert set(leases._groups) == {"live", "live-2"}
