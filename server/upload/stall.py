"""Stalled UploadVideo streams: a client that stops sending, or trickles, is cut.

A stream holds a session's lock, a quota reservation, a spool file and a gRPC
stream; a client that goes silent must not keep them hostage. Two rules, both
measured only over the time the server spends *waiting for the client* (while the
server itself is busy -- a full part budget, a slow S3 -- the client is paused by
gRPC flow control and that is not its fault):

- no message at all for ``idle_seconds``;
- fewer than ``min_bytes_per_second * idle_seconds`` bytes over each
  ``idle_seconds`` of waiting (so a byte every 29 s does not keep a stream alive).

While other streams wait for the server's part budget (upload/budget.py), which an
idle stream may hold a part of, the first rule tightens to
``pressured_idle_seconds``: a handful of silent streams cannot hold everyone else's
uploads for the whole idle timeout.

The stream then ends with UPLOAD_STALLED (ABORTED); the pipeline suspends it like a
dropped connection, so the client resumes at the committed offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from server.errors import Reason, StreamStalled

T = TypeVar("T")


PRESSURE_CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class StallPolicy:
    idle_seconds: float  # 0: never cut
    min_bytes_per_second: float  # 0: any rate
    # Shorter idle limit while other streams wait for the part budget (0: none).
    pressured_idle_seconds: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.idle_seconds > 0


def stalled(policy: StallPolicy, why: str) -> StreamStalled:
    return StreamStalled(
        Reason.UPLOAD_STALLED,
        f"{why}; what was stored is kept: resume at the committed offset",
        metadata={
            "idle_seconds": f"{policy.idle_seconds:g}",
            "min_bytes_per_second": f"{policy.min_bytes_per_second:g}",
        },
    )


class StallWatch:
    """The two rules as arithmetic over (time waited, bytes received) per message."""

    def __init__(self, policy: StallPolicy) -> None:
        self._policy = policy
        self._waited = 0.0
        self._bytes = 0

    def received(self, waited_seconds: float, nbytes: int) -> None:
        """Counts one message; raises StreamStalled when a window ends below the rate."""
        policy = self._policy
        if not policy.enabled:
            return
        self._waited += waited_seconds
        self._bytes += nbytes
        if self._waited < policy.idle_seconds:
            return
        needed = policy.min_bytes_per_second * self._waited
        if self._bytes < needed:
            raise stalled(
                policy,
                f"the stream sent {self._bytes} bytes in {self._waited:.0f} s of waiting, "
                f"less than the minimum of {policy.min_bytes_per_second:g} bytes/s",
            )
        self._waited, self._bytes = 0.0, 0


async def watched(
    messages: AsyncIterator[T],
    policy: StallPolicy,
    size: Callable[[T], int],
    *,
    pressure: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[T]:
    """``messages``, ended with StreamStalled when the client stalls (see module doc).

    ``pressure()`` true means other streams wait for what idle streams hold (the
    part budget): then a stream idle for ``pressured_idle_seconds`` is cut already."""
    watch = StallWatch(policy)
    iterator = aiter(messages)
    while True:
        started = clock()
        if policy.enabled:
            got = await _next_or_stall(iterator, policy, pressure, clock, started)
            if got is None:
                return
            message = got
        else:
            try:
                message = await anext(iterator)
            except StopAsyncIteration:
                return
        watch.received(clock() - started, size(message))
        yield message


async def _next_or_stall(
    iterator: AsyncIterator[T],
    policy: StallPolicy,
    pressure: Callable[[], bool],
    clock: Callable[[], float],
    started: float,
) -> T | None:
    # The read is a task of its own, looked at in slices: cancelling a gRPC read to
    # look at the pressure could lose a message.
    reading: asyncio.Task[T] = asyncio.ensure_future(anext(iterator))
    try:
        while True:
            idle = clock() - started
            limit = policy.idle_seconds
            if policy.pressured_idle_seconds and pressure():
                limit = min(limit, policy.pressured_idle_seconds)
            if idle >= limit:
                why = f"the stream sent nothing for {idle:.0f} s"
                if limit < policy.idle_seconds:
                    why += " while other uploads waited for the server's part budget"
                raise stalled(policy, why)
            step = limit - idle
            if policy.pressured_idle_seconds:
                step = min(step, PRESSURE_CHECK_SECONDS)
            done, _ = await asyncio.wait({reading}, timeout=step)
            if done:
                try:
                    return reading.result()
                except StopAsyncIteration:
                    return None
    finally:
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading
