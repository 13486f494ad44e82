"""The two long-running processes, start to SIGTERM: ``serve`` and ``worker``.

The composition root (``main.py``) builds them; this module runs them until a
signal arrives and then stops them in order (drain, then close).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from server.config import Settings
from server.main import build_app, build_worker

log = logging.getLogger("vidscan")


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(settings: Settings) -> None:
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
    core = await build_worker(settings)
    count = max(1, settings.analysis_workers)
    print(f"vidscan worker running ({count} consumer(s))", flush=True)
    await until_signalled()
    await core.close()
    log.info("worker stopped")
