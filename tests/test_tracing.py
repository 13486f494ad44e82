"""One upload through the gateway is one trace, from the HTTP request to the Triton
call, in a real OTLP receiver (Jaeger v2, in-memory storage, started like the other
services). The client's own W3C ``traceparent`` is honoured end to end, so the test
looks the trace up by the id it sent."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.gateway import Gateway, start_gateway
from support.process import ServerProcess
from support.services import JaegerServer, start_jaeger
from support.triton import TritonServer

from server.config import Settings
from server.main import token_authority

SERVER, GATEWAY = "vidscan-server", "vidscan-gateway"


def otel_env(jaeger: JaegerServer, service: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: spans reach Jaeger soon after they end
    }


@pytest.fixture(scope="module")
def jaeger(workdir: Path) -> Iterator[JaegerServer]:
    with start_jaeger(workdir=workdir) as server:
        yield server


@pytest.fixture
def process(
    real_settings: Settings, triton: TritonServer, jaeger: JaegerServer, tmp_path: Path
) -> Iterator[ServerProcess]:
    settings = real_settings.model_copy(
        update={"log_format": "json", "log_level": "INFO", "triton_url": triton.grpc_url}
    )
    proc = ServerProcess(settings, log_path=tmp_path / "server.log", env=otel_env(jaeger, SERVER))
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def gateway(
    process: ServerProcess, real_settings: Settings, jaeger: JaegerServer, tmp_path: Path
) -> Iterator[Gateway]:
    gw = start_gateway(
        upstream=process.target,
        max_upload_bytes=real_settings.max_upload_bytes,
        workdir=tmp_path,
        env=otel_env(jaeger, GATEWAY),
    )
    try:
        yield gw
    finally:
        gw.stop()


class Trace:
    """A trace as Jaeger's query API returns it (``/api/traces/{id}``)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.spans: list[dict[str, Any]] = data["spans"]
        processes = data["processes"]
        self.service = {s["spanID"]: processes[s["processID"]]["serviceName"] for s in self.spans}
        self.by_id = {s["spanID"]: s for s in self.spans}

    def named(self, name: str, service: str | None = None) -> list[dict[str, Any]]:
        return [
            s
            for s in self.spans
            if s["operationName"] == name and service in (None, self.service[s["spanID"]])
        ]

    def parent(self, span: dict[str, Any]) -> dict[str, Any] | None:
        refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        return self.by_id.get(refs[0]["spanID"]) if refs else None

    def ancestors(self, span: dict[str, Any]) -> list[dict[str, Any]]:
        chain = []
        current = self.parent(span)
        while current is not None:
            chain.append(current)
            current = self.parent(current)
        return chain


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def complete(trace: Trace) -> bool:
    names = {s["operationName"] for s in trace.spans}
    return (
        any(n.startswith("Triton infer ") for n in names)
        and "media sample_frames" in names
        and "S3 put_object" in names
        and any(trace.service[s["spanID"]] == GATEWAY for s in trace.spans)
    )


async def fetch_trace(jaeger: JaegerServer, trace_id: str) -> Trace:
    """The trace once every service has sent its part (bounded wait)."""
    deadline = time.monotonic() + 60
    last: Trace | None = None
    async with httpx.AsyncClient(base_url=jaeger.query_url, timeout=10) as http:
        while True:
            response = await http.get(f"/api/traces/{trace_id}")
            if response.status_code == 200 and response.json().get("data"):
                last = Trace(response.json()["data"][0])
                if complete(last):
                    await asyncio.sleep(1.0)  # spans ending with the RPC's last steps
                    final = await http.get(f"/api/traces/{trace_id}")
                    return Trace(final.json()["data"][0])
            names = sorted({s["operationName"] for s in last.spans}) if last else []
            assert time.monotonic() < deadline, f"trace {trace_id} incomplete: {names}"
            await asyncio.sleep(0.3)


async def test_one_upload_through_the_gateway_is_one_trace(
    process: ServerProcess,
    gateway: Gateway,
    jaeger: JaegerServer,
    real_settings: Settings,
    videos: dict[str, bytes],
) -> None:
    user = f"traced-{uuid.uuid4().hex[:10]}"
    token = token_authority(real_settings).mint(user)
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Request-Id": request_id,
        "traceparent": f"00-{trace_id}-{parent_id}-01",
    }
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
        created = await http.post("/v1/dashboard/upload/sessions", headers=headers, json={})
        assert created.status_code == 200, created.text
        session_id = created.json()["session_id"]
        response = await http.post(
            f"/v1/dashboard/upload/{session_id}",
            headers=headers,
            data={"metadata": json.dumps({"note": "traced"})},
            files={"file": ("clip.mp4", videos["mp4"], "video/mp4")},
        )
        assert response.status_code == 201, response.text
        video_id = response.json()["video_id"]

    trace = await fetch_trace(jaeger, trace_id)
    services = set(trace.service.values())
    assert services == {GATEWAY, SERVER}, services

    # The gateway's spans hang off the caller's span; everything else off the gateway's.
    roots = [s for s in trace.spans if trace.parent(s) is None]
    assert roots and all(trace.service[s["spanID"]] == GATEWAY for s in roots), [
        (s["operationName"], trace.service[s["spanID"]]) for s in roots
    ]
    assert all(any(r["spanID"] == parent_id for r in s["references"]) for s in roots), (
        "the gateway did not continue the caller's traceparent"
    )

    upload = trace.named("/vidscan.v1.UploadService/UploadVideo", SERVER)
    assert len(upload) == 1, [s["operationName"] for s in trace.spans]
    rpc = upload[0]
    assert any(trace.service[a["spanID"]] == GATEWAY for a in trace.ancestors(rpc))
    rpc_tags = tags(rpc)
    assert rpc_tags["vidscan.user_id"] == user
    assert rpc_tags["vidscan.session_id"] == session_id
    assert rpc_tags["vidscan.video_id"] == video_id
    assert rpc_tags["vidscan.request_id"] == request_id

    # The work the upload did, each a descendant of the server's UploadVideo span.
    def under_rpc(prefix: str) -> list[dict[str, Any]]:
        found = [s for s in trace.spans if s["operationName"].startswith(prefix)]
        assert found, f"no {prefix!r} span in {sorted({s['operationName'] for s in trace.spans})}"
        return [s for s in found if rpc in trace.ancestors(s)]

    media = {s["operationName"] for s in trace.spans if rpc in trace.ancestors(s)}
    assert {"media probe_header", "media validate"} & media, media
    assert under_rpc("media sample_frames")
    # A clip smaller than a part is stored in one request, no multipart upload.
    assert under_rpc("S3 put_object")
    assert not [s for s in trace.spans if "multipart" in s["operationName"]]
    assert under_rpc("Triton infer ")
    sql = [s for s in trace.spans if tags(s).get("db.system") == "postgresql"]
    assert any(rpc in trace.ancestors(s) for s in sql), "no SQL span under UploadVideo"
    rpcs = [s for s in trace.spans if s["operationName"].startswith("/vidscan.v1.")]
    assert all(set(map(id, rpcs)) & set(map(id, trace.ancestors(s))) for s in sql)

    # Ids only: the token is in no span attribute.
    every_value = json.dumps([s.get("tags", []) for s in trace.spans])
    assert token not in every_value and token.split(".")[2] not in every_value

    # The server's log lines for this request carry the trace id.
    await asyncio.sleep(0.3)
    lines = [json.loads(line) for line in process.log_path.read_text().splitlines() if line]
    ours = [line for line in lines if line.get("request_id") == request_id]
    assert ours and all(line.get("trace_id") == trace_id for line in ours), ours[:3]
