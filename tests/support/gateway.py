"""Runs the REST gateway (gateway/bin/vidscan-gateway) as a real process for tests.

The binary is built with ``scripts/build-gateway.sh`` (which installs the protoc plugins
it needs) at most once per test session: when it is missing, or older than the Go
sources, go.mod/go.sum or the protos it is generated from (a stale binary is kept when
``go`` is not on PATH). ``start_gateway`` listens on a free port (``-listen
127.0.0.1:0 -addr-file``), waits for the address file, then for ``GET /healthz`` to
answer 200 (which needs the upstream gRPC server to be serving).

Everything here blocks; from async tests whose gRPC server runs on the same event loop,
call ``start_gateway`` and ``Gateway.stop`` through ``asyncio.to_thread`` so that the
server can answer the health check and drain in-flight calls.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from support.stoppable import Stoppable

REPO_ROOT = Path(__file__).resolve().parents[2]
GATEWAY_DIR = REPO_ROOT / "gateway"
BINARY = GATEWAY_DIR / "bin" / "vidscan-gateway"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-gateway.sh"

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
BUILD_TIMEOUT_S = 900.0

_build_lock = threading.Lock()
_built = False


class GatewayStartError(RuntimeError):
    """The gateway could not be built, exited, or did not become healthy in time."""


def _build_inputs() -> Iterable[Path]:
    """The files the binary is built from (sources, module files, protos, gen config)."""
    yield GATEWAY_DIR / "go.mod"
    yield GATEWAY_DIR / "go.sum"
    yield REPO_ROOT / "buf.gen.go.yaml"
    yield from GATEWAY_DIR.glob("*.go")
    yield from (GATEWAY_DIR / "cmd").rglob("*.go")
    yield from (GATEWAY_DIR / "internal").rglob("*.go")
    # The upload page: its embedded sources and what its bundle is built from.
    yield GATEWAY_DIR / "internal" / "page" / "static" / "index.html"
    yield GATEWAY_DIR / "internal" / "page" / "static" / "style.css"
    yield GATEWAY_DIR / "web" / "package.json"
    yield GATEWAY_DIR / "web" / "package-lock.json"
    yield from (GATEWAY_DIR / "web" / "src").rglob("*.js")
    yield from (REPO_ROOT / "protos" / "vidscan").rglob("*.proto")


def _is_stale(binary: Path) -> bool:
    built = binary.stat().st_mtime
    return any(p.is_file() and p.stat().st_mtime > built for p in _build_inputs())


def ensure_binary() -> Path:
    """Returns the gateway binary, building it first when needed (once per process)."""
    global _built
    with _build_lock:
        if _built:
            return BINARY
        missing = not BINARY.is_file()
        if missing or (_is_stale(BINARY) and shutil.which("go") is not None):
            result = subprocess.run(
                [str(BUILD_SCRIPT)],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
            if result.returncode != 0 or not BINARY.is_file():
                output = (result.stdout + result.stderr)[-4000:]
                raise GatewayStartError(
                    f"{BUILD_SCRIPT.name} failed ({result.returncode}):\n{output}"
                )
        _built = True
        return BINARY


def _read_vmrss(pid: int) -> int:
    """VmRSS of ``pid`` in bytes, from /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                value, unit = line.split()[1:3]
                assert unit == "kB", line
                return int(value) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def _http_status(host: str, port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


@dataclass(kw_only=True)
class Gateway(Stoppable):
    """A running gateway; ``base_url`` is ``http://127.0.0.1:PORT``."""

    process: subprocess.Popen[bytes] = field(repr=False)
    base_url: str
    tempdir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        """The gateway's resident set size right now (VmRSS)."""
        return _read_vmrss(self.pid)

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (the gateway drains), SIGKILL after STOP_TIMEOUT_S; removes its temp dir.

        Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.tempdir, ignore_errors=True)


def start_gateway(
    *,
    upstream: str,
    max_upload_bytes: int,
    workdir: Path | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    wait_healthy: bool = True,
) -> Gateway:
    """Starts the gateway in front of ``upstream`` (``host:port`` of the gRPC server).

    ``max_upload_bytes`` goes in as VIDSCAN_MAX_UPLOAD_BYTES, which must equal the
    server's setting. ``args`` are extra flags (they win over the environment); ``env``
    adds variables. With ``wait_healthy`` false only the listening address is awaited
    (for an upstream that is down on purpose).
    """
    binary = ensure_binary()
    tempdir = Path(tempfile.mkdtemp(prefix="gateway-", dir=workdir))
    addr_file = tempdir / "gw.addr"
    log_path = tempdir / "gateway.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VIDSCAN_")}
    environ["VIDSCAN_MAX_UPLOAD_BYTES"] = str(max_upload_bytes)
    environ.update(env or {})
    argv = [
        str(binary),
        "-listen",
        "127.0.0.1:0",
        "-addr-file",
        str(addr_file),
        "-upstream",
        upstream,
        "-access-log=false",
        "-shutdown-grace",
        "5s",
        *args,
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environ
        )
    gateway = Gateway(process=process, base_url="", tempdir=tempdir, log_path=log_path)
    try:
        host, port = _wait_for_addr(gateway, addr_file)
        gateway.base_url = f"http://{host}:{port}"
        if wait_healthy:
            _wait_healthy(gateway, host, port)
    except BaseException:
        gateway.stop()
        raise
    return gateway


def _check_alive(gateway: Gateway, deadline: float, what: str) -> None:
    if gateway.process.poll() is not None or time.monotonic() > deadline:
        raise GatewayStartError(
            f"vidscan-gateway {what} (exit={gateway.process.poll()}):\n{gateway.log_tail()}"
        )


def _wait_for_addr(gateway: Gateway, addr_file: Path) -> tuple[str, int]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        # The gateway writes the file atomically (tmp + rename), so any content is whole.
        if addr_file.is_file():
            host, _, port = addr_file.read_text().strip().rpartition(":")
            return host, int(port)
        _check_alive(gateway, deadline, "did not write its address")
        time.sleep(0.02)


def _wait_healthy(gateway: Gateway, host: str, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while _http_status(host, port, "/healthz") != 200:
        _check_alive(gateway, deadline, "did not become healthy")
        time.sleep(0.05)
