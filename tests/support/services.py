"""Start real PostgreSQL, Redis and MinIO servers for tests and benchmarks.

Why real servers: the storage layers must be exercised against the same SQL dialect, wire
protocols and S3 semantics they meet in production; fakes hide exactly the bugs we care about.
Each server listens on a free 127.0.0.1 port inside its own temporary directory, so parallel
sessions and fresh clones never collide, and ``stop()`` leaves nothing behind.
Binaries come from ``scripts/install-deps.sh``.
"""

from __future__ import annotations

import glob
import http.client
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from support.stoppable import Stoppable

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
_START_ATTEMPTS = 3  # free_port() can race with other processes; retry with a new port.
_S = TypeVar("_S", bound="_Server")


class MissingBinaryError(RuntimeError):
    """A server binary is not installed; the message says how to install it."""


class ServerStartError(RuntimeError):
    """A server exited or did not become ready in time; the message carries its log tail."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tools_dir() -> Path:
    """The shared dir where install-deps.sh puts Go-built tools, reused by every clone."""
    default = Path.home() / ".cache" / "vidscan" / "bin"
    return Path(os.environ.get("VIDSCAN_TOOLS", default))


def find_binary(name: str) -> Path:
    """Locate ``name`` on PATH, then in tools_dir(), then in Debian's /usr/lib/postgresql/*/bin.

    Debian keeps the PostgreSQL server binaries off PATH, hence the last, newest-first, lookup.
    """
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    pg_dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for directory in [str(tools_dir()), *pg_dirs]:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise MissingBinaryError(
        f"{name!r} not found on PATH, in {tools_dir()} or "
        "/usr/lib/postgresql/*/bin; run scripts/install-deps.sh"
    )


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


@dataclass(kw_only=True)
class _Server(Stoppable):
    """A running server process plus the temp dir it owns; usable as a context manager.

    ``halt``/``kill`` stop the process but keep its data and port, so that
    ``restart`` brings the same server back (an outage, not a new server)."""

    process: subprocess.Popen[bytes] = field(repr=False)
    tempdir: Path
    stop_signal: int = field(default=signal.SIGTERM, repr=False)
    respawn: Callable[[], subprocess.Popen[bytes]] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the process (see _terminate), then delete its temp dir. Idempotent."""
        _terminate(self.process, self.stop_signal)
        shutil.rmtree(self.tempdir, ignore_errors=True)

    def halt(self) -> None:
        """A clean stop of the process; data and port stay for ``restart``."""
        _terminate(self.process, self.stop_signal)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as in a crash."""
        _terminate(self.process, signal.SIGKILL)

    def restart(self) -> None:
        """Starts the same server again on the same port and data (after halt/kill)."""
        assert self.respawn is not None, "this server cannot be restarted"
        assert self.process.poll() is not None, "stop it first"
        self.process = self.respawn()


@dataclass(kw_only=True)
class PostgresServer(_Server):
    """PostgreSQL with database ``vidscan``; ``url`` is an SQLAlchemy asyncpg URL."""

    url: str


@dataclass(kw_only=True)
class RedisServer(_Server):
    """Redis without persistence; ``url`` is ``redis://127.0.0.1:PORT/0``."""

    url: str


@dataclass(kw_only=True)
class MinioServer(_Server):
    """MinIO S3 server; pass these fields to botocore/aiobotocore ``create_client``."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str


def _terminate(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig``, wait up to STOP_TIMEOUT_S, then SIGKILL; always reaps the child."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run(
    argv: Sequence[str | Path],
    *,
    run_as: pwd.struct_passwd | None,
    stdin: bytes = b"",
) -> bytes:
    """Run a setup command (as ``run_as`` if given) and return its stderr.

    Raises ServerStartError with that stderr when it fails.
    """
    result = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        check=False,
        user=run_as.pw_uid if run_as else None,
        group=run_as.pw_gid if run_as else None,
        extra_groups=[] if run_as else None,
    )
    if result.returncode != 0:
        raise ServerStartError(f"{argv[0]} failed: {result.stderr.decode(errors='replace')}")
    return result.stderr


def _spawn(
    argv: Sequence[str],
    *,
    tempdir: Path,
    ready: Callable[[], bool],
    env: dict[str, str] | None = None,
    run_as: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` logging to tempdir/server.log and poll ``ready`` until it is true.

    On failure the process is stopped and ServerStartError carries the log tail.
    """
    log = tempdir / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tempdir,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            _terminate(proc, signal.SIGKILL)
            tail = log.read_text(errors="replace")[-2000:]
            raise ServerStartError(f"{argv[0]} did not become ready (exit={proc.poll()}):\n{tail}")
        time.sleep(0.05)
    return proc


