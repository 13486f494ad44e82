"""A bounded pool of warm, isolated media worker processes.

Each worker is ``python -m server.media.worker --serve``: limits applied and PyAV
imported once, then one request line in, one answer line out, one job at a time.
The pool only moves bytes and watches processes; what an outcome means for an
upload is ``isolation.py``'s to say.

- A job waits for an idle worker at most ``wait_seconds`` (the caller's deadline);
  past it: ``Unavailable(MEDIA_WORKERS_BUSY)`` with a retry hint. Waiting jobs are
  held here, never in a pipe.
- A worker that crashes, hangs past the job's wall-clock limit (killed), fails or is
  cancelled with its caller is replaced in the background; one that has run
  ``recycle_jobs`` jobs is retired (stdin closed) and replaced the same way.
- ``close()`` stops every worker; none outlives the server (a worker whose server
  vanished sees EOF on stdin and exits).

Why not pebble or loky: measured with pebble 5.2.3 (ProcessPool, 2 spawn workers,
jobs that SIGSEGV at once beside jobs that succeed), the pool broke for good
("BrokenProcessPool: All workers expired") within 18 crashes: a worker that dies
before the pool thread has read its acknowledgement is matched to no task, which
either breaks the pool or leaves the job to time out as a "hang". loky and
``concurrent.futures`` break the whole executor on one crashed worker, failing every
job beside it, and have no per-job timeout. Owning the child processes (asyncio
subprocesses) makes each outcome exact: the exit status of the one process that
ran the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from server import metrics
from server.errors import Reason, Unavailable
from server.media.worker import READY

log = logging.getLogger(__name__)

# A worker must import PyAV and say READY within this.
START_TIMEOUT_SECONDS = 60.0
# A retired worker has this long to exit after its stdin closes, then it is killed.
RETIRE_SECONDS = 5.0
# Delay between attempts to replace a worker that would not start.
RESTART_DELAY_SECONDS = 1.0
# Retry hint sent with MEDIA_WORKERS_BUSY (google.rpc.RetryInfo).
BUSY_RETRY_AFTER_SECONDS = 1.0
STDERR_TAIL_BYTES = 4096
ANSWER_LIMIT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class PoolOptions:
    workers: int
    recycle_jobs: int
    memory_bytes: int
    cpu_budget_seconds: int  # RLIMIT_CPU hard limit of one worker's whole life


@dataclass(frozen=True)
class Answered:
    line: bytes


@dataclass(frozen=True)
class Crashed:
    signal_name: str


@dataclass(frozen=True)
class TimedOut:
    seconds: float


@dataclass(frozen=True)
class Failed:
    detail: str  # the tail of the worker's stderr


Outcome = Answered | Crashed | TimedOut | Failed


class WorkerStartError(RuntimeError):
    """A worker process that did not get as far as READY."""


class _Worker:
    """One worker process; the pool gives it one job at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.jobs = 0
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        assert process.stderr is not None
        self._stderr_task = asyncio.create_task(self._collect_stderr(process.stderr))

    @classmethod
    async def start(cls, command: Sequence[str]) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=ANSWER_LIMIT_BYTES,
        )
        worker = cls(process)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_SECONDS)
        except BaseException:
            await worker.kill()
            raise
        if line != READY:
            await worker.kill()
            raise WorkerStartError(f"media worker did not start: {worker.stderr_tail()}")
        return worker

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def run(self, payload: bytes, *, timeout_seconds: float) -> Outcome:
        """Sends one request and waits for its answer or the process's end."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        self.jobs += 1
        try:
            async with asyncio.timeout(timeout_seconds):
                with contextlib.suppress(ConnectionError):  # a dead worker: see below
                    stdin.write(payload + b"\n")
                    await stdin.drain()
                line = await stdout.readline()
                if line.endswith(b"\n"):
                    return Answered(line)
                await self.process.wait()
        except TimeoutError:
            await self.kill()
            return TimedOut(timeout_seconds)
        except ValueError:  # an answer over ANSWER_LIMIT_BYTES
            await self.kill()
            return Failed(f"media worker answered more than {ANSWER_LIMIT_BYTES} bytes")
        except BaseException:  # cancelled with its caller: do not leave it decoding
            await self.kill()
            raise
        return await self._ended()

    async def _ended(self) -> Outcome:
        code = self.process.returncode
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
        if code is not None and code < 0:
            return Crashed(signal.Signals(-code).name)
        return Failed(self.stderr_tail() or f"media worker exited with status {code}")

    async def retire(self) -> None:
        """Lets the worker finish on EOF; kills it if it does not."""
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), RETIRE_SECONDS)
        except TimeoutError:
            await self.kill()
        await self._drain_stderr()

    async def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()
        await self._drain_stderr()

    async def _drain_stderr(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
        self._stderr_task.cancel()

    def stderr_tail(self) -> str:
        return b"".join(self._stderr).decode(errors="replace").strip()[-300:]

    async def _collect_stderr(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size > STDERR_TAIL_BYTES and len(self._stderr) > 1:
                self._stderr_size -= len(self._stderr.popleft())


def worker_command(options: PoolOptions) -> list[str]:
    return [
        sys.executable,
        "-m",
        "server.media.worker",
        "--serve",
        f"--memory-bytes={options.memory_bytes}",
        f"--cpu-budget-seconds={options.cpu_budget_seconds}",
    ]


class MediaPool:
    def __init__(self, *, options: PoolOptions) -> None:
        self._options = options
        self._command = worker_command(options)
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._replacing: set[asyncio.Task[None]] = set()
        self._closed = False
        self._start_error: str | None = None  # the last replacement that did not start

    @property
    def size(self) -> int:
        return self._options.workers

    def pids(self) -> list[int]:
        """The worker processes alive now (tests count them)."""
        return sorted(w.pid for w in self._workers if w.alive)

    async def ping(self) -> None:
        """Health probe (``vidscan.media``): raises when no worker runs and the last
        replacement failed to start (a pool briefly replacing crashed workers is up)."""
        if self._closed:
            raise RuntimeError("the media pool is closed")
        if self._start_error is not None and not any(w.alive for w in self._workers):
            raise RuntimeError(f"no media worker is running: {self._start_error}")

    async def start(self) -> None:
        """Starts every worker; raises ``WorkerStartError`` (and leaves none running)
        if any cannot start, so that a server without media workers never serves."""
        results = await asyncio.gather(
            *(_Worker.start(self._command) for _ in range(self._options.workers)),
            return_exceptions=True,
        )
        started = [r for r in results if isinstance(r, _Worker)]
        failed = [r for r in results if not isinstance(r, _Worker)]
        if failed:
            await asyncio.gather(*(w.kill() for w in started))
            raise WorkerStartError(f"media pool did not start: {failed[0]}") from failed[0]
        for worker in started:
            self._workers.add(worker)
            self._idle.put_nowait(worker)
        log.info("media pool: %d worker(s) ready", len(started))

    async def run(
        self,
        payload: bytes,
        *,
        timeout_seconds: float,
        wait_seconds: float,
        taken: asyncio.Event | None = None,
    ) -> Outcome:
        """Runs one job. ``taken`` is set once a worker has the job: until then,
        cancelling the caller withdraws the job at no cost; from then on it costs
        the worker (killed and replaced, as it may be mid-job)."""
        try:
            with metrics.track_gauge(metrics.MEDIA_QUEUED):
                worker = await self._take(wait_seconds)
        except Unavailable as exc:
            if exc.reason == Reason.MEDIA_WORKERS_BUSY:
                metrics.MEDIA_FAILURES.labels("busy").inc()
            raise
        if taken is not None:
            taken.set()
        try:
            with metrics.track_gauge(metrics.MEDIA_BUSY):
                outcome = await worker.run(payload, timeout_seconds=timeout_seconds)
        except BaseException:
            self._replace(worker)
            raise
        if isinstance(outcome, Crashed):
            metrics.MEDIA_FAILURES.labels("crashed").inc()
        elif isinstance(outcome, TimedOut):
            metrics.MEDIA_FAILURES.labels("timed_out").inc()
        elif isinstance(outcome, Failed):
            metrics.MEDIA_FAILURES.labels("failed").inc()
        if self._closed and not isinstance(outcome, Answered):
            raise shutting_down()
        if isinstance(outcome, Answered) and worker.jobs < self._options.recycle_jobs:
            self._idle.put_nowait(worker)
        else:
            self._replace(worker)
        return outcome

    async def _take(self, wait_seconds: float) -> _Worker:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait_seconds
        while True:
            if self._closed:
                raise shutting_down()
            try:
                worker = self._idle.get_nowait()
            except asyncio.QueueEmpty:
                left = give_up - loop.time()
                if left <= 0:
                    raise busy(self._options.workers) from None
                # asyncio.timeout, not wait_for: cancelled here, Queue.get leaves the
                # worker in the queue, where wait_for (3.11) may drop one just handed.
                try:
                    async with asyncio.timeout(left):
                        worker = await self._idle.get()
                except TimeoutError:
                    raise busy(self._options.workers) from None
            if worker.alive:
                return worker
            self._replace(worker)  # died while idle (OOM killer, kill -9): not this job's

    def _replace(self, worker: _Worker) -> None:
        task = asyncio.create_task(self._replacement(worker))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _replacement(self, old: _Worker) -> None:
        await old.retire()  # cancelled by close(): close() kills it instead
        self._workers.discard(old)
        while not self._closed:
            try:
                new = await _Worker.start(self._command)
            except (OSError, WorkerStartError, TimeoutError) as exc:
                self._start_error = str(exc) or type(exc).__name__
                log.error("media pool: a replacement worker did not start: %s", exc)
                await asyncio.sleep(RESTART_DELAY_SECONDS)
                continue
            if self._closed:
                await new.kill()
                return
            self._start_error = None
            self._workers.add(new)
            self._idle.put_nowait(new)
            return

    async def close(self) -> None:
        """Stops every worker, busy or idle, and waits until each has exited."""
        self._closed = True
        for task in list(self._replacing):
            task.cancel()
        await asyncio.gather(*self._replacing, return_exceptions=True)
        await asyncio.gather(*(w.kill() for w in list(self._workers)), return_exceptions=True)
        self._workers.clear()


def busy(workers: int) -> Unavailable:
    return Unavailable(
        Reason.MEDIA_WORKERS_BUSY,
        f"all {workers} media worker(s) are busy; retry shortly",
        retry_after_seconds=BUSY_RETRY_AFTER_SECONDS,
    )


def shutting_down() -> Unavailable:
    return Unavailable(
        Reason.SHUTTING_DOWN, "the server is shutting down; retry on another replica"
    )
