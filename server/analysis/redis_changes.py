"""Analysis change notifications across replicas, over Redis pub/sub.

Every change is one PUBLISH of the analysis id on one channel. Each process holds at
most one subscription to it (one connection, opened when its first watcher comes, kept
until close) and fans the ids out in memory (``ChangeHub``); a thousand watchers cost
one connection, not a thousand. Every process sees every id: a few small messages per
analysis, cheaper than subscribing and unsubscribing per analysis.

Redis trouble is handled here, in one place, and never reaches a client: a publish
that fails is logged (watchers find the change on their periodic re-read); a lost
subscription is re-opened with backoff, and then every watcher is woken to re-read,
since notifications may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.analysis.changes import ChangeHub, Signal
from server.redis_client import redis_client
from server.stopping import cancel_and_wait

log = logging.getLogger(__name__)

CHANNEL = "vidscan:analysis-changes"
# A publish waits this long at most: the analysis it reports is more important.
PUBLISH_TIMEOUT_SECONDS = 1.0
# A new watcher waits this long at most for the subscription to be in place (else it
# relies on re-reads until it is).
SUBSCRIBE_WAIT_SECONDS = 1.0
# How long one read of the subscription blocks; between reads redis-py health-checks
# the connection, so a dead one is found.
LISTEN_SECONDS = 5.0
RECONNECT_MIN_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0
# close() waits this long for the listener (its cancellation can be lost inside a
# Redis call, server/stopping.py); it also stops at its next look at the flag.
STOP_SECONDS = 5.0


class RedisChanges:
    def __init__(self, *, publisher: aioredis.Redis, listener: aioredis.Redis) -> None:
        self.hub = ChangeHub()
        self._publisher = publisher
        self._listener = listener
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._stopping = False

    @classmethod
    def from_url(cls, url: str) -> RedisChanges:
        return cls(publisher=redis_client(url), listener=redis_client(url, socket_timeout=None))

    async def publish(self, analysis_id: str) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await self._publisher.publish(CHANNEL, analysis_id)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not publish a change of analysis %s: %r", analysis_id, exc)

    def subscribe(self, analysis_id: str) -> AbstractAsyncContextManager[Signal]:
        return self._subscribe(analysis_id)

    @contextlib.asynccontextmanager
    async def _subscribe(self, analysis_id: str) -> AsyncIterator[Signal]:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="analysis-changes")
        async with self.hub.subscribe(analysis_id) as signal:
            if not self._subscribed.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SUBSCRIBE_WAIT_SECONDS):
                        await self._subscribed.wait()
            yield signal

    async def _listen(self) -> None:
        delay = RECONNECT_MIN_SECONDS
        while not self._stopping:
            try:
                async with self._listener.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self._subscribed.set()
                    self.hub.notify_all()  # whatever changed while unsubscribed
                    delay = RECONNECT_MIN_SECONDS
                    while not self._stopping:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=LISTEN_SECONDS
                        )
                        if message is not None and message.get("type") == "message":
                            self.hub.notify(str(message["data"]))
            except (RedisError, OSError) as exc:
                log.warning("analysis change subscription lost (%r); retrying", exc)
            except Exception:
                log.exception("analysis change subscription failed; retrying")
            self._subscribed.clear()
            if self._stopping:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def close(self) -> None:
        self._stopping = True
        if self._task is not None:
            if await cancel_and_wait({self._task}, within=STOP_SECONDS):
                log.warning("the analysis change listener did not stop within %g s", STOP_SECONDS)
            self._task = None
        await self._publisher.aclose()
        await self._listener.aclose()
