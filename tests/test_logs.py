"""Server logs are JSON lines carrying the request's ids; tokens, secrets and client
metadata never appear in them. A real server process behind the real gateway."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from support.gateway import Gateway, start_gateway
from support.process import ServerProcess
from vidscan.v1 import upload_pb2, upload_pb2_grpc

from server.config import Settings
from server.main import token_authority


@pytest.fixture
def process(real_settings: Settings, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        real_settings.model_copy(update={"log_format": "json", "log_level": "INFO"}),
        log_path=tmp_path / "server.log",
    )
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def gateway(process: ServerProcess, real_settings: Settings, tmp_path: Path) -> Iterator[Gateway]:
    gw = start_gateway(
        upstream=process.target, max_upload_bytes=real_settings.max_upload_bytes, workdir=tmp_path
    )
    try:
        yield gw
    finally:
        gw.stop()


def log_lines(proc: ServerProcess) -> list[dict[str, Any]]:
    lines = [line for line in proc.log_path.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(p) for p in parsed), parsed[:3]
    return parsed


async def test_one_upload_through_the_gateway_is_logged_with_its_ids_and_no_secrets(
    process: ServerProcess,
    gateway: Gateway,
    real_settings: Settings,
    videos: dict[str, bytes],
) -> None:
    user = f"logs-{uuid.uuid4().hex[:10]}"
    token = token_authority(real_settings).mint(user)
    marker = f"client-secret-{uuid.uuid4().hex}"
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    headers = {"Authorization": f"Bearer {token}", "X-Request-Id": request_id}
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
        created = await http.post("/v1/dashboard/upload/sessions", headers=headers, json={})
        assert created.status_code == 200, created.text
        session_id = created.json()["session_id"]
        response = await http.post(
            f"/v1/dashboard/upload/{session_id}",
            headers=headers,
            data={"metadata": json.dumps({"note": marker})},
            files={"file": ("clip.mp4", videos["mp4"], "video/mp4")},
        )
        assert response.status_code == 201, response.text
        assert response.headers["X-Request-Id"] == request_id
        video_id = response.json()["video_id"]
    await asyncio.sleep(0.5)  # let the server flush its last lines

    text = process.log_path.read_text()
    assert token not in text and token.split(".")[2] not in text
    assert marker not in text
    assert real_settings.jwt_secret.get_secret_value() not in text
    ours = [line for line in log_lines(process) if line.get("request_id") == request_id]
    assert ours, "no log line carries the gateway's request id"
    upload_lines = [line for line in ours if "UploadVideo" in line["message"]]
    assert upload_lines, ours
    finished = upload_lines[-1]
    assert finished["user_id"] == user
    assert finished["session_id"] == session_id
    assert finished["video_id"] == video_id
    assert finished["grpc_code"] == "OK"


async def test_grpc_callers_get_a_request_id_back(process: ServerProcess) -> None:
    def create(metadata: tuple[tuple[str, str], ...]) -> str:
        with grpc.insecure_channel(process.target) as channel:
            stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as caught:  # no token: refused, still an id
                stub.CreateUploadSession(upload_pb2.CreateUploadSessionRequest(), metadata=metadata)
            error: grpc.Call = caught.value  # type: ignore[assignment]
            trailers = {str(k): v for k, v in error.trailing_metadata() or ()}
            return str(trailers["x-request-id"])

    assert await asyncio.to_thread(create, (("x-request-id", "given-id-1"),)) == "given-id-1"
    made = await asyncio.to_thread(create, ())
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    # A hostile id (not a token-like string) is replaced, not logged.
    for hostile in ("has spaces; and=signs", "x" * 200):
        replaced = await asyncio.to_thread(create, (("x-request-id", hostile),))
        assert re.fullmatch(r"[0-9a-f]{32}", replaced)
