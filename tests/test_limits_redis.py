"""The limits on real Redis: the same behaviour as in memory, on Redis server time,
plus what only a shared store gives -- two replicas (two clients) enforce one limit
together, under concurrency too -- and the failures a caller sees: a Redis that is
down is UNAVAILABLE with a retry hint, a key of the wrong type is INTERNAL.

Times are short and real; every assertion on a time leaves a margin of tens of ms."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from support.services import RedisServer, start_redis

from server.errors import Internal, Reason, Unavailable
from server.limits.port import Rate
from server.limits.redis import (
    LEASES_PREFIX,
    RATE_PREFIX,
    RETRY_AFTER_SECONDS,
    RedisLeaseSets,
    RedisTokenBuckets,
)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client, to look at the keys the adapters leave."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def buckets(redis_server: RedisServer) -> AsyncIterator[RedisTokenBuckets]:
    adapter = RedisTokenBuckets.from_url(redis_server.url)
    yield adapter
    await adapter.close()


@pytest.fixture
async def other_buckets(redis_server: RedisServer) -> AsyncIterator[RedisTokenBuckets]:
    """A second replica: its own client and connection pool on the same Redis."""
    adapter = RedisTokenBuckets.from_url(redis_server.url)
    yield adapter
    await adapter.close()


@pytest.fixture
async def leases(redis_server: RedisServer) -> AsyncIterator[RedisLeaseSets]:
    adapter = RedisLeaseSets.from_url(redis_server.url)
    yield adapter
    await adapter.close()


@pytest.fixture
async def other_leases(redis_server: RedisServer) -> AsyncIterator[RedisLeaseSets]:
    adapter = RedisLeaseSets.from_url(redis_server.url)
    yield adapter
    await adapter.close()


# --- token buckets -----------------------------------------------------------------


async def test_burst_then_refusal_with_the_wait_for_one_token(
    buckets: RedisTokenBuckets,
) -> None:
    key, rate = unique("burst"), Rate(per_second=2.0, burst=5)
    assert [await buckets.take(key, rate) for _ in range(5)] == [0.0] * 5
    assert 0.0 < await buckets.take(key, rate) <= 0.5  # a token per 0.5 s


async def test_refill_over_time(buckets: RedisTokenBuckets) -> None:
    key, rate = unique("refill"), Rate(per_second=10.0, burst=2)
    assert [await buckets.take(key, rate) for _ in range(2)] == [0.0, 0.0]
    wait = await buckets.take(key, rate)
    assert 0 < wait <= 0.1
    await asyncio.sleep(wait + 0.02)
    assert await buckets.take(key, rate) == 0.0


async def test_fractional_rate(buckets: RedisTokenBuckets) -> None:
    key, rate = unique("slow"), Rate(per_second=0.5, burst=1)
    assert await buckets.take(key, rate) == 0.0
    assert 1.8 < await buckets.take(key, rate) <= 2.0


async def test_idle_buckets_vanish_once_full(
    buckets: RedisTokenBuckets, admin: aioredis.Redis
) -> None:
    # A slow rate, so that a loaded machine's delay between the calls (tens of ms)
    # stays far inside each margin: the key lives as long as the bucket needs to refill.
    key, rate = unique("idle"), Rate(per_second=1.0, burst=2)
    await buckets.take(key, rate)
    assert 0 < await admin.pttl(RATE_PREFIX + key) <= 1001  # one token short: 1 s
    await buckets.take(key, rate)
    assert 1000 < await admin.pttl(RATE_PREFIX + key) <= 2001  # two short: 2 s
    await asyncio.sleep(2.2)
    assert await admin.exists(RATE_PREFIX + key) == 0
    assert [await buckets.take(key, rate) for _ in range(2)] == [0.0, 0.0]  # as good as new


async def test_two_replicas_share_one_bucket(
    buckets: RedisTokenBuckets, other_buckets: RedisTokenBuckets
) -> None:
    key, rate = unique("shared"), Rate(per_second=0.01, burst=4)  # no refill in the test
    replicas = [buckets, other_buckets] * 3
    waits = [await replica.take(key, rate) for replica in replicas]
    assert waits[:4] == [0.0] * 4
    assert all(wait > 0 for wait in waits[4:])


async def test_concurrent_takes_over_two_replicas_take_exactly_the_burst(
    buckets: RedisTokenBuckets, other_buckets: RedisTokenBuckets
) -> None:
    key, rate = unique("race"), Rate(per_second=0.01, burst=10)
    waits = await asyncio.gather(
        *((buckets if i % 2 else other_buckets).take(key, rate) for i in range(50))
    )
    assert sum(wait == 0.0 for wait in waits) == rate.burst


# --- lease sets --------------------------------------------------------------------


async def test_leases_are_capped_and_refresh_counts_once(leases: RedisLeaseSets) -> None:
    group = unique("cap")
    assert await leases.acquire(group, "a", ttl_seconds=10, limit=2)
    assert await leases.acquire(group, "b", ttl_seconds=10, limit=2)
    assert not await leases.acquire(group, "c", ttl_seconds=10, limit=2)
    assert await leases.acquire(group, "a", ttl_seconds=10, limit=2)  # full, yet a is held
    assert await leases.count(group) == 2


async def test_release_frees_a_slot(leases: RedisLeaseSets) -> None:
    group = unique("release")
    await leases.acquire(group, "a", ttl_seconds=10, limit=1)
    await leases.release(group, "a")
    await leases.release(group, "a")  # again, and an unknown group: no error
    await leases.release(unique("nobody"), "a")
    assert await leases.count(group) == 0
    assert await leases.acquire(group, "b", ttl_seconds=10, limit=1)


async def test_expiry_frees_a_slot_and_the_key(
    leases: RedisLeaseSets, admin: aioredis.Redis
) -> None:
    group = unique("expiry")
    assert await leases.acquire(group, "a", ttl_seconds=0.5, limit=1)
    assert not await leases.acquire(group, "b", ttl_seconds=0.5, limit=1)
    await asyncio.sleep(0.7)
    assert await leases.count(group) == 0
    assert await admin.exists(LEASES_PREFIX + group) == 0
    assert await leases.acquire(group, "b", ttl_seconds=0.3, limit=1)


async def test_refresh_extends_the_expiry(leases: RedisLeaseSets) -> None:
    group = unique("refresh")
    # Margins of 0.5 s either way, for a loaded machine.
    await leases.acquire(group, "a", ttl_seconds=1.5, limit=1)
    await asyncio.sleep(1.0)
    await leases.acquire(group, "a", ttl_seconds=1.5, limit=1)
    await asyncio.sleep(1.0)  # 2 s after the first acquire, 1 s after the refresh
    assert await leases.count(group) == 1


async def test_the_key_expires_with_its_last_lease(
    leases: RedisLeaseSets, admin: aioredis.Redis
) -> None:
    group = unique("pexpire")
    await leases.acquire(group, "long", ttl_seconds=10, limit=2)
    await leases.acquire(group, "short", ttl_seconds=2.0, limit=2)
    assert 9000 < await admin.pttl(LEASES_PREFIX + group) <= 10_000
    await leases.release(group, "long")
    assert 0 < await admin.pttl(LEASES_PREFIX + group) <= 2000


async def test_two_replicas_share_one_cap(
    leases: RedisLeaseSets, other_leases: RedisLeaseSets
) -> None:
    group = unique("shared")
    held = await asyncio.gather(
        *(
            (leases if i % 2 else other_leases).acquire(group, f"m{i}", ttl_seconds=10, limit=3)
            for i in range(20)
        )
    )
    assert sum(held) == 3
    assert await leases.count(group) == await other_leases.count(group) == 3
    winner = next(f"m{i}" for i, ok in enumerate(held) if ok)
    await other_leases.release(group, winner)  # released by the other replica
    assert await leases.acquire(group, "late", ttl_seconds=10, limit=3)


# --- failures ----------------------------------------------------------------------


async def test_a_redis_that_is_down_is_unavailable(tmp_path: Path) -> None:
    with start_redis(workdir=tmp_path) as server:
        buckets = RedisTokenBuckets.from_url(server.url)
        leases = RedisLeaseSets.from_url(server.url)
        try:
            assert await buckets.take("k", Rate(per_second=1, burst=1)) == 0.0
            server.halt()
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: buckets.take("k", Rate(per_second=1, burst=1)),
                lambda: leases.acquire("g", "a", ttl_seconds=1, limit=1),
                lambda: leases.release("g", "a"),
                lambda: leases.count("g"),
            ]
            for call in calls:
                with pytest.raises(Unavailable) as caught:
                    await call()
                assert caught.value.reason == Reason.SESSION_STORE_UNAVAILABLE
                assert caught.value.retry_after_seconds == RETRY_AFTER_SECONDS
        finally:
            await buckets.close()
            await leases.close()


async def test_a_key_of_the_wrong_type_is_internal(
    buckets: RedisTokenBuckets, leases: RedisLeaseSets, admin: aioredis.Redis
) -> None:
    name = unique("wrongtype")
    await admin.set(RATE_PREFIX + name, "not a hash", px=10_000)
    await admin.set(LEASES_PREFIX + name, "not a sorted set", px=10_000)
    try:
        with pytest.raises(Internal) as caught:
            await buckets.take(name, Rate(per_second=1, burst=1))
        assert caught.value.reason == Reason.SESSION_STORE_ERROR
        with pytest.raises(Internal) as caught:
            await leases.acquire(name, "a", ttl_seconds=1, limit=1)
        assert caught.value.reason == Reason.SESSION_STORE_ERROR
    finally:
        await admin.delete(RATE_PREFIX + name, LEASES_PREFIX + name)
