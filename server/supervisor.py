"""``vidscan-server serve`` with N processes behind one port.

gRPC's Python server runs its handlers on one event loop, so one process uses about
one core however many uploads it carries. With shared backends (PostgreSQL, Redis,
S3) the uploads need no process affinity -- a session resumes on any replica -- so
``serve`` starts ``VIDSCAN_PROCESSES`` copies of the single-process server, each
binding the same port with ``SO_REUSEPORT``; the kernel spreads new connections over
them. Each child is a complete server (health, reflection, analysis workers,
janitor), so every connection sees the same service.

The supervisor (this process):

- reserves the port first (a bound, non-listening ``SO_REUSEPORT`` socket), so that
  ``host:0`` picks one free port for all children and no other program takes it
  while a child restarts;
- migrates the database once, before any child starts (children racing to create
  the schema would fail);
- prints ``vidscan listening on host:port`` once every child is serving;
- restarts a child that exits unexpectedly (backoff 1 s doubling to 30 s);
- on SIGTERM/SIGINT sends SIGTERM to every child, which drains like a single
  server (refuse new uploads, finish running ones within the grace period), and
  waits for them; a child still running after the grace period plus a margin is
  killed.

Children are started with ``PR_SET_PDEATHSIG`` = SIGKILL: if the supervisor itself
dies (SIGKILL, OOM), its children die with it instead of serving unsupervised.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from server import metrics
from server.config import Settings
from server.main import open_repository

log = logging.getLogger("vidscan.supervisor")

PR_SET_PDEATHSIG = 1
READY_TIMEOUT_SECONDS = 120.0
RESTART_BACKOFF_SECONDS = (1.0, 30.0)
STOP_MARGIN_SECONDS = 10.0
LISTENING = "vidscan listening on "


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, never-listening SO_REUSEPORT socket on host:port (port 0: a free one).
    It holds the port for the children, which bind it with SO_REUSEPORT too; not
    listening, it never receives a connection itself."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@dataclass
class Child:
    index: int
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.ready.clear()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        self.pump = asyncio.create_task(self._pump(self.process))

    async def _pump(self, process: asyncio.subprocess.Process) -> None:
        """Watches the child's stdout for its readiness line; forwards the rest."""
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace")
            if line.startswith(LISTENING):
                self.ready.set()
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)


class Supervisor:
    def __init__(self, settings: Settings, *, count: int) -> None:
        self._settings = settings
        self._count = count
        self._stopping = asyncio.Event()
        self.children: list[Child] = []
        self._metrics_dir: str | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> int:
        host, port = split_listen(self._settings.grpc_listen)
        reserved = reserve_port(host, port)
        try:
            port = reserved.getsockname()[1]
            async with open_repository(self._settings):
                pass  # migrations run once, here, before any child starts
            env = {
                **os.environ,
                "VIDSCAN_PROCESSES": "1",
                "VIDSCAN_SO_REUSEPORT": "true",
                "VIDSCAN_GRPC_LISTEN": f"{host}:{port}",
            }
            if self._settings.metrics_listen:
                # Every child writes its samples here; this process serves their sum.
                self._metrics_dir = tempfile.mkdtemp(prefix="vidscan-metrics-")
                env[metrics.MULTIPROC_ENV] = self._metrics_dir
                metrics_port = metrics.serve(
                    self._settings.metrics_listen, multiprocess_dir=self._metrics_dir
                )
                metrics_host = self._settings.metrics_listen.rpartition(":")[0] or "0.0.0.0"
                print(
                    f"vidscan metrics on http://{metrics_host}:{metrics_port}/metrics",
                    flush=True,
                )
            if "media_workers" not in self._settings.model_fields_set:
                # The cores' worth of media workers is shared out, not multiplied.
                share = max(1, self._settings.media_workers // self._count)
                env["VIDSCAN_MEDIA_WORKERS"] = str(share)
            self.children = [
                Child(index=i, env={**env, "VIDSCAN_PROCESS_INDEX": str(i)})
                for i in range(self._count)
            ]
            for child in self.children:
                await child.start()
            if not await self._all_ready():
                log.error("not every server process became ready; stopping")
                await self._stop_children()
                return 1
            shown = f"[{host}]" if ":" in host else host
            print(f"{LISTENING}{shown}:{port} ({self._count} processes)", flush=True)
            log.info("serving on %s:%d with %d processes", host, port, self._count)
            await self._watch()
            await self._stop_children()
            return 0
        finally:
            reserved.close()
            if self._metrics_dir is not None:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)

    async def _all_ready(self) -> bool:
        async def ready(child: Child) -> bool:
            assert child.process is not None
            waiter = asyncio.create_task(child.ready.wait())
            exited = asyncio.create_task(child.process.wait())
            await asyncio.wait(
                {waiter, exited},
                timeout=READY_TIMEOUT_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiter.cancel()
            exited.cancel()
            return child.ready.is_set()

        results = await asyncio.gather(*(ready(c) for c in self.children))
        return all(results)

    async def _watch(self) -> None:
        """Until stopped: restarts every child that exits."""
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                exits = {
                    asyncio.create_task(c.process.wait()): c
                    for c in self.children
                    if c.process is not None
                }
                done, pending = await asyncio.wait(
                    {stopping, *exits}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    if task is not stopping:
                        task.cancel()
                if self._stopping.is_set():
                    return
                for task in done:
                    child = exits.get(task)
                    if child is not None:
                        await self._restart(child, stopping)
        finally:
            stopping.cancel()

    async def _restart(self, child: Child, stopping: asyncio.Task[bool]) -> None:
        assert child.process is not None
        code = child.process.returncode
        if self._metrics_dir is not None:
            metrics.mark_process_dead(child.process.pid, self._metrics_dir)
        low, high = RESTART_BACKOFF_SECONDS
        delay = min(high, low * 2**child.restarts)
        log.error(
            "server process %d (pid %s) exited with %s; restarting in %.0f s",
            child.index,
            child.pid,
            code,
            delay,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stopping), delay)
        if self._stopping.is_set():
            return
        child.restarts += 1
        await child.start()

    async def _stop_children(self) -> None:
        live = [c for c in self.children if c.process is not None]
        for child in live:
            child.signal(signal.SIGTERM)
        limit = self._settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS

        async def reap(child: Child) -> None:
            assert child.process is not None
            try:
                await asyncio.wait_for(child.process.wait(), limit)
            except TimeoutError:
                log.error("server process %d did not stop in %.0f s; killing", child.index, limit)
                child.signal(signal.SIGKILL)
                await child.process.wait()
            if child.pump is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await child.pump

        await asyncio.gather(*(reap(c) for c in live))


async def supervise(settings: Settings) -> int:
    supervisor = Supervisor(settings, count=settings.process_count)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop)
    return await supervisor.run()
