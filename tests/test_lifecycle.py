"""Process-level behaviour: graceful shutdown on SIGTERM, health and reflection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import psutil
import pytest
from conftest import Running
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from support.process import ServerProcess
from support.rpc import Client, details, header
from test_concurrency import PausedStream, start_stream

from server.config import Settings
from server.main import token_authority


async def test_sigterm_drains_in_flight_uploads_and_refuses_new_ones(
    real_settings: Settings, big_video: bytes, tmp_path: Path
) -> None:
    proc = ServerProcess(real_settings, log_path=tmp_path / "server.log")
    try:
        # The warm media pool is up before the server listens, and dies with it.
        workers = [
            child.pid
            for child in psutil.Process(proc.process.pid).children()
            if "server.media.worker" in " ".join(child.cmdline())
        ]
        assert len(workers) == real_settings.media_workers
        async with grpc.aio.insecure_channel(proc.target) as channel:
            token = token_authority(real_settings).mint("drain-user")
            client = Client(channel, token, proc.target)
            session = await client.new_session()
            paused = PausedStream(header(session.session_id), big_video, 4 * 1024 * 1024)
            sync_channel, call = start_stream(proc.target, client.metadata, paused)
            try:
                assert await asyncio.to_thread(paused.paused.wait, 20)
                proc.terminate()
                health = health_pb2_grpc.HealthStub(channel)

                async def not_serving() -> bool:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
                    return bool(reply.status == health_pb2.HealthCheckResponse.NOT_SERVING)

                for _ in range(50):
                    if await not_serving():
                        break
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail("health did not turn NOT_SERVING after SIGTERM")
                with pytest.raises(grpc.RpcError) as caught:
                    await client.new_session()
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert details(caught.value).reason == "SHUTTING_DOWN"
                # The upload that was running finishes normally.
                paused.release.set()
                result = (await asyncio.to_thread(call.result, 60)).result
                assert result.file_size == len(big_video)
            finally:
                paused.release.set()
                sync_channel.close()
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert "stopped" in proc.log_path.read_text()
        assert [pid for pid in workers if psutil.pid_exists(pid)] == []
    finally:
        proc.close()


async def test_health_and_reflection_need_no_token(server: Running) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", "vidscan.v1.UploadService", "vidscan.v1.AnalysisService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def list_services() -> list[str]:
        with grpc.insecure_channel(server.target) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = list(database.get_services())
            # Resolving a method's messages works without any .proto file here;
            # ghz asks for the method symbol itself, not only the service.
            database.FindFileContainingSymbol("vidscan.v1.UploadService")
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="vidscan.v1.UploadService.UploadVideo"
            )
            (reply,) = list(stub.ServerReflectionInfo(iter([request])))
            assert not reply.HasField("error_response"), reply.error_response
            assert reply.file_descriptor_response.file_descriptor_proto
            return services

    services = await asyncio.to_thread(list_services)
    assert {"vidscan.v1.UploadService", "vidscan.v1.AnalysisService"} <= set(services)
    assert "grpc.health.v1.Health" in services
