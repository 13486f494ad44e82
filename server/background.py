"""The tasks a process runs beside its RPCs, and their orderly stop.

Two kinds: *workers* (analysis consumers) are asked to stop through ``stopping`` and
get ``WORKER_STOP_SECONDS`` to finish the job in hand; *loops* (janitor, recovery,
detector readiness) are cancelled. Closers (adapters) run last, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from server import tracing
from server.stopping import cancel_and_wait

# How long shutdown waits for analysis workers to finish the job in hand.
WORKER_STOP_SECONDS = 15.0
# How long it waits for cancelled loops (server/stopping.py: a loop that lost its
# cancellation in a Redis call must not hold the shutdown; closing the adapters next
# ends it).
LOOP_STOP_SECONDS = 5.0

log = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None]]


@dataclass
class Background:
    closers: list[Closer] = field(default_factory=list)
    loops: list[asyncio.Task[None]] = field(default_factory=list)
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def spawn(self, coro: Awaitable[None]) -> None:
        """A loop that runs until the process stops (cancelled then). Loops are not
        traced: probes and sweeps every few seconds would bury the uploads' traces."""
        with tracing.untraced():  # the task keeps a copy of this context
            self.loops.append(asyncio.ensure_future(coro))

    def add_worker(self, coro: Awaitable[None]) -> None:
        """A worker that watches ``stopping`` and leaves by itself."""
        self.workers.append(asyncio.ensure_future(coro))

    async def close(self) -> None:
        self.stopping.set()  # workers finish the job in hand and leave
        if self.workers:
            _, late = await asyncio.wait(self.workers, timeout=WORKER_STOP_SECONDS)
            self.loops.extend(late)
        stuck = await cancel_and_wait(self.loops, within=LOOP_STOP_SECONDS)
        for task in self.loops:
            if task in stuck:
                log.warning("background loop %s did not stop when cancelled", task.get_name())
                continue
            with contextlib.suppress(asyncio.CancelledError):
                task.result()  # a loop that failed fails the stop, as before
        for close in reversed(self.closers):
            await close()
