"""Health that tells the truth: one gRPC health name per dependency, and an overall
status that is NOT_SERVING while a required dependency is unreachable.

Names (``grpc.health.v1``):

=========================== ===================================================
``vidscan.live``            SERVING while the process runs, draining included:
                            the **liveness** probe (a database outage must not
                            make Kubernetes restart every replica)
``""`` and the service      SERVING when every *required* dependency answers and
names                       the server is not draining: the **readiness** probe
``vidscan.database``        PostgreSQL / SQLite answers ``SELECT 1`` (required)
``vidscan.sessions``        the session store (Redis) answers PING (required)
``vidscan.objects``         the object store answers (S3 HeadBucket) (required)
``vidscan.media``           a media worker runs, or the pool is replacing one
                            that crashed (required; ``server/media/pool.py``)
``vidscan.detector``        Triton and every allowed model are ready (not
                            required: uploads are accepted and analysed later)
=========================== ===================================================

A probe that raises or takes longer than its timeout counts as down. Transitions
are logged once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health, health_pb2

log = logging.getLogger("vidscan.health")

LIVENESS = "vidscan.live"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Dependency:
    name: str  # its health service name, e.g. "vidscan.database"
    probe: Callable[[], Awaitable[None]]  # raises when the dependency is down
    required: bool = True


class DependencyHealth:
    """Probes the dependencies every ``interval_seconds`` and publishes the result."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        *,
        dependencies: Sequence[Dependency],
        overall: Sequence[str],
        draining: Callable[[], bool],
        timeout_seconds: float = 2.0,
    ) -> None:
        self._servicer = servicer
        self._dependencies = tuple(dependencies)
        self._overall = tuple(overall)
        self._draining = draining
        self._timeout = timeout_seconds
        self._up: dict[str, bool] = {}
        # A probe slower than the timeout is not cancelled (cancelling a database
        # connect half-way leaks the connection): it counts as down and keeps running;
        # the next round waits on the same probe instead of starting another.
        self._running: dict[str, asyncio.Task[None]] = {}

    @property
    def up(self) -> dict[str, bool]:
        """The last result per dependency name."""
        return dict(self._up)

    async def _probe(self, dependency: Dependency) -> bool:
        task = self._running.get(dependency.name)
        if task is None or task.done():
            task = asyncio.ensure_future(dependency.probe())
            self._running[dependency.name] = task
        done, _ = await asyncio.wait({task}, timeout=self._timeout)
        failure: BaseException | None
        if not done:
            failure = TimeoutError(f"no answer within {self._timeout:g} s")
        elif task.cancelled():
            failure = asyncio.CancelledError()
        else:
            failure = task.exception()
        if failure is not None:  # any failure of a probe means "down"
            if self._up.get(dependency.name, True):
                log.warning("%s is DOWN: %s", dependency.name, failure)
            return False
        if not self._up.get(dependency.name, True):
            log.info("%s is back", dependency.name)
        return True

    async def check_once(self) -> bool:
        """Probes everything once; True when the service as a whole is ready."""
        results = await asyncio.gather(*(self._probe(d) for d in self._dependencies))
        ready = True
        for dependency, up in zip(self._dependencies, results, strict=True):
            self._up[dependency.name] = up
            await self._servicer.set(dependency.name, SERVING if up else NOT_SERVING)
            ready = ready and (up or not dependency.required)
        if self._draining():
            return False  # App.stop has set NOT_SERVING; never flip it back
        for name in self._overall:
            await self._servicer.set(name, SERVING if ready else NOT_SERVING)
        return ready

    async def run_forever(self, *, stop: asyncio.Event, interval_seconds: float) -> None:
        while not stop.is_set():
            await self.check_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_seconds)

    async def close(self) -> None:
        """Waits for probes still running (before the adapters they use close)."""
        running = [t for t in self._running.values() if not t.done()]
        if running:
            await asyncio.wait(running, timeout=self._timeout)
        for task in running:
            if not task.done():
                task.cancel()
        for task in self._running.values():
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: no "exception was never retrieved"
