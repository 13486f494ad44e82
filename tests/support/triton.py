"""Run a REAL NVIDIA Triton Inference Server (CPU, python backend) for tests.

The server is the ``tritonserver`` binary laid out by ``scripts/install-triton.sh`` in
``${VIDSCAN_TOOLS_ROOT:-~/.cache/vidscan}/triton`` and is started through the
``run-tritonserver`` wrapper written there, which sets ``LD_LIBRARY_PATH`` (bundled libs +
the libpython of the model env's CPython build) and ``PATH`` (the model env ``pyenv/``, with
numpy<2 + onnxruntime, that the python-backend stubs embed).

Usage::

    server = start_triton(model_repository=REPO_ROOT / "models", workdir=tmp_path)
    try:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)
        ...
        server.kill()      # SIGKILL, e.g. for chaos tests
        server.restart()   # same ports, so existing client URLs stay valid
    finally:
        server.stop()

Before starting, the reference ONNX files are (re)built with
``models/build_reference_models.py`` (fast, idempotent) for the given repository.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import tritonclient.grpc as grpcclient

from support.stoppable import Stoppable

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "models" / "build_reference_models.py"
INSTALL_SCRIPT = "scripts/install-triton.sh"
DEFAULT_START_TIMEOUT_S = 120.0
# Graceful-shutdown budget handed to tritonserver (--exit-timeout-secs). Kept short: in
# Triton 2.51 an ensemble request whose member step fails stays counted as "in flight",
# so a graceful stop would otherwise wait the default 30 s after any such failure.
EXIT_TIMEOUT_S = 5


class TritonError(RuntimeError):
    """tritonserver could not be located, started or stopped."""


class TritonNotInstalledError(TritonError):
    """The tritonserver tool dir is missing; run scripts/install-triton.sh."""


def tools_root() -> Path:
    env = os.environ.get("VIDSCAN_TOOLS_ROOT")
    return Path(env) if env else Path.home() / ".cache" / "vidscan"


def triton_home() -> Path:
    """The install dir of scripts/install-triton.sh; raises if it is not installed."""
    home = tools_root() / "triton"
    launcher = home / "run-tritonserver"
    if not (launcher.is_file() and (home / "INSTALL_STAMP").is_file()):
        raise TritonNotInstalledError(
            f"tritonserver is not installed in {home}: run `{INSTALL_SCRIPT}` "
            "(set VIDSCAN_TOOLS_ROOT to use another tool root)"
        )
    return home


def build_reference_models(model_repository: Path) -> None:
    """Generate the reference ONNX files (no-op when they are already up to date)."""
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--quiet", "--model-repository", str(model_repository)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise TritonError(f"{BUILD_SCRIPT} failed ({result.returncode}):\n{result.stderr}")


def _free_ports(count: int) -> list[int]:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class TritonServer(Stoppable):
    """A tritonserver child process (its own process group) bound to 127.0.0.1."""

    def __init__(
        self,
        *,
        model_repository: Path,
        workdir: Path,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        self.home = triton_home()
        self.model_repository = model_repository.resolve()
        self.workdir = workdir.resolve()
        self.extra_args = extra_args
        self.start_timeout = start_timeout
        self.log_path = self.workdir / "tritonserver.log"
        self.http_port, self.grpc_port, self.metrics_port = _free_ports(3)
        self.ready_models: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- lifecycle ---------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            str(self.home / "run-tritonserver"),
            f"--model-repository={self.model_repository}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--disable-auto-complete-config",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            "--log-verbose=0",
            *self.extra_args,
        ]

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Launch tritonserver and block until the server and every model are ready."""
        if self.is_running():
            raise TritonError(f"tritonserver already running (pid {self.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"\n==== {' '.join(self.command())}\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,  # own process group: kill() also takes the stubs down
        )
        try:
            self.wait_ready(self.start_timeout)
        except BaseException:
            self.kill()
            raise

    def wait_ready(self, timeout: float) -> list[str]:
        """Wait until the server is ready and all repository models are READY."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        with grpcclient.InferenceServerClient(self.grpc_url) as client:
            while True:
                if not self.is_running():
                    code = self._process.returncode if self._process is not None else None
                    raise TritonError(
                        f"tritonserver exited with code {code} during startup; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    if client.is_server_ready(client_timeout=2.0):
                        index: Any = client.get_model_repository_index(client_timeout=2.0)
                        models = sorted(str(m.name) for m in index.models)
                        states = {str(m.name): str(m.state) for m in index.models}
                        if models and all(state == "READY" for state in states.values()):
                            self.ready_models = models
                            return models
                        last_error = f"model states {states}"
                except Exception as exc:  # server not up yet: connection refused etc.
                    last_error = str(exc).splitlines()[0] if str(exc) else repr(exc)
                if time.monotonic() >= deadline:
                    raise TritonError(
                        f"tritonserver not ready after {timeout:.0f}s ({last_error}); "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.2)

    def stop(self) -> None:
        """Graceful stop (SIGTERM); SIGKILL after a grace period."""
        self._stop(timeout=EXIT_TIMEOUT_S + 15.0)

    def _stop(self, *, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._killpg()
                process.wait(timeout=30)
        self._reap_group()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL tritonserver and its python-backend stubs (crash simulation)."""
        process = self._process
        if process is None:
            return
        self._killpg()
        process.wait(timeout=30)
        self._close_log()

    def restart(self) -> None:
        """Stop (gracefully if still running) and start again on the SAME ports."""
        self.stop()
        self.start()

    # -- helpers -----------------------------------------------------------------------
    def _killpg(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)

    def _reap_group(self) -> None:
        # Stubs exit by themselves once the server is gone; make sure none is left over.
        if self._process is None:
            return
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                os.killpg(self._process.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)
        self._killpg()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start_triton(
    *,
    model_repository: Path,
    workdir: Path,
    extra_args: tuple[str, ...] = (),
    start_timeout: float = DEFAULT_START_TIMEOUT_S,
) -> TritonServer:
    """Build the reference ONNX files, start tritonserver on free ports, wait until ready.

    Raises TritonNotInstalledError (naming scripts/install-triton.sh) when the server is
    not installed, TritonError when it fails to start or get ready within the timeout.
    """
    server = TritonServer(
        model_repository=model_repository,
        workdir=workdir,
        extra_args=extra_args,
        start_timeout=start_timeout,
    )
    build_reference_models(model_repository)
    for attempt in range(3):
        try:
            server.start()
            return server
        except TritonError:
            # Another process may have grabbed one of the probed ports; retry on new ones.
            if attempt == 2 or "address already in use" not in server.log_tail().lower():
                raise
            server.http_port, server.grpc_port, server.metrics_port = _free_ports(3)
    raise AssertionError("unreachable")
