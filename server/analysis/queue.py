"""The analysis job queue port, its optional inspection ability, and two adapters.

``RedisStreamQueue`` uses a Redis Stream with a consumer group: a job read by a
worker stays in that worker's pending list until acknowledged, and a job whose
worker died is taken over by another through XAUTOCLAIM after ``reclaim_after``.
A postponed job waits in a sorted set scored by its due time (Redis server time, so
replicas with skewed clocks agree) and goes back into the stream when due. A hash
counts the copies of each analysis the queue holds, so that the recovery sweep can
tell a job that is merely waiting from one that was lost. Every change to the stream
and to that count happens in one Lua script, so they never disagree.

``MemoryQueue`` is the embedded default (one process, no Redis); after a restart the
recovery sweep re-enqueues unfinished analyses from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.errors import Internal, Reason, Unavailable
from server.redis_client import redis_client


@contextlib.asynccontextmanager
async def map_queue_errors(operation: str) -> AsyncIterator[None]:
    """The one place where redis-py's exceptions become vidscan errors for the queue
    (its own reasons: a queue outage is not a session-store outage)."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise Unavailable(
            Reason.QUEUE_UNAVAILABLE, f"analysis queue unreachable during {operation}"
        ) from exc
    except RedisError as exc:
        raise Internal(Reason.QUEUE_ERROR, f"analysis queue failed {operation}") from exc


PREFIX = "vidscan:analysis-"
STREAM = PREFIX + "jobs"
DELAYED = PREFIX + "delayed"
QUEUED = PREFIX + "queued"
GROUP = "analysis-workers"


@dataclass(frozen=True)
class QueueKeys:
    """The Redis keys and group of one queue, so that another job kind (webhook
    deliveries) gets a queue of its own with the same guarantees."""

    stream: str
    delayed: str
    queued: str
    group: str

    @classmethod
    def named(cls, prefix: str, *, group: str) -> QueueKeys:
        return cls(
            stream=prefix + "jobs",
            delayed=prefix + "delayed",
            queued=prefix + "queued",
            group=group,
        )


ANALYSIS_KEYS = QueueKeys(stream=STREAM, delayed=DELAYED, queued=QUEUED, group=GROUP)

# A job postponed again and again (Triton down for long) is still looked at this often.
MAX_RETRY_DELAY_SECONDS = 300.0
# Beyond this exponent the delay is at the cap anyway; it keeps 2**n a small number.
_MAX_EXPONENT = 32
# Due jobs moved back into the stream per receive; the rest follow on the next one.
PROMOTE_BATCH = 100


def retry_delay(
    retries: int, *, base_seconds: float, max_seconds: float = MAX_RETRY_DELAY_SECONDS
) -> float:
    """Exponential backoff: ``base * 2**retries``, capped at ``max_seconds``, so that a
    long outage is not polled at the base rate by every waiting job."""
    exponent = min(max(retries, 0), _MAX_EXPONENT)
    return min(max_seconds, base_seconds * float(2**exponent))


@dataclass(frozen=True)
class Job:
    message_id: str
    analysis_id: str
    # How often this job was postponed so far; the next delay grows with it.
    retries: int = 0


class JobQueue(Protocol):
    async def enqueue(self, analysis_id: str) -> None: ...

    async def receive(self, *, consumer: str, wait_seconds: float) -> Job | None:
        """The next job for ``consumer``: one abandoned by a dead worker first, else a
        new one; None when nothing arrived within ``wait_seconds``."""
        ...

    async def ack(self, job: Job) -> None: ...

    async def retry_later(self, job: Job, *, delay_seconds: float) -> None:
        """Delivers the job again after ``delay_seconds`` (not before), with its
        ``retries`` one higher."""
        ...

    async def close(self) -> None: ...


class QueueInspector(Protocol):
    """An optional ability: which analyses the queue holds, for the recovery sweep."""

    async def held(self, analysis_ids: Sequence[str]) -> set[str]:
        """Those of ``analysis_ids`` with a job waiting, postponed, or in a worker's
        hands (received and not yet acknowledged)."""
        ...


@dataclass(frozen=True)
class QueueStats:
    depth: int  # jobs waiting, postponed or in a worker's hands
    oldest_age_seconds: float  # of the oldest job still in the queue; 0 when empty


class QueueStatistics(Protocol):
    """An optional ability: how much work is queued, for the metrics."""

    async def stats(self) -> QueueStats: ...


class RecoverableQueue(JobQueue, QueueInspector, QueueStatistics, Protocol):
    """A queue the recovery sweep can check and refill."""


