"""What a client behind a load balancer relies on: RetryInfo on every UNAVAILABLE,
connections that age out (so clients spread over new replicas) without failing
calls, and an inline analysis wait that never outlives the call's deadline."""

from __future__ import annotations

import asyncio
import os
import time

import grpc
import psutil
import pytest
from conftest import Running, StartServer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.rpc import details
from support.triton import TritonServer
from vidscan.v1 import upload_pb2

from server.api.status import DEFAULT_RETRY_AFTER_SECONDS


async def test_every_unavailable_carries_retry_info(server: Running) -> None:
    client = server.client()
    server.app.admission.drain()
    with pytest.raises(grpc.RpcError) as caught:
        await client.new_session()
    info = details(caught.value)
    assert (info.code, info.reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")
    assert info.retry_after_seconds == DEFAULT_RETRY_AFTER_SECONDS


def client_ports(server_port: int) -> set[int]:
    """Local ports of this process's connections to the server (the client side)."""
    return {
        c.laddr.port
        for c in psutil.Process(os.getpid()).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == server_port and c.status == psutil.CONN_ESTABLISHED
    }


async def test_connections_age_out_without_failing_calls(start_server: StartServer) -> None:
    running = await start_server(max_connection_age_seconds=1, max_connection_age_grace_seconds=1)
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(running.target, options=options) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        await health.Check(request, timeout=10)
        first = client_ports(running.app.port)
        assert first
        seen = set(first)
        deadline = time.monotonic() + 30
        while seen <= first:
            assert time.monotonic() < deadline, "the connection never aged out"
            reply = await health.Check(request, timeout=10)  # every call still succeeds
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            seen |= client_ports(running.app.port)
            await asyncio.sleep(0.2)


async def test_the_inline_analysis_wait_ends_before_the_clients_deadline(
    start_server: StartServer, triton: TritonServer, videos: dict[str, bytes]
) -> None:
    # Frame sampling hangs, so the inline analysis cannot finish within the 10 s wait;
    # the client gives the call 4 s. It must get its answer (PROCESSING), not
    # DEADLINE_EXCEEDED.
    running = await start_server(
        triton_url=triton.grpc_url,
        analysis_wait_seconds=10,
        media_fault_injection="hang:sample_frames",
        media_timeout_seconds=30,
    )
    client = running.client()
    session = await client.new_session()
    result = await client.upload(videos["mp4"], session_id=session.session_id, deadline_seconds=4.0)
    assert result.upload_status == upload_pb2.UPLOAD_STATUS_PROCESSING
