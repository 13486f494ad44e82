"""Session fixtures: real PostgreSQL, Redis and MinIO on free ports, and a vidscan
server built by the real composition root against them.

Each test gets its own user id, so quotas, sessions, rows and object-key prefixes
never overlap between tests while the servers are shared.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from support.rpc import Client
from support.services import (
    MinioServer,
    PostgresServer,
    RedisServer,
    start_minio,
    start_postgres,
    start_redis,
)
from support.triton import TritonServer, start_triton
from support.videos import SPECS, make_video

from server.config import Settings
from server.db.engine import create_engine
from server.main import App, build_app, token_authority
from server.storage.s3 import S3ObjectStore

# The containerised stack (test_stack.py) needs its images built first: `make test` and
# `make stack-test` build them (make stack-images) and set VIDSCAN_STACK_TEST=1; a bare
# pytest run (make test-fast) leaves the module out.
collect_ignore = [] if os.environ.get("VIDSCAN_STACK_TEST") == "1" else ["test_stack.py"]

BUCKET = "vidscan-test"
MODELS = Path(__file__).resolve().parents[1] / "models"


def _subdir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vidscan")


@pytest.fixture(scope="session")
def postgres(workdir: Path) -> Iterator[PostgresServer]:
    with start_postgres(workdir=_subdir(workdir, "pg")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    with start_redis(workdir=_subdir(workdir, "redis")) as server:
        yield server


@pytest.fixture(scope="session")
def minio(workdir: Path) -> Iterator[MinioServer]:
    with start_minio(workdir=_subdir(workdir, "minio")) as server:
        yield server


@pytest.fixture(scope="session")
def real_settings(
    workdir: Path, postgres: PostgresServer, redis_server: RedisServer, minio: MinioServer
) -> Settings:
    """Settings for vidscan on the real services (what production looks like)."""
    return service_settings(
        database_url=postgres.url,
        redis_url=redis_server.url,
        minio=minio,
        bucket=BUCKET,
        data_dir=workdir / "server-data",
        shutdown_grace_seconds=5,
    )


def service_settings(
    *,
    database_url: str,
    redis_url: str,
    minio: MinioServer,
    bucket: str,
    data_dir: Path,
    **overrides: Any,
) -> Settings:
    """vidscan on these PostgreSQL, Redis and MinIO servers, on a free port."""
    return Settings(
        grpc_listen="127.0.0.1:0",
        database_url=database_url,
        redis_url=redis_url,
        s3_endpoint_url=minio.endpoint_url,
        s3_bucket=bucket,
        s3_region=minio.region,
        s3_access_key_id=minio.access_key,
        s3_secret_access_key=SecretStr(minio.secret_key),
        data_dir=data_dir,
        janitor_interval_seconds=3600,
        # One process unless a test asks for more (tests/test_processes.py): a test
        # that signals or inspects "the server process" means the one serving.
        **{"processes": 1, **overrides},
    )


@pytest.fixture(scope="session")
def embedded_settings(workdir: Path) -> Settings:
    """Settings for the embedded default: SQLite, filesystem store, memory sessions."""
    return Settings(
        grpc_listen="127.0.0.1:0",
        data_dir=workdir / "embedded-data",
        janitor_interval_seconds=3600,
        shutdown_grace_seconds=5,
    )


@dataclass
class Running:
    app: App
    settings: Settings
    channel: grpc.aio.Channel

    def client(self, user_id: str | None = None) -> Client:
        user = user_id or f"user-{uuid.uuid4().hex[:12]}"
        return Client(self.channel, token_authority(self.settings).mint(user), self.target)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.port}"


StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_server(real_settings: Settings) -> AsyncIterator[StartServer]:
    """Starts vidscan in-process (real adapters) with optional setting overrides."""
    running: list[Running] = []

    async def start(base: Settings | None = None, **overrides: Any) -> Running:
        settings = (base or real_settings).model_copy(update=overrides)
        app = await build_app(settings)
        await app.server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        running.append(Running(app, settings, channel))
        return running[-1]

    yield start
    for item in running:
        await item.channel.close()
        await item.app.stop(1.0)


@pytest.fixture
async def server(start_server: StartServer) -> Running:
    return await start_server()


@pytest.fixture
async def s3(real_settings: Settings) -> AsyncIterator[S3ObjectStore]:
    """A direct S3 client on the test bucket, to check what the server left behind."""
    store = await S3ObjectStore.open(
        endpoint_url=real_settings.s3_endpoint_url,
        bucket=BUCKET,
        region=real_settings.s3_region,
        access_key_id=real_settings.s3_access_key_id,
        secret_access_key=real_settings.s3_secret_access_key.get_secret_value(),
    )
    yield store
    await store.close()


@dataclass
class Database:
    url: str

    async def execute(self, sql: str, **params: Any) -> None:
        engine = create_engine(self.url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(sql), params)
        finally:
            await engine.dispose()

    async def scalar(self, sql: str, **params: Any) -> Any:
        engine = create_engine(self.url)
        try:
            async with engine.connect() as conn:
                return await conn.scalar(text(sql), params)
        finally:
            await engine.dispose()


@pytest.fixture
def db(real_settings: Settings) -> Database:
    return Database(real_settings.database_url)


@pytest.fixture
async def own_database(real_settings: Settings) -> AsyncIterator[Database]:
    """A fresh, empty database on the shared PostgreSQL server, for tests whose
    workers must see no other test's analyses (the recovery sweep would queue them)."""
    name = f"vidscan_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(real_settings.database_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(real_settings.database_url).set(database=name)
        yield Database(url.render_as_string(hide_password=False))
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture(scope="session")
def videos(workdir: Path) -> dict[str, bytes]:
    """One small clip per accepted container, generated once per session."""
    out = workdir / "videos"
    out.mkdir(exist_ok=True)
    return {
        name: make_video(out / f"{name}{spec.suffix}", spec=spec).read_bytes()
        for name, spec in SPECS.items()
    }


@pytest.fixture(scope="session")
def triton(workdir: Path) -> Iterator[TritonServer]:
    """A real tritonserver (CPU, python backend) serving the reference models."""
    server = start_triton(model_repository=MODELS, workdir=_subdir(workdir, "triton"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def detecting_server(start_server: StartServer, triton: TritonServer) -> Running:
    return await start_server(triton_url=triton.grpc_url)


@pytest.fixture(scope="session")
def big_video(workdir: Path) -> bytes:
    """~20 MiB of H.264 noise: large enough to span several S3 parts."""
    path = workdir / "videos" / "big.mp4"
    path.parent.mkdir(exist_ok=True)
    make_video(path, spec=SPECS["mp4"], seconds=10, fps=10, width=640, height=480, noise=True)
    data = path.read_bytes()
    assert len(data) > 16 * 1024 * 1024, len(data)
    return data
