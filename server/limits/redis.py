"""Limits on Redis, shared by every replica that uses the same Redis.

Each operation is one Lua script, so a check and its update are atomic across
replicas without WATCH/MULTI round trips. The scripts read the Redis server's
``TIME``, not the caller's clock: replicas whose clocks disagree still agree on
when a token refills or a lease runs out. Keys expire once they hold nothing
(a full bucket, a group whose leases all ran out), so idle limits cost no memory.

The limits live in the session store's Redis (the same ``redis_url``), so its
outage is reported with the session store's reasons. Redis errors are translated
in ``map_limit_errors`` only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.errors import Internal, Reason, Unavailable
from server.limits.port import TOKEN_EPSILON, Rate, check_lease
from server.redis_client import redis_client

RATE_PREFIX: Final = "vidscan:rate:"
LEASES_PREFIX: Final = "vidscan:leases:"
# What a client is told to wait when Redis is unreachable: a restart or failover
# takes about that long, and a shorter hint would only add load while it lasts.
RETRY_AFTER_SECONDS: Final = 1.0


@contextlib.asynccontextmanager
async def map_limit_errors(operation: str) -> AsyncIterator[None]:
    """The one place where redis-py's exceptions become vidscan errors for limits."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise Unavailable(
            Reason.SESSION_STORE_UNAVAILABLE,
            f"limit store (session Redis) unreachable during {operation}",
            retry_after_seconds=RETRY_AFTER_SECONDS,
        ) from exc
    except RedisError as exc:
        raise Internal(
            Reason.SESSION_STORE_ERROR, f"limit store (session Redis) failed {operation}"
        ) from exc


# Server time in whole ms, for leases. ``_TAKE`` reads it in µs instead: a 20/s
# bucket refills a token every 50 ms, which ms would round noticeably.
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: bucket. ARGV: per_second, burst, epsilon. Returns the µs to wait (0: taken).
# A missing bucket is a full one; the key expires when it would be full again.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000000)
end
local wait = 0
if tokens >= 1 - tonumber(ARGV[3]) then
  tokens = math.max(0, tokens - 1)
else
  wait = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'ts', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1)
return wait
"""

# KEYS: group. ARGV: member, ttl ms, limit. Returns 1 when held. Scores are expiry
# times (ms); the key expires with its last lease.
_ACQUIRE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local others = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then others = others - 1 end
if others >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
"""
)

# KEYS: group. ARGV: member. The key's expiry follows the last lease that is left.
_RELEASE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREM', KEYS[1], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return 1
"""
)

# KEYS: group. Read only: counts the leases that end after now.
_COUNT = (
    _NOW_MS
    + """
return redis.call('ZCOUNT', KEYS[1], string.format('(%.0f', now), '+inf')
"""
)


class RedisTokenBuckets:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._take = client.register_script(_TAKE)

    @classmethod
    def from_url(cls, url: str) -> RedisTokenBuckets:
        return cls(redis_client(url))

    async def take(self, key: str, rate: Rate) -> float:
        async with map_limit_errors("take a rate-limit token"):
            wait_us = await self._take(
                keys=[RATE_PREFIX + key], args=[rate.per_second, rate.burst, TOKEN_EPSILON]
            )
        return int(wait_us) / 1_000_000

    async def close(self) -> None:
        await self._redis.aclose()


class RedisLeaseSets:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._count = client.register_script(_COUNT)

    @classmethod
    def from_url(cls, url: str) -> RedisLeaseSets:
        return cls(redis_client(url))

    async def acquire(self, group: str, member: str, *, ttl_seconds: float, limit: int) -> bool:
        check_lease(ttl_seconds=ttl_seconds, limit=limit)
        ttl_ms = max(1, math.ceil(ttl_seconds * 1000))
        async with map_limit_errors("acquire a lease"):
            held = await self._acquire(keys=[LEASES_PREFIX + group], args=[member, ttl_ms, limit])
        return bool(int(held))

    async def release(self, group: str, member: str) -> None:
        async with map_limit_errors("release a lease"):
            await self._release(keys=[LEASES_PREFIX + group], args=[member])

    async def count(self, group: str) -> int:
        async with map_limit_errors("count leases"):
            held = await self._count(keys=[LEASES_PREFIX + group])
        return int(held)

    async def close(self) -> None:
        await self._redis.aclose()
