"""One JSON shape on every REST route, and the OpenAPI document describes exactly it:
each route's response is validated against the document's schema (every property
required, no other property, null only where the document says x-nullable)."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from conftest import StartServer
from support.gateway import Gateway, start_gateway

from server.main import token_authority


@pytest.fixture
async def rest(
    start_server: StartServer, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], dict[str, Any]]]:
    running = await start_server(analysis_wait_seconds=0)  # answers "processing"
    gateway: Gateway = await asyncio.to_thread(
        start_gateway,
        upstream=running.target,
        max_upload_bytes=running.settings.max_upload_bytes,
        workdir=tmp_path,
    )
    token = token_authority(running.settings).mint(f"shapes-{uuid.uuid4().hex[:8]}")
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
            doc = (await http.get("/openapi.json")).json()
            yield http, {"Authorization": f"Bearer {token}"}, doc
    finally:
        await asyncio.to_thread(gateway.stop)


def strict(schema: Any, definitions: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """The Swagger 2.0 schema as a strict JSON Schema: $refs inlined, x-nullable as
    a null alternative, every property of an object required and no other allowed."""
    if isinstance(schema, list):
        return [strict(s, definitions, seen) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/definitions/")
        assert name not in seen, f"recursive schema {name}"
        return strict(definitions[name], definitions, (*seen, name))
    out = {k: strict(v, definitions, seen) for k, v in schema.items() if k != "x-nullable"}
    if out.get("type") == "object" and "properties" in out:
        out["required"] = sorted(out["properties"])
        out["additionalProperties"] = False
    if "enum" in out and schema.get("x-nullable"):
        out["enum"] = [*out["enum"], None]
    if schema.get("x-nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def check(doc: dict[str, Any], path: str, method: str, response: httpx.Response) -> Any:
    """The body, after checking it against the documented schema of that status."""
    operation = doc["paths"][path][method]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method} {path} answered undocumented {response.status_code}"
    body = response.json()
    schema = strict(copy.deepcopy(documented["schema"]), doc["definitions"])
    jsonschema.validate(body, schema)
    return body


async def test_every_route_answers_the_documented_shape(
    rest: tuple[httpx.AsyncClient, dict[str, str], dict[str, Any]], videos: dict[str, bytes]
) -> None:
    http, auth, doc = rest
    created = await http.post("/v1/dashboard/upload/sessions", headers=auth, json={})
    session = check(doc, "/v1/dashboard/upload/sessions", "post", created)
    assert session["state"] == "active"
    assert isinstance(session["max_bytes"], int) and session["committed_bytes"] == 0
    session_id = session["session_id"]

    status = await http.get(f"/v1/dashboard/upload/{session_id}/status", headers=auth)
    body = check(doc, "/v1/dashboard/upload/{session_id}/status", "get", status)
    assert body["status"] == "active"

    uploaded = await http.post(
        f"/v1/dashboard/upload/{session_id}",
        headers=auth,
        data={"metadata": json.dumps({"a": 1})},
        files={"file": ("clip.mp4", videos["mp4"], "video/mp4")},
    )
    assert uploaded.status_code == 201, uploaded.text
    result = check(doc, "/v1/dashboard/upload/{session_id}", "post", uploaded)
    # Every field of the earlier API's 201 body is present, null while unknown.
    assert result["upload_status"] == "processing"
    for unknown in ("confidence_score", "is_fake", "processing_time", "detection_result"):
        assert unknown in result and result[unknown] is None, unknown
    assert result["file_size"] == len(videos["mp4"]) and result["metadata"] == {"a": 1}
    video_id, analysis_id = result["video_id"], result["analysis_id"]

    video = check(
        doc, "/v1/videos/{video_id}", "get", await http.get(f"/v1/videos/{video_id}", headers=auth)
    )
    assert video["file_size"] == result["file_size"]  # the same number on every route
    analysis = check(
        doc,
        "/v1/analyses/{analysis_id}",
        "get",
        await http.get(f"/v1/analyses/{analysis_id}", headers=auth),
    )
    assert analysis["status"] in ("pending", "running", "analyzed", "failed")
    listed = check(doc, "/v1/videos", "get", await http.get("/v1/videos", headers=auth))
    assert [v["video_id"] for v in listed["videos"]] == [video_id]
    analyses = check(
        doc,
        "/v1/videos/{video_id}/analyses",
        "get",
        await http.get(f"/v1/videos/{video_id}/analyses", headers=auth),
    )
    assert [a["analysis_id"] for a in analyses["analyses"]] == [analysis_id]

    # Errors are the documented error body, on every route.
    missing = await http.get(f"/v1/videos/{uuid.uuid4()}", headers=auth)
    assert missing.status_code == 404
    operation = doc["paths"]["/v1/videos/{video_id}"]["get"]
    assert operation["responses"]["default"]["schema"] == {"$ref": "#/definitions/ErrorResponse"}
    error = missing.json()
    jsonschema.validate(error, strict(doc["definitions"]["ErrorResponse"], doc["definitions"]))

    second = (await http.post("/v1/dashboard/upload/sessions", headers=auth, json={})).json()
    cancelled = await http.delete(f"/v1/dashboard/upload/{second['session_id']}", headers=auth)
    assert (cancelled.status_code, cancelled.content) == (204, b"")
    assert "204" in doc["paths"]["/v1/dashboard/upload/{session_id}"]["delete"]["responses"]
