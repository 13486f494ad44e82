"""The analysis job queue port and its two adapters.

``RedisStreamQueue`` uses a Redis Stream with a consumer group: a job read by a
worker stays in that worker's pending list until acknowledged, and a job whose
worker died is taken over by another through XAUTOCLAIM after ``reclaim_after``.
``MemoryQueue`` is the embedded default (one process, no Redis); after a restart the
recovery sweep re-enqueues unfinished analyses from the database.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from server.sessions.redis import map_redis_errors

STREAM = "vidscan:analysis-jobs"
GROUP = "analysis-workers"


@dataclass(frozen=True)
class Job:
    message_id: str
    analysis_id: str


class JobQueue(Protocol):
    async def enqueue(self, analysis_id: str) -> None: ...

    async def receive(self, *, consumer: str, wait_seconds: float) -> Job | None:
        """The next job for ``consumer``: one abandoned by a dead worker first, else a
        new one; None when nothing arrived within ``wait_seconds``."""
        ...

    async def ack(self, job: Job) -> None: ...

    async def retry_later(self, job: Job, *, delay_seconds: float) -> None:
        """Leaves the job to be delivered again after roughly ``delay_seconds``."""
        ...

    async def close(self) -> None: ...


class RedisStreamQueue:
    def __init__(self, *, client: aioredis.Redis, reclaim_after_seconds: float) -> None:
        self._redis = client
        self._reclaim_ms = int(reclaim_after_seconds * 1000)
        self._group_ready = False

    @classmethod
    def from_url(cls, url: str, *, reclaim_after_seconds: float) -> RedisStreamQueue:
        client = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
        return cls(client=client, reclaim_after_seconds=reclaim_after_seconds)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        async with map_redis_errors("create job group"):
            try:
                await self._redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True

    async def enqueue(self, analysis_id: str) -> None:
        await self._ensure_group()
        async with map_redis_errors("enqueue analysis"):
            await self._redis.xadd(STREAM, {"analysis_id": analysis_id})

    async def receive(self, *, consumer: str, wait_seconds: float) -> Job | None:
        await self._ensure_group()
        async with map_redis_errors("receive analysis job"):
            claimed: Any = await self._redis.xautoclaim(
                STREAM, GROUP, consumer, min_idle_time=self._reclaim_ms, start_id="0-0", count=1
            )
            messages: Any = claimed[1] if claimed else []
            if not messages:
                read: Any = await self._redis.xreadgroup(
                    GROUP, consumer, {STREAM: ">"}, count=1, block=int(wait_seconds * 1000)
                )
                messages = read[0][1] if read else []
        for message_id, fields in messages:
            if fields:  # entries deleted meanwhile come back without fields
                return Job(message_id=str(message_id), analysis_id=str(fields["analysis_id"]))
        return None

    async def ack(self, job: Job) -> None:
        async with map_redis_errors("ack analysis job"):
            await self._redis.xack(STREAM, GROUP, job.message_id)
            await self._redis.xdel(STREAM, job.message_id)

    async def retry_later(self, job: Job, *, delay_seconds: float) -> None:
        # Left unacknowledged, the job is reclaimed after `reclaim_after_seconds`.
        return None

    async def close(self) -> None:
        await self._redis.aclose()


class MemoryQueue:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._counter = 0
        self._timers: set[asyncio.TimerHandle] = set()

    async def enqueue(self, analysis_id: str) -> None:
        self._queue.put_nowait(analysis_id)

    async def receive(self, *, consumer: str, wait_seconds: float) -> Job | None:
        try:
            analysis_id = await asyncio.wait_for(self._queue.get(), wait_seconds)
        except TimeoutError:
            return None
        self._counter += 1
        return Job(message_id=str(self._counter), analysis_id=analysis_id)

    async def ack(self, job: Job) -> None:
        return None

    async def retry_later(self, job: Job, *, delay_seconds: float) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def put() -> None:
            self._timers.discard(handle)
            self._queue.put_nowait(job.analysis_id)

        handle = loop.call_later(delay_seconds, put)
        self._timers.add(handle)

    async def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
