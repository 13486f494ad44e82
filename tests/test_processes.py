"""Multi-process serving: `serve` with VIDSCAN_PROCESSES=N runs N server processes on
one port (SO_REUSEPORT), supervised; every process serves health, reflection and
uploads; SIGTERM drains all of them; a crashed process is replaced; none outlives
the supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from pydantic import ValidationError
from support.process import ServerProcess
from support.rpc import Client, header
from test_concurrency import PausedStream, start_stream

from server.config import Settings
from server.main import token_authority

PROCESSES = 2
CONNECTIONS = 16


@pytest.fixture
def supervised(real_settings: Settings, tmp_path: Path) -> Iterator[ServerProcess]:
    settings = real_settings.model_copy(update={"processes": PROCESSES})
    proc = ServerProcess(settings, log_path=tmp_path / "server.log")
    try:
        yield proc
    finally:
        proc.close()


def children(proc: ServerProcess) -> list[psutil.Process]:
    return psutil.Process(proc.process.pid).children()


def wait_for(condition: object, what: str, timeout: float = 60.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def listening_on(process: psutil.Process, port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        for c in process.net_connections(kind="tcp")
    )


def serves_connections(process: psutil.Process, port: int) -> bool:
    return any(
        c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
        for c in process.net_connections(kind="tcp")
    )


def check_one_connection(target: str) -> list[str]:
    """Health and reflection on a connection of its own (no shared subchannel)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(target, options=options) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "vidscan.v1.UploadService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        return sorted(ProtoReflectionDescriptorDatabase(channel).get_services())


def test_processes_need_shared_backends(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="shared backends"):
        Settings(processes=2, data_dir=tmp_path)
    assert Settings(data_dir=tmp_path).process_count == 1  # embedded: one process


def test_automatic_count_is_one_per_core_with_shared_backends(real_settings: Settings) -> None:
    assert real_settings.model_copy(update={"processes": 0}).process_count == len(
        os.sched_getaffinity(0)
    )
    assert real_settings.model_copy(update={"processes": 3}).process_count == 3


async def test_every_process_serves_health_reflection_and_uploads(
    supervised: ServerProcess, real_settings: Settings, videos: dict[str, bytes]
) -> None:
    workers = children(supervised)
    assert len(workers) == PROCESSES
    for worker in workers:
        assert listening_on(worker, supervised.port), f"pid {worker.pid} is not listening"

    # Connections stay open while we look at where they landed.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(supervised.target, options=options) for _ in range(CONNECTIONS)
    ]
    try:
        for channel in channels:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="vidscan.v1.AnalysisService"), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # With 16 connections the kernel leaves a process out with probability 2^-15.
        for worker in workers:
            assert serves_connections(worker, supervised.port), f"pid {worker.pid} got none"
        token = token_authority(real_settings).mint("multi-process-user")
        for channel in channels[:4]:
            client = Client(channel, token, supervised.target)
            session = await client.new_session()
            result = await client.upload(videos["mp4"], session_id=session.session_id)
            assert result.file_size == len(videos["mp4"])
    finally:
        for channel in channels:
            await channel.close()

    services = await asyncio.gather(
        *(asyncio.to_thread(check_one_connection, supervised.target) for _ in range(6))
    )
    for listed in services:
        assert "vidscan.v1.UploadService" in listed
        assert "grpc.health.v1.Health" in listed


async def test_sigterm_drains_every_process(
    supervised: ServerProcess, real_settings: Settings, big_video: bytes
) -> None:
    workers = children(supervised)
    async with grpc.aio.insecure_channel(supervised.target) as channel:
        client = Client(
            channel, token_authority(real_settings).mint("drain-all"), supervised.target
        )
        session = await client.new_session()
        paused = PausedStream(header(session.session_id), big_video, 4 * 1024 * 1024)
        sync_channel, call = start_stream(supervised.target, client.metadata, paused)
        try:
            assert await asyncio.to_thread(paused.paused.wait, 20)
            supervised.terminate()

            def every_process_draining() -> bool:
                log = supervised.log_path.read_text()
                return log.count("shutting down: draining") >= PROCESSES

            await asyncio.to_thread(wait_for, every_process_draining, "every process to drain")
            paused.release.set()
            result = (await asyncio.to_thread(call.result, 60)).result
            assert result.file_size == len(big_video)
        finally:
            paused.release.set()
            sync_channel.close()
    assert await asyncio.to_thread(supervised.wait, 60) == 0
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    log = supervised.log_path.read_text()
    assert log.count("stopped") >= PROCESSES, log[-2000:]


def test_a_crashed_process_is_replaced(supervised: ServerProcess) -> None:
    first, second = children(supervised)
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    def replaced() -> bool:
        now = children(supervised)
        return (
            len(now) == PROCESSES
            and second.pid in {p.pid for p in now}
            and all(listening_on(p, supervised.port) for p in now)
        )

    wait_for(replaced, "the supervisor to start a new server process")
    assert first.pid not in {p.pid for p in children(supervised)}
    # The service on the port never stopped, and the new process serves too.
    for _ in range(6):
        assert "vidscan.v1.UploadService" in check_one_connection(supervised.target)
    assert "exited with -9; restarting" in supervised.log_path.read_text()


def test_no_process_outlives_a_killed_supervisor(supervised: ServerProcess) -> None:
    workers = children(supervised)
    supervised.kill()
    supervised.wait(10)

    def all_gone() -> bool:
        return not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)

    wait_for(all_gone, "the server processes to die with their supervisor", timeout=20)
