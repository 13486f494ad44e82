"""/metrics: standard RPC metrics and the domain's, scraped from a real server
process; with several processes, the supervisor reports correct totals."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.process import ServerProcess
from support.rpc import Client

from server.config import Settings
from server.main import token_authority

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(proc: ServerProcess) -> Samples:
    assert proc.metrics_port is not None, "the server printed no metrics address"
    text = httpx.get(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


def start(settings: Settings, tmp_path: Path, **overrides: object) -> ServerProcess:
    update = {"metrics_listen": "127.0.0.1:0", **overrides}
    return ServerProcess(settings.model_copy(update=update), log_path=tmp_path / "server.log")


@pytest.fixture
def one(real_settings: Settings, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start(real_settings, tmp_path)
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def two(real_settings: Settings, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start(real_settings, tmp_path, processes=2)
    try:
        yield proc
    finally:
        proc.close()


async def upload_as(target: str, settings: Settings, data: bytes) -> None:
    token = token_authority(settings).mint(f"metrics-{uuid.uuid4().hex[:10]}")
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        client = Client(channel, token, target)
        session = await client.new_session()
        await client.upload(data, session_id=session.session_id)


async def test_rpc_and_upload_metrics(
    one: ServerProcess, real_settings: Settings, videos: dict[str, bytes]
) -> None:
    before = await asyncio.to_thread(scrape, one)
    await upload_as(one.target, real_settings, videos["mp4"])
    with pytest.raises(grpc.RpcError):
        await upload_as(one.target, real_settings, b"not a video at all" * 64)
    after = await asyncio.to_thread(scrape, one)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    upload = {"grpc_service": "vidscan.v1.UploadService", "grpc_method": "UploadVideo"}
    assert grew("grpc_server_started_total", **upload) == 2
    assert grew("grpc_server_handled_total", **upload, grpc_code="OK") == 1
    assert grew("grpc_server_handled_total", **upload, grpc_code="INVALID_ARGUMENT") == 1
    assert grew("grpc_server_handling_seconds_count", **upload, grpc_type="stream_unary") == 2
    assert grew("vidscan_uploads_total", outcome="stored") == 1
    assert grew("vidscan_uploads_total", outcome="refused", reason="UNSUPPORTED_FORMAT") == 1
    assert grew("vidscan_errors_total", reason="UNSUPPORTED_FORMAT") == 1
    assert grew("vidscan_upload_received_bytes_total") >= len(videos["mp4"])
    assert grew("vidscan_upload_duration_seconds_count") == 1
    assert ("vidscan_analysis_queue_depth", frozenset()) in after


async def test_several_processes_report_correct_totals(
    two: ServerProcess, real_settings: Settings, videos: dict[str, bytes]
) -> None:
    uploads = 8
    await asyncio.gather(
        *(upload_as(two.target, real_settings, videos["mp4"]) for _ in range(uploads))
    )
    samples = await asyncio.to_thread(scrape, two)
    create = {"grpc_method": "CreateUploadSession", "grpc_code": "OK"}
    assert value(samples, "grpc_server_handled_total", **create) == uploads
    upload = {"grpc_method": "UploadVideo", "grpc_code": "OK"}
    assert value(samples, "grpc_server_handled_total", **upload) == uploads
    assert value(samples, "vidscan_uploads_total", outcome="stored") == uploads
