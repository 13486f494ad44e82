"""What every scenario shares: the backing services, a vidscan server process,
test files, RSS sampling, statistics and tool installation.

Services come from the test suite's own helpers (tests/support), so the benchmark
runs vidscan exactly as the tests do: real PostgreSQL, Redis and MinIO on loopback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr
from support.process import ServerProcess
from support.services import (
    MinioServer,
    PostgresServer,
    RedisServer,
    start_minio,
    start_postgres,
    start_redis,
    tools_dir,
)
from support.videos import SPECS, make_video
from vidscan.v1 import upload_pb2, upload_pb2_grpc

from server.config import Settings
from server.main import token_authority

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CACHE = RESULTS / "tmp"  # gitignored: generated clips and big files live here
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
MB = 1_000_000  # throughput is reported in MB/s (10^6 bytes per second)
BUCKET = "vidscan-bench"
MAX_UPLOAD = 2 * GIB  # part_size_for(2 GiB) is still 8 MiB, the default part size

# Go tools the scenarios drive, pinned: `ghz@latest` resolves to an old v0.93.0 on the
# module proxy (later tags are not listed there), which predates sprig templates.
GO_TOOLS = {
    "tusd": "github.com/tus/tusd/v2/cmd/tusd@v2.9.1",
    "ghz": "github.com/bojand/ghz/cmd/ghz@v0.120.0",
}


# -- statistics -------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured quantity: every run's value, summarised as median [min, max]."""

    name: str
    unit: str
    runs: list[float]
    note: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": statistics.median(self.runs),
            "min": min(self.runs),
            "max": max(self.runs),
            "runs": [round(r, 4) for r in self.runs],
            "note": self.note,
        }


@dataclass
class Section:
    """A scenario's output: figures, derived ratios and free-form notes."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, unit: str, runs: list[float], note: str = "") -> Figure:
        figure = Figure(name, unit, runs, note)
        self.figures.append(figure)
        return figure

    def median(self, name: str) -> float:
        for figure in self.figures:
            if figure.name == name:
                return statistics.median(figure.runs)
        raise KeyError(name)


def repeat(runs: int, measure: Callable[[int], float]) -> list[float]:
    return [measure(i) for i in range(runs)]


# -- files --------------------------------------------------------------------------------


def small_clip() -> bytes:
    """A 1 s 160x120 H.264 MP4 from the test suite's generator (a few KiB)."""
    path = CACHE / "small.mp4"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        make_video(path, spec=SPECS["mp4"])
    return path.read_bytes()


def padded_video(size: int) -> Path:
    """A valid MP4 of exactly ``size`` bytes: a real clip, then one `free` box.

    A `free` box after `moov` is legal MP4 that players and PyAV skip, so vidscan
    accepts the file while the bytes still flow through every check. The file is
    sparse (zeros), so making a 1 GiB one costs no disk writes.
    """
    path = CACHE / f"padded-{size}.mp4"
    if path.is_file() and path.stat().st_size == size:
        return path
    clip = small_clip()
    pad = size - len(clip)
    assert 8 <= pad < 2**32, "the 32-bit box form is enough up to 4 GiB"
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        out.write(clip)
        out.write(struct.pack(">I4s", pad, b"free"))
        out.truncate(size)
    _check_decodes(tmp)
    tmp.rename(path)
    return path


def _check_decodes(path: Path) -> None:
    import av

    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(container.streams.video[0]))
    assert frames > 0, f"PyAV decoded no frame of {path}"


def file_chunks(path: Path, chunk: int) -> Iterator[bytes]:
    with path.open("rb", buffering=0) as source:
        while piece := source.read(chunk):
            yield piece


# -- process memory -------------------------------------------------------------------


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