# KEYS: stream, queued. ARGV: analysis id.
_ENQUEUE = """
redis.call('XADD', KEYS[1], '*', 'analysis_id', ARGV[1], 'retries', '0')
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"""

# KEYS: stream, queued. ARGV: group, message id, analysis id.
# Only the acknowledgement that removes the job from the pending list lowers the
# count: a second ack of the same job (a reclaimed one) changes nothing.
_ACK = """
local acked = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if type(acked) ~= 'number' or acked == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('HINCRBY', KEYS[2], ARGV[3], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[3])
end
return 1
"""

# KEYS: stream, delayed. ARGV: group, message id, analysis id, retries, delay ms.
# The member names the original message, so two copies of one analysis stay two.
_RETRY_LATER = """
local acked = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if type(acked) ~= 'number' or acked == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = cjson.encode({analysis_id = ARGV[3], retries = tonumber(ARGV[4]), from = ARGV[2]})
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), member)
return 1
"""

# KEYS: stream, delayed. ARGV: batch. Returns ms until the next postponed job is due
# (-1: none), so that a blocking read does not sleep past it.
_PROMOTE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local job = cjson.decode(member)
  redis.call('XADD', KEYS[1], '*', 'analysis_id', job.analysis_id,
             'retries', tostring(job.retries))
  redis.call('ZREM', KEYS[2], member)
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #first == 0 then return -1 end
return math.max(0, tonumber(first[2]) - now)
"""


class RedisStreamQueue:
    def __init__(
        self,
        *,
        client: aioredis.Redis,
        reclaim_after_seconds: float,
        keys: QueueKeys = ANALYSIS_KEYS,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._reclaim_ms = int(reclaim_after_seconds * 1000)
        self._group_ready = False
        self._enqueue = client.register_script(_ENQUEUE)
        self._ack = client.register_script(_ACK)
        self._retry_later = client.register_script(_RETRY_LATER)
        self._promote = client.register_script(_PROMOTE)

    @classmethod
    def from_url(
        cls, url: str, *, reclaim_after_seconds: float, keys: QueueKeys = ANALYSIS_KEYS
    ) -> RedisStreamQueue:
        # No socket timeout: XREADGROUP blocks for up to the caller's wait.
        client = redis_client(url, socket_timeout=None)
        return cls(client=client, reclaim_after_seconds=reclaim_after_seconds, keys=keys)

    async def stats(self) -> QueueStats:
        """XLEN counts waiting and in-hand jobs (acknowledged ones are deleted); the
        delayed set the postponed ones. The oldest stream entry's id is its time."""
        async with (
            map_queue_errors("read queue statistics"),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            pipe.xlen(self._keys.stream)
            pipe.zcard(self._keys.delayed)
            pipe.xrange(self._keys.stream, count=1)
            pipe.time()
            length, delayed, first, now = await pipe.execute()
        oldest = 0.0
        if first:
            entry_id = first[0][0]
            text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            seconds, micros = now
            oldest = max(0.0, seconds + micros / 1e6 - int(text.split("-")[0]) / 1000)
        return QueueStats(depth=int(length) + int(delayed), oldest_age_seconds=oldest)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        async with map_queue_errors("create job group"):
            try:
                await self._redis.xgroup_create(
                    self._keys.stream, self._keys.group, id="0", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True

    async def enqueue(self, analysis_id: str) -> None:
        await self._ensure_group()
        async with map_queue_errors("enqueue analysis"):
            await self._enqueue(keys=[self._keys.stream, self._keys.queued], args=[analysis_id])

    async def receive(self, *, consumer: str, wait_seconds: float) -> Job | None:
        deadline = asyncio.get_running_loop().time() + wait_seconds
        await self._ensure_group()
        async with map_queue_errors("receive analysis job"):
            try:
                messages = await self._read(consumer, deadline=deadline)
            except ResponseError as exc:
                if not _stream_lost(exc):
                    raise
                # Redis lost its data (restart without persistence, FLUSHALL): make the
                # group again, from the start of what was added since. The recovery
                # sweep re-queues the jobs that were lost.
                self._group_ready = False
                await self._ensure_group()
                messages = await self._read(consumer, deadline=deadline)
        for message_id, fields in messages:
            if fields:  # entries deleted meanwhile come back without fields
                return Job(
                    message_id=str(message_id),
                    analysis_id=str(fields["analysis_id"]),
                    retries=int(fields.get("retries", 0)),
                )
        return None

    async def _read(self, consumer: str, *, deadline: float) -> Any:
        """Due postponed jobs into the stream, then an abandoned job, else a new one
        until ``deadline`` (loop time); a read that would sleep past a postponed job's
        due time wakes for it."""
        loop = asyncio.get_running_loop()
        while True:
            next_due_ms = int(
                await self._promote(
                    keys=[self._keys.stream, self._keys.delayed], args=[PROMOTE_BATCH]
                )
            )
            claimed: Any = await self._redis.xautoclaim(
                self._keys.stream,
                self._keys.group,
                consumer,
                min_idle_time=self._reclaim_ms,
                start_id="0-0",
                count=1,
            )
            if claimed and claimed[1]:
                return claimed[1]
            left_ms = int((deadline - loop.time()) * 1000)
            block = left_ms if next_due_ms < 0 else min(left_ms, next_due_ms)
            read: Any = await self._redis.xreadgroup(
                self._keys.group,
                consumer,
                {self._keys.stream: ">"},
                count=1,
                block=max(1, block),  # 0: forever
            )
            if read or loop.time() >= deadline:
                return read[0][1] if read else []

    async def ack(self, job: Job) -> None:
        async with map_queue_errors("ack analysis job"):
            await self._ack(
                keys=[self._keys.stream, self._keys.queued],
                args=[self._keys.group, job.message_id, job.analysis_id],
            )

    async def retry_later(self, job: Job, *, delay_seconds: float) -> None:
        async with map_queue_errors("postpone analysis job"):
            await self._retry_later(
                keys=[self._keys.stream, self._keys.delayed],
                args=[
                    self._keys.group,
                    job.message_id,
                    job.analysis_id,
                    job.retries + 1,
                    max(0, int(delay_seconds * 1000)),
                ],
            )

    async def held(self, analysis_ids: Sequence[str]) -> set[str]:
        if not analysis_ids:
            return set()
        async with map_queue_errors("list queued analyses"):
            counts: list[bytes | str | None] = await self._redis.hmget(
                self._keys.queued, list(analysis_ids)
            )
        return {aid for aid, count in zip(analysis_ids, counts, strict=True) if count}

    async def close(self) -> None:
        await self._redis.aclose()


def _stream_lost(exc: ResponseError) -> bool:
    """The stream or its group is gone: NOGROUP on a read, UNBLOCKED for a read that
    was waiting when the key was deleted."""
    message = str(exc)
    return message.startswith("NOGROUP") or message.startswith("UNBLOCKED")


class MemoryQueue:
    """One process's queue. A job counts as held from enqueue until its ack: waiting,
    postponed in a timer, or in a worker's hands."""

    def __init__(self) -> None:
        self._ready: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._counter = 0
        self._timers: set[asyncio.TimerHandle] = set()
        self._in_hand: dict[str, str] = {}  # message id -> analysis id
        self._held: dict[str, int] = {}  # analysis id -> copies held
        self._since: dict[str, float] = {}  # analysis id -> when its first copy came

    async def enqueue(self, analysis_id: str) -> None:
        self._held[analysis_id] = self._held.get(analysis_id, 0) + 1
        self._since.setdefault(analysis_id, time.monotonic())
        self._ready.put_nowait((analysis_id, 0))

    async def receive(self, *, consumer: str, wait_seconds: float) -> Job | None:
        try:
            analysis_id, retries = await asyncio.wait_for(self._ready.get(), wait_seconds)
        except TimeoutError:
            return None
        self._counter += 1
        job = Job(message_id=str(self._counter), analysis_id=analysis_id, retries=retries)
        self._in_hand[job.message_id] = analysis_id
        return job

    async def ack(self, job: Job) -> None:
        analysis_id = self._in_hand.pop(job.message_id, None)
        if analysis_id is None:
            return
        left = self._held[analysis_id] - 1
        if left > 0:
            self._held[analysis_id] = left
        else:
            del self._held[analysis_id]
            self._since.pop(analysis_id, None)

    async def retry_later(self, job: Job, *, delay_seconds: float) -> None:
        if self._in_hand.pop(job.message_id, None) is None:
            return  # already acknowledged or postponed
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def put() -> None:
            self._timers.discard(handle)
            self._ready.put_nowait((job.analysis_id, job.retries + 1))

        handle = loop.call_later(delay_seconds, put)
        self._timers.add(handle)

    async def held(self, analysis_ids: Sequence[str]) -> set[str]:
        return {aid for aid in analysis_ids if aid in self._held}

    async def stats(self) -> QueueStats:
        oldest = min(self._since.values(), default=None)
        age = 0.0 if oldest is None else time.monotonic() - oldest
        return QueueStats(depth=sum(self._held.values()), oldest_age_seconds=age)

    async def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
