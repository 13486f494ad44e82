"""The Redis client every Redis adapter (sessions, the analysis queue) is built with."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# A dropped pooled connection is retried once on a fresh one (see redis_client).
RECONNECT_RETRIES = 1
HEALTH_CHECK_SECONDS = 10


def redis_client(url: str, *, socket_timeout: float | None = 5.0) -> aioredis.Redis:
    """A pooled client that survives a Redis restart: a command that meets a dropped
    pooled connection ("Connection closed by server") is retried once on a fresh
    connection, and idle connections are health-checked before reuse. One retry, not
    redis-py's default ten: a Redis that is really down is reported within seconds
    as UNAVAILABLE instead of holding the RPC."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=RECONNECT_RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=HEALTH_CHECK_SECONDS,
    )