def _start_with_retries(start: Callable[[], _S], *, tempdir: Path) -> _S:
    """Call ``start`` up to _START_ATTEMPTS times; remove tempdir if every attempt fails."""
    for attempt in range(_START_ATTEMPTS):
        try:
            return start()
        except ServerStartError:
            if attempt == _START_ATTEMPTS - 1:
                shutil.rmtree(tempdir, ignore_errors=True)
                raise
    raise AssertionError("unreachable")


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _postgres_user() -> pwd.struct_passwd | None:
    """The unprivileged user postgres runs as when we are root (postgres refuses root).

    ``postgres`` comes with Debian's package; install-deps.sh creates it when missing.
    """
    if os.geteuid() != 0:
        return None
    name = os.environ.get("VIDSCAN_PG_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise MissingBinaryError(
            f"running as root needs system user {name!r} for postgres; run scripts/install-deps.sh"
        ) from None


def _world_traversable(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def start_postgres(*, workdir: Path) -> PostgresServer:
    """initdb a throwaway cluster (fsync off), create database ``vidscan`` and serve on TCP only."""
    postgres = find_binary("postgres").resolve()
    initdb = postgres.parent / "initdb"  # must match the server's major version
    run_as = _postgres_user()
    # As root, the postgres user must reach the data dir; pytest's tmp dirs are 0700 root.
    parent = workdir if run_as is None or _world_traversable(workdir) else None
    tempdir = Path(tempfile.mkdtemp(prefix="postgres-", dir=parent))
    if run_as is not None:
        os.chown(tempdir, run_as.pw_uid, run_as.pw_gid)
    password = secrets.token_hex(12)
    data = tempdir / "data"
    pwfile = tempdir / "pwfile"
    pwfile.write_text(password)
    if run_as is not None:
        os.chown(pwfile, run_as.pw_uid, run_as.pw_gid)
    try:
        flags = "-U vidscan -A scram-sha-256 --locale=C -E UTF8 --no-sync --no-instructions"
        _run([initdb, "-D", data, f"--pwfile={pwfile}", *flags.split()], run_as=run_as)
        # Single-user mode needs no client binaries and no port to create the database.
        stderr = _run(
            [postgres, "--single", "-D", data, "-F", "postgres"],
            run_as=run_as,
            stdin=b"CREATE DATABASE vidscan;\n",
        )
        if b"ERROR" in stderr:
            raise ServerStartError(f"CREATE DATABASE failed: {stderr.decode(errors='replace')}")
    except ServerStartError:
        shutil.rmtree(tempdir, ignore_errors=True)
        raise
    finally:
        pwfile.unlink(missing_ok=True)

    def spawn(port: int) -> subprocess.Popen[bytes]:
        def ready() -> bool:  # pg_ctl's own test: postmaster.pid status line says "ready"
            try:
                lines = (data / "postmaster.pid").read_text().splitlines()
            except OSError:
                return False
            return len(lines) >= 8 and lines[7].strip() == "ready" and _tcp_open(port)

        flags = f"-h 127.0.0.1 -p {port} -F -c unix_socket_directories= " + (
            "-c full_page_writes=off -c synchronous_commit=off"  # throwaway data: favour speed
        )
        return _spawn(
            [str(postgres), "-D", str(data), *flags.split()],
            tempdir=tempdir,
            ready=ready,
            run_as=run_as,
        )

    def start() -> PostgresServer:
        port = free_port()
        proc = spawn(port)
        url = f"postgresql+asyncpg://vidscan:{password}@127.0.0.1:{port}/vidscan"
        # SIGINT = "fast" shutdown: does not wait for clients that forgot to disconnect.
        return PostgresServer(
            process=proc,
            tempdir=tempdir,
            stop_signal=signal.SIGINT,
            url=url,
            respawn=lambda: spawn(port),
        )

    return _start_with_retries(start, tempdir=tempdir)


def start_redis(*, workdir: Path, persistent: bool = False) -> RedisServer:
    """Start redis-server with persistence off (no RDB, no AOF), or with an AOF
    fsynced on every write (``persistent``: what production runs for sessions)."""
    binary = find_binary("redis-server")
    tempdir = Path(tempfile.mkdtemp(prefix="redis-", dir=workdir))
    persistence = "appendonly yes\nappendfsync always\n" if persistent else "appendonly no\n"

    def spawn(port: int) -> subprocess.Popen[bytes]:
        def ready() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(64).startswith(b"+PONG")
            except OSError:
                return False

        conf = tempdir / "redis.conf"
        conf.write_text(f'bind 127.0.0.1\nport {port}\nsave ""\n{persistence}dir "{tempdir}"\n')
        return _spawn([str(binary), str(conf)], tempdir=tempdir, ready=ready)

    def start() -> RedisServer:
        port = free_port()
        return RedisServer(
            process=spawn(port),
            tempdir=tempdir,
            url=f"redis://127.0.0.1:{port}/0",
            respawn=lambda: spawn(port),
        )

    return _start_with_retries(start, tempdir=tempdir)


def _http_ok(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_minio(*, workdir: Path) -> MinioServer:
    """Start a single-drive MinIO; waits for /minio/health/live (and /ready: S3 calls work)."""
    binary = find_binary("minio")
    tempdir = Path(tempfile.mkdtemp(prefix="minio-", dir=workdir))
    access_key, secret_key, region = "vidscan", secrets.token_hex(16), "us-east-1"
    env = {
        **os.environ,
        "MINIO_ROOT_USER": access_key,
        "MINIO_ROOT_PASSWORD": secret_key,
        "MINIO_SITE_REGION": region,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
        "HOME": str(tempdir),
    }  # MinIO creates ~/.minio; keep it out of the real HOME

    def spawn(port: int, console: int) -> subprocess.Popen[bytes]:
        def ready() -> bool:
            return _http_ok(port, "/minio/health/live") and _http_ok(port, "/minio/health/ready")

        addresses = f"--address 127.0.0.1:{port} --console-address 127.0.0.1:{console}"
        certs, data = str(tempdir / "certs"), str(tempdir / "data")
        argv = [str(binary), "server", "--quiet", *addresses.split(), "--certs-dir", certs, data]
        return _spawn(argv, tempdir=tempdir, ready=ready, env=env)

    def start() -> MinioServer:
        port, console = free_port(), free_port()
        return MinioServer(
            process=spawn(port, console),
            respawn=lambda: spawn(port, console),
            tempdir=tempdir,
            endpoint_url=f"http://127.0.0.1:{port}",
            access_key=access_key,
            secret_key=secret_key,
            region=region,
        )

    return _start_with_retries(start, tempdir=tempdir)


@dataclass(kw_only=True)
class JaegerServer(_Server):
    """Jaeger v2 with in-memory storage: an OTLP receiver plus its query API.

    ``otlp_endpoint`` is for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (gRPC, plain text);
    ``query_url`` serves ``/api/traces`` (the JSON the Jaeger UI reads)."""

    otlp_endpoint: str
    query_url: str


_JAEGER_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: []
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def start_jaeger(*, workdir: Path) -> JaegerServer:
    """Start Jaeger (built by scripts/install-deps.sh from tools/jaeger/go.mod); waits
    until the OTLP port accepts connections and the query API answers."""
    binary = find_binary("jaeger")
    tempdir = Path(tempfile.mkdtemp(prefix="jaeger-", dir=workdir))

    def start() -> JaegerServer:
        otlp, query, query_grpc = free_port(), free_port(), free_port()
        config = tempdir / "jaeger.yaml"
        config.write_text(
            _JAEGER_CONFIG.format(otlp_grpc=otlp, query_http=query, query_grpc=query_grpc)
        )

        def ready() -> bool:
            return _tcp_open(otlp) and _http_ok(query, "/api/services")

        argv = [str(binary), "--config", str(config)]
        return JaegerServer(
            process=_spawn(argv, tempdir=tempdir, ready=ready, env={**os.environ}),
            tempdir=tempdir,
            otlp_endpoint=f"http://127.0.0.1:{otlp}",
            query_url=f"http://127.0.0.1:{query}",
        )

    return _start_with_retries(start, tempdir=tempdir)
