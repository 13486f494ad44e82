"""The service config shipped with the client: a stub channel built with
``vidscan_client.channel_options()`` retries an idempotent read on UNAVAILABLE by
itself (counted on the server: four attempts, one call).

grpc.aio sends an aborted call's status before the handler's ``finally`` blocks run,
so the client can see the last attempt fail a moment before the server's metrics
interceptor has counted it: the count is awaited (bounded), then checked exactly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import StartServer
from prometheus_client import REGISTRY
from support.services import RedisServer, start_redis
from vidscan.v1 import upload_pb2, upload_pb2_grpc
from vidscan_client import SERVICE_CONFIG, channel_options

from server.main import token_authority


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with start_redis(workdir=tmp_path) as server:
        yield server


def attempts(code: str) -> float:
    labels = {
        "grpc_service": "vidscan.v1.UploadService",
        "grpc_method": "GetUploadSession",
        "grpc_type": "unary_unary",
        "grpc_code": code,
    }
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


async def test_reads_are_retried_on_unavailable_by_the_channel(
    start_server: StartServer, own_redis: RedisServer
) -> None:
    running = await start_server(redis_url=own_redis.url)
    token = token_authority(running.settings).mint("service-config-user")
    metadata = (("authorization", f"Bearer {token}"),)
    await asyncio.to_thread(own_redis.halt)  # the session store is down: UNAVAILABLE
    before = attempts("UNAVAILABLE")

    def read() -> grpc.StatusCode:
        with grpc.insecure_channel(running.target, options=channel_options()) as channel:
            stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetUploadSession(
                    upload_pb2.GetUploadSessionRequest(session_id="any"), metadata=metadata
                )
            code: grpc.StatusCode = caught.value.code()
            return code

    assert await asyncio.to_thread(read) == grpc.StatusCode.UNAVAILABLE
    max_attempts = SERVICE_CONFIG["methodConfig"][0]["retryPolicy"]["maxAttempts"]
    give_up = time.monotonic() + 5.0
    while True:
        if attempts("UNAVAILABLE") - before >= max_attempts or time.monotonic() > give_up:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # an extra (fifth) attempt would be counted by now
    assert attempts("UNAVAILABLE") - before == max_attempts