class PeakRss(AbstractContextManager["PeakRss"]):
    """Peak resident memory of a process during a block.

    Resets the kernel's high-water mark (VmHWM) on entry where allowed (writing 5 to
    /proc/PID/clear_refs) and also samples VmRSS every 50 ms; the peak is the larger
    of the two, so a spike between samples is not missed.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.before = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as refs:
                refs.write("5")
        except OSError:
            pass
        self.before = rss_bytes(self.pid)
        self.peak = self.before
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with suppress(OSError, RuntimeError):
            self.peak = max(self.peak, _status_kib(self.pid, "VmHWM") * 1024)


# -- services and the server -------------------------------------------------------------


@dataclass
class Env:
    """PostgreSQL, Redis and MinIO for the whole run, plus a scratch directory."""

    workdir: Path
    postgres: PostgresServer
    redis: RedisServer
    minio: MinioServer
    quick: bool

    def settings(self, **overrides: Any) -> Settings:
        base = Settings(
            grpc_listen="127.0.0.1:0",
            database_url=self.postgres.url,
            redis_url=self.redis.url,
            s3_endpoint_url=self.minio.endpoint_url,
            s3_bucket=BUCKET,
            s3_region=self.minio.region,
            s3_access_key_id=self.minio.access_key,
            s3_secret_access_key=SecretStr(self.minio.secret_key),
            data_dir=self.workdir / "server-data",
            janitor_interval_seconds=3600,
            shutdown_grace_seconds=5,
            max_upload_bytes=MAX_UPLOAD,
            default_upload_quota=1_000_000,
        )
        return base.model_copy(update=overrides)

    def s3_client(self, *, lean: bool = False) -> Any:
        """An aiobotocore S3 client on MinIO with the server's connection options
        (server/storage/s3.py), botocore's defaults otherwise (CRC32 checksums, payload
        signed over plain HTTP); ``lean``: no checksums and UNSIGNED-PAYLOAD, the least
        work per byte botocore can do."""
        lean_options: dict[str, Any] = (
            {
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            }
            if lean
            else {}
        )
        config = AioConfig(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=32,
            s3={"addressing_style": "path", **({"payload_signing_enabled": False} if lean else {})},
            **lean_options,
        )
        return get_session().create_client(
            "s3",
            endpoint_url=self.minio.endpoint_url,
            region_name=self.minio.region,
            aws_access_key_id=self.minio.access_key,
            aws_secret_access_key=self.minio.secret_key,
            config=config,
        )

    def object_count(self) -> int:
        async def count() -> int:
            found = 0
            async with self.s3_client() as s3:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                async for page in pages:
                    found += len(page.get("Contents", []))
            return found

        return asyncio.run(count())

    def empty_bucket(self) -> None:
        """Deletes every object and pending multipart upload (keeps the disk small)."""

        async def empty() -> None:
            async with self.s3_client() as s3:
                try:
                    await s3.head_bucket(Bucket=BUCKET)
                except Exception:
                    await s3.create_bucket(Bucket=BUCKET)
                    return
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                async for page in pages:
                    for item in page.get("Contents", []):
                        await s3.delete_object(Bucket=BUCKET, Key=item["Key"])
                pending = await s3.list_multipart_uploads(Bucket=BUCKET)
                for upload in pending.get("Uploads", []):
                    await s3.abort_multipart_upload(
                        Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]
                    )

        asyncio.run(empty())


@contextmanager
def services(quick: bool) -> Iterator[Env]:
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="vidscan-bench-"))
    try:
        with (
            start_postgres(workdir=_sub(workdir, "pg")) as pg,
            start_redis(workdir=_sub(workdir, "redis")) as redis,
            start_minio(workdir=_sub(workdir, "minio")) as minio,
        ):
            env = Env(workdir=workdir, postgres=pg, redis=redis, minio=minio, quick=quick)
            env.empty_bucket()  # creates the bucket for tusd and the raw client
            yield env
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _sub(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir(exist_ok=True)
    return path


@dataclass
class Server:
    """A vidscan server process (ServerProcess from the tests) and a user to call it as."""

    process: ServerProcess
    settings: Settings
    token: str  # one user for the whole run (ghz)

    def new_user_token(self) -> str:
        """A token for a fresh user: vidscan deduplicates a user's identical uploads,
        so each benchmark upload comes from its own user to take the full path."""
        return token_authority(self.settings).mint(f"bench-{uuid.uuid4().hex[:12]}")

    def user_tokens(self, count: int, prefix: str = "bench-load") -> list[str]:
        """Tokens for ``count`` distinct users (``PREFIX-000`` ...): load spread over
        many users, as real traffic is, so that no one user meets the per-user limits
        (request rates, active sessions, open streams)."""
        authority = token_authority(self.settings)
        return [authority.mint(f"{prefix}-{i:03d}") for i in range(count)]

    @property
    def target(self) -> str:
        return self.process.target

    @property
    def pid(self) -> int:
        return self.process.process.pid

    def stub(self, channel: grpc.Channel) -> Any:
        return upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]

    def new_session(self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> str:
        request = upload_pb2.CreateUploadSessionRequest()
        response = self.stub(channel).CreateUploadSession(request, metadata=metadata)
        return str(response.session.session_id)

    def wait_serving(self, service: str = "", timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(service=service))
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vidscan health {service!r} not SERVING")
                time.sleep(0.5)


@contextmanager
def vidscan(env: Env, name: str, **overrides: Any) -> Iterator[Server]:
    settings = env.settings(**overrides)
    log = env.workdir / f"server-{name}-{uuid.uuid4().hex[:6]}.log"
    process = ServerProcess(settings, log_path=log)
    server = Server(process, settings, token_authority(settings).mint("bench-load"))
    try:
        server.wait_serving()
        yield server
    finally:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(30)
        process.close()


# -- gRPC upload client -------------------------------------------------------------------


def grpc_upload(
    server: Server,
    chunks: Iterator[bytes],
    *,
    channel: grpc.Channel | None = None,
    on_last: Callable[[], None] | None = None,
    timeout: float = 900.0,
    model: str = "",
) -> Any:
    """One UploadVideo on a new session, with the sync API (see tests/support/rpc.py
    for why sync). ``on_last`` runs when the last chunk has been handed to gRPC."""

    def messages(session: str) -> Iterator[Any]:
        yield upload_pb2.UploadVideoRequest(
            header=upload_pb2.UploadHeader(session_id=session, filename="bench.mp4", model=model)
        )
        for piece in chunks:
            yield upload_pb2.UploadVideoRequest(chunk=piece)
        if on_last is not None:
            on_last()
        yield upload_pb2.UploadVideoRequest(finish_write=True)

    own = channel is None
    # A channel of its own gets a connection of its own (as separate clients would):
    # without a local subchannel pool, grpc-core shares one connection per target.
    channel = channel or grpc.insecure_channel(
        server.target, options=[("grpc.use_local_subchannel_pool", 1)]
    )
    try:
        metadata = (("authorization", f"Bearer {server.new_user_token()}"),)
        requests = messages(server.new_session(channel, metadata))
        call = server.stub(channel).UploadVideo
        return call(requests, metadata=metadata, timeout=timeout).result
    finally:
        if own:
            channel.close()


# -- tools and versions -------------------------------------------------------------------


def go_tool(name: str) -> Path:
    """The path of a pinned Go tool, `go install`ed into tools_dir() when missing."""
    path = tools_dir() / name
    if path.is_file():
        return path
    if shutil.which("go") is None:
        raise RuntimeError(f"{name} is missing and Go is not installed to build it")
    print(f"bench: go install {GO_TOOLS[name]} -> {tools_dir()} (takes minutes)", flush=True)
    tools_dir().mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["go", "install", GO_TOOLS[name]],
        env={**os.environ, "GOBIN": str(tools_dir()), "GOTOOLCHAIN": "local"},
        check=True,
    )
    return path


def go_module_version(binary: Path) -> str:
    """The main module version a Go binary was built from (`go version -m`)."""
    try:
        out = subprocess.run(
            ["go", "version", "-m", str(binary)], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "mod":
            return f"{parts[1]} {parts[2]}"
    return "unknown"


# -- REST (gateway) upload client ---------------------------------------------------------

BOUNDARY = "vidscan-bench-boundary"
FILE_HEAD = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="file"; filename="bench.mp4"\r\n'
    "Content-Type: video/mp4\r\n\r\n"
).encode()
CLOSING = f"\r\n--{BOUNDARY}--\r\n".encode()


def rest_upload(http: Any, server: Server, chunks: Iterator[bytes], size: int | None = None) -> Any:
    """POSTs one multipart upload to the gateway, the file streamed from ``chunks``
    (``http`` is an httpx.Client on the gateway). Returns the httpx response."""
    auth = {"Authorization": f"Bearer {server.new_user_token()}"}
    created = http.post("/v1/dashboard/upload/sessions", json={}, headers=auth)
    created.raise_for_status()
    session = created.json()["session_id"]

    def body() -> Iterator[bytes]:
        yield FILE_HEAD
        yield from chunks
        yield CLOSING

    headers = {
        **auth,
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }
    if size is not None:
        headers["Content-Length"] = str(len(FILE_HEAD) + size + len(CLOSING))
    return http.post(f"/v1/dashboard/upload/{session}", content=body(), headers=headers)


@contextmanager
def gateway(env: Env, server: Server) -> Iterator[Any]:
    """The REST gateway (built and started by the tests' helper) in front of ``server``."""
    from support.gateway import start_gateway

    with start_gateway(
        upstream=server.target, max_upload_bytes=MAX_UPLOAD, workdir=env.workdir
    ) as running:
        yield running
