"""Health that tells the truth: PostgreSQL, Redis and MinIO of this module's own are
stopped and restarted in turn; the dependency's health name and the overall status
go NOT_SERVING and come back, while the liveness name stays SERVING."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from conftest import Running, service_settings
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.services import (
    MinioServer,
    PostgresServer,
    RedisServer,
    start_minio,
    start_postgres,
    start_redis,
)

from server.health import LIVENESS
from server.main import SERVICE_NAMES, build_app

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NAMES = ("", *SERVICE_NAMES, LIVENESS, "vidscan.database", "vidscan.sessions", "vidscan.objects")


@dataclass
class Outage:
    postgres: PostgresServer
    redis: RedisServer
    minio: MinioServer


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    root = tmp_path_factory.mktemp("health")
    dirs = {name: root / name for name in ("pg", "redis", "minio")}
    for path in dirs.values():
        path.mkdir()
    with (
        start_postgres(workdir=dirs["pg"]) as postgres,
        start_redis(workdir=dirs["redis"]) as redis_server,
        start_minio(workdir=dirs["minio"]) as minio,
    ):
        yield Outage(postgres, redis_server, minio)


@pytest.fixture
async def running(
    outage: Outage, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    settings = service_settings(
        database_url=outage.postgres.url,
        redis_url=outage.redis.url,
        minio=outage.minio,
        bucket="vidscan-health",
        data_dir=tmp_path_factory.mktemp("health-data"),
        health_interval_seconds=0.2,
        health_probe_timeout_seconds=1.0,
    )
    app = await build_app(settings)
    await app.server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield Running(app, settings, channel)
    finally:
        await channel.close()
        await app.stop(1.0)


async def statuses(running: Running) -> dict[str, int]:
    stub = health_pb2_grpc.HealthStub(running.channel)
    found = {}
    for name in NAMES:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        found[name] = int(reply.status)
    return found


async def until(running: Running, what: str, condition: Callable[[dict[str, int]], bool]) -> None:
    deadline = time.monotonic() + 60
    while True:
        current = await statuses(running)
        if condition(current):
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {current}"
        await asyncio.sleep(0.2)


def all_serving(current: dict[str, int]) -> bool:
    return all(status == SERVING for status in current.values())


@pytest.mark.parametrize(
    ("dependency", "name"),
    [
        ("postgres", "vidscan.database"),
        ("redis", "vidscan.sessions"),
        ("minio", "vidscan.objects"),
    ],
)
async def test_an_unreachable_dependency_makes_the_service_not_ready(
    running: Running, outage: Outage, dependency: str, name: str
) -> None:
    server = getattr(outage, dependency)
    await until(running, "everything serving", all_serving)
    await asyncio.to_thread(server.halt)
    try:

        def down(current: dict[str, int]) -> bool:
            return bool(current[name] == NOT_SERVING and current[""] == NOT_SERVING)

        await until(running, f"{name} NOT_SERVING", down)
        current = await statuses(running)
        assert all(current[s] == NOT_SERVING for s in SERVICE_NAMES)
        assert current[LIVENESS] == SERVING  # liveness never follows a dependency
        others = {"vidscan.database", "vidscan.sessions", "vidscan.objects"} - {name}
        assert all(current[o] == SERVING for o in others), current
    finally:
        await asyncio.to_thread(server.restart)
    await until(running, "everything serving again", all_serving)


async def test_draining_stays_not_serving_while_dependencies_are_fine(running: Running) -> None:
    await until(running, "everything serving", all_serving)
    running.app.admission.drain()
    await running.app.health.set("", NOT_SERVING)  # what App.stop does first
    await asyncio.sleep(1.0)  # several probe rounds
    current = await statuses(running)
    assert current[""] == NOT_SERVING
    assert current["vidscan.database"] == SERVING
    assert current[LIVENESS] == SERVING
