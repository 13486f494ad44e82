"""One real round trip against each dependency server started by tests/support/services.py.

Why: proves install-deps.sh plus the start/stop helpers work on this machine before the
storage-layer tests rely on them, and that stopping leaves no process or temp dir behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiobotocore.session import get_session
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from support.services import (
    MinioServer,
    MissingBinaryError,
    PostgresServer,
    RedisServer,
    find_binary,
    free_port,
    start_minio,
    start_postgres,
    start_redis,
)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with start_postgres(workdir=tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with start_redis(workdir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    with start_minio(workdir=tmp_path_factory.mktemp("minio")) as server:
        yield server


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535


async def test_postgres_select_one(postgres: PostgresServer) -> None:
    engine = create_async_engine(postgres.url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            assert (await conn.execute(text("SELECT current_database()"))).scalar_one() == (
                "vidscan"
            )
    finally:
        await engine.dispose()


async def test_redis_set_get(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    try:
        await client.set("vidscan:probe", b"ok")
        assert await client.get("vidscan:probe") == b"ok"
        assert await client.config_get("save") == {"save": ""}  # no persistence
    finally:
        await client.aclose()


async def test_minio_bucket_object_multipart(minio: MinioServer) -> None:
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=minio.endpoint_url,
        aws_access_key_id=minio.access_key,
        aws_secret_access_key=minio.secret_key,
        region_name=minio.region,
    ) as s3:
        await s3.create_bucket(Bucket="vidscan-probe")
        await s3.put_object(Bucket="vidscan-probe", Key="a.bin", Body=b"\x00\x01video")
        got = await s3.get_object(Bucket="vidscan-probe", Key="a.bin")
        async with got["Body"] as body:
            assert await body.read() == b"\x00\x01video"
        upload = await s3.create_multipart_upload(Bucket="vidscan-probe", Key="big.bin")
        listed = await s3.list_multipart_uploads(Bucket="vidscan-probe")
        assert [u["UploadId"] for u in listed.get("Uploads", [])] == [upload["UploadId"]]
        await s3.abort_multipart_upload(
            Bucket="vidscan-probe", Key="big.bin", UploadId=upload["UploadId"]
        )


def test_stop_removes_process_and_tempdir(tmp_path: Path) -> None:
    server = start_redis(workdir=tmp_path)
    server.stop()
    assert server.process.poll() is not None
    assert not server.tempdir.exists()
    server.stop()  # idempotent


def test_missing_binary_names_install_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("VIDSCAN_TOOLS", str(tmp_path))
    with pytest.raises(MissingBinaryError, match=r"scripts/install-deps\.sh"):
        find_binary("minio")
