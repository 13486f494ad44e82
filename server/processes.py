"""The two long-running processes, start to SIGTERM: ``serve`` and ``worker``.

The composition root (``main.py``) builds them; this module runs them until a
signal arrives and then stops them in order (drain, then close).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from server import metrics, tracing
from server.config import Settings
from server.main import build_app, build_worker

log = logging.getLogger("vidscan")


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(settings: Settings) -> int:
    """One server process, or (VIDSCAN_PROCESSES > 1) a supervisor of several."""
    if settings.process_count > 1:
        from server.supervisor import supervise

        return await supervise(settings)
    await serve_one(settings)
    return 0


def start_metrics(settings: Settings) -> None:
    """``/metrics`` of this one process; under a supervisor it serves the sum."""
    if not settings.metrics_listen or os.environ.get(metrics.MULTIPROC_ENV):
        return
    port = metrics.serve(settings.metrics_listen)
    host = settings.metrics_listen.rpartition(":")[0] or "0.0.0.0"
    print(f"vidscan metrics on http://{host}:{port}/metrics", flush=True)


async def serve_one(settings: Settings) -> None:
    start_metrics(settings)
    stop_tracing = tracing.configure("vidscan-server")
    try:
        await _serve_one(settings)
    finally:
        stop_tracing()


async def _serve_one(settings: Settings) -> None:
    app = await build_app(settings)
    await app.server.start()
    host = settings.grpc_listen.rsplit(":", 1)[0]
    log.info("vidscan listening on %s:%d", host, app.port)
    print(f"vidscan listening on {host}:{app.port}", flush=True)
    await until_signalled()
    log.info("shutting down: draining %d upload(s)", app.admission.in_flight)
    await app.stop(settings.shutdown_grace_seconds)
    log.info("stopped")


async def run_workers(settings: Settings) -> None:
    """``vidscan-server worker``: analysis workers only, no gRPC server."""
    stop_tracing = tracing.configure("vidscan-worker")
    try:
        core = await build_worker(settings)
        count = max(1, settings.analysis_workers)
        print(f"vidscan worker running ({count} consumer(s))", flush=True)
        await until_signalled()
        await core.close()
        log.info("worker stopped")
    finally:
        stop_tracing()
