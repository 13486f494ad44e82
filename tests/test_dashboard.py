"""deploy/grafana/vidscan.json: a well-formed Grafana dashboard whose every panel
expression names a metric the server or the gateway really exports (scraped from
real processes after an upload through the gateway and a refused one)."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.gateway import Gateway, start_gateway
from support.process import ServerProcess

from server.config import Settings
from server.main import token_authority

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "vidscan.json"
METRIC = re.compile(r"\b((?:vidscan|grpc_server)_[a-z0-9_]+)\b")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    variables = {v["name"] for v in board["templating"]["list"]}
    for panel in panels:
        assert panel["title"] and panel["targets"], panel
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)\}?", json.dumps(target)))
            assert used <= variables, (panel["title"], used - variables)
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(real_settings: Settings, tmp_path: Path) -> Iterator[ServerProcess]:
    settings = real_settings.model_copy(update={"metrics_listen": "127.0.0.1:0"})
    proc = ServerProcess(settings, log_path=tmp_path / "server.log")
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def gateway_metrics_port() -> int:
    return free_port()


@pytest.fixture
def gateway(
    server: ServerProcess, real_settings: Settings, tmp_path: Path, gateway_metrics_port: int
) -> Iterator[Gateway]:
    gw = start_gateway(
        upstream=server.target,
        max_upload_bytes=real_settings.max_upload_bytes,
        workdir=tmp_path,
        args=["-metrics-listen", f"127.0.0.1:{gateway_metrics_port}"],
    )
    try:
        yield gw
    finally:
        gw.stop()


def exported(url: str) -> set[str]:
    text = httpx.get(url, timeout=10).text
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_panel_names_an_exported_metric(
    server: ServerProcess,
    gateway: Gateway,
    gateway_metrics_port: int,
    real_settings: Settings,
    videos: dict[str, bytes],
) -> None:
    token = token_authority(real_settings).mint(f"dash-{uuid.uuid4().hex[:10]}")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=gateway.base_url, timeout=60) as http:
        for data in (videos["mp4"], b"not a video" * 100):
            created = http.post("/v1/dashboard/upload/sessions", headers=headers, json={})
            session_id = created.json()["session_id"]
            http.post(
                f"/v1/dashboard/upload/{session_id}",
                headers=headers,
                files={"file": ("clip.mp4", data, "video/mp4")},
            )
    assert server.metrics_port is not None
    names = exported(f"http://127.0.0.1:{server.metrics_port}/metrics")
    names |= exported(f"http://127.0.0.1:{gateway_metrics_port}/metrics")
    used = {m for expr in expressions() for m in METRIC.findall(expr)}
    assert len(used) >= 10
    missing = sorted(used - names)
    assert not missing, f"the dashboard uses metrics nobody exports: {missing}"
