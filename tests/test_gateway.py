"""The REST gateway (gateway/bin/vidscan-gateway) over real HTTP, in front of the real
in-process server on PostgreSQL, Redis and MinIO.

Every route, the documented error mapping and error body, header propagation, a
300 MiB upload streamed through the gateway in bounded memory, and clients that stall
or drop the connection mid-upload: the gateway cancels the gRPC stream, so no video is
written and the session stays writable (the server either discards what it had or
keeps it for a resume at `write_offset`; these tests accept both and finish the upload).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import BUCKET, Database, Running, StartServer
from openapi_spec_validator import validate as validate_openapi
from support.gateway import Gateway, start_gateway
from support.leftovers import leftovers, nothing_left
from support.services import free_port

from server.storage.s3 import S3ObjectStore

MIB = 1024 * 1024
BOUNDARY = "vidscan-gateway-test-7d1f0c"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
ERROR_KEYS = {
    "error_code",
    "error_message",
    "details",
    "cleanup_performed",
    "cleanup_details",
    "timestamp",
}
CLEANUP_KEYS = {"s3_cleanup", "session_cleanup", "database_cleanup", "quota_released"}
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

StartGateway = Callable[..., Awaitable[Gateway]]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def start_gw(tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Starts gateways in front of running servers; all are stopped after the test."""
    started: list[Gateway] = []

    async def start(
        running: Running,
        *,
        max_upload_bytes: int | None = None,
        args: Sequence[str] = (),
        upstream: str | None = None,
        wait_healthy: bool = True,
    ) -> Gateway:
        gateway = await asyncio.to_thread(
            start_gateway,
            upstream=upstream or running.target,
            max_upload_bytes=max_upload_bytes or running.settings.max_upload_bytes,
            workdir=tmp_path,
            args=args,
            wait_healthy=wait_healthy,
        )
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await asyncio.to_thread(gateway.stop)


@pytest.fixture
async def gateway(server: Running, start_gw: StartGateway) -> Gateway:
    return await start_gw(server)


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as client:
        yield client


# --------------------------------------------------------------------------- helpers


def new_user(tag: str) -> str:
    return f"gw-{tag}-{uuid.uuid4().hex[:10]}"


def auth(running: Running, user: str) -> dict[str, str]:
    """The Authorization header of ``user`` (the same bearer token the gRPC tests use)."""
    ((key, value),) = running.client(user).metadata
    return {key: value}


def part_head(name: str, *, filename: str | None = None, content_type: str = "") -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    lines = [f"--{BOUNDARY}", f"Content-Disposition: {disposition}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def text_part(name: str, value: str) -> bytes:
    return part_head(name) + value.encode() + b"\r\n"


FILE_HEAD = part_head("file", filename="clip.mp4", content_type="video/mp4")
CLOSING = f"\r\n--{BOUNDARY}--\r\n".encode()  # ends the file part and the form


def form(data: bytes, **fields: str) -> bytes:
    """A whole upload form: text fields first, then the file, as the gateway wants it."""
    return b"".join(text_part(k, v) for k, v in fields.items()) + FILE_HEAD + data + CLOSING


async def create_session(http: httpx.AsyncClient, headers: Mapping[str, str]) -> str:
    response = await http.post("/v1/dashboard/upload/sessions", headers=headers, json={})
    assert response.status_code == 200, response.text
    session_id: str = response.json()["session_id"]
    return session_id


async def session_status(
    http: httpx.AsyncClient, headers: Mapping[str, str], session_id: str
) -> str:
    response = await http.get(f"/v1/dashboard/upload/{session_id}/status", headers=headers)
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def upload(
    http: httpx.AsyncClient,
    headers: Mapping[str, str],
    session_id: str,
    data: bytes,
    **fields: str,
) -> httpx.Response:
    """A multipart upload the way an ordinary HTTP client sends it (httpx puts the
    text fields before the files)."""
    return await http.post(
        f"/v1/dashboard/upload/{session_id}",
        headers=headers,
        data=fields,
        files={"file": ("clip.mp4", data, "video/mp4")},
    )


def assert_error(response: httpx.Response, status: int, error_code: str) -> dict[str, Any]:
    """Checks the documented error body and returns it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["error_code"] == error_code, body
    assert isinstance(body["error_message"], str) and body["error_message"]
    assert isinstance(body["details"], dict)
    assert isinstance(body["cleanup_performed"], bool)
    cleanup = body["cleanup_details"]
    assert set(cleanup) == CLEANUP_KEYS and all(isinstance(v, bool) for v in cleanup.values())
    if any(cleanup.values()):
        assert body["cleanup_performed"] is True, body
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.tzinfo is not None
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=5)
    return body


async def wait_until(predicate: Callable[[], Awaitable[bool]], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def equals(actual: Awaitable[object], expected: object) -> bool:
    return await actual == expected


async def committed_bytes(
    http: httpx.AsyncClient, headers: Mapping[str, str], session_id: str
) -> int:
    response = await http.get(f"/v1/dashboard/upload/{session_id}/status", headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["session"]["committed_bytes"])


async def session_released(
    http: httpx.AsyncClient, headers: Mapping[str, str], session_id: str
) -> bool:
    """True once no stream holds the session any more. The probe is an upload at a
    wrong write_offset: the server checks the offset under the session's stream lock
    and before it reserves or stores anything, so it answers 400 INVALID_OFFSET when
    the session is free and 409 SESSION_BUSY while a stream still holds it."""
    probe = await http.post(
        f"/v1/dashboard/upload/{session_id}",
        content=form(b"", write_offset="1"),
        headers={**headers, **MULTIPART},
    )
    if probe.status_code == 409:
        assert_error(probe, 409, "SESSION_BUSY")
        return False
    assert_error(probe, 400, "INVALID_OFFSET")
    return True


async def assert_interrupted_cleanly(
    running: Running,
    http: httpx.AsyncClient,
    headers: Mapping[str, str],
    session_id: str,
    user: str,
    s3: S3ObjectStore,
    db: Database,
) -> None:
    """After the gateway cut a stream off, once the server let go of the session: no
    video, no quota unit spent, the session writable. What the server kept is either
    nothing at all, or the progress of a resumable upload (committed_bytes > 0)."""
    await wait_until(lambda: session_released(http, headers, session_id))
    assert await session_status(http, headers, session_id) == "active"
    held = await leftovers(user, s3, db)
    assert held["videos"] == 0, held
    assert held["remaining"] + held["reservations"] == running.settings.default_upload_quota
    if await committed_bytes(http, headers, session_id) == 0:
        assert (held["multipart"], held["objects"]) == (0, 0), held


async def finish_upload(
    http: httpx.AsyncClient,
    headers: Mapping[str, str],
    session_id: str,
    data: bytes,
    within_s: float = 30.0,
) -> dict[str, Any]:
    """Completes ``data`` on a session an earlier stream was cut off on: from the
    committed offset (``write_offset``) when the server kept that stream's progress,
    from 0 otherwise. Retries while the cut-off stream still holds the session (409)
    or has just moved the committed offset (INVALID_OFFSET)."""
    deadline = time.monotonic() + within_s
    while True:
        offset = await committed_bytes(http, headers, session_id)
        fields = {"write_offset": str(offset)} if offset else {}
        response = await upload(http, headers, session_id, data[offset:], **fields)
        retry = response.status_code == 409 or (
            response.status_code == 400 and response.json()["error_code"] == "INVALID_OFFSET"
        )
        if not retry or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    assert result["file_size"] == len(data)
    assert result["file_hash"] == hashlib.sha256(data).hexdigest()
    return result


async def assert_stored_once(
    running: Running,
    user: str,
    result: Mapping[str, Any],
    data: bytes,
    s3: S3ObjectStore,
    db: Database,
) -> None:
    """One whole object, one row, one quota unit spent, nothing else for ``user``."""
    prefix = f"dashboard-uploads/{user}/"
    assert await s3.list_keys(prefix=prefix) == [result["s3_key"]]
    assert await s3.read_range(result["s3_key"], start=0, length=len(data)) == data
    assert await leftovers(user, s3, db) == {
        "multipart": 0,
        "objects": 1,
        "videos": 1,
        "reservations": 0,
        "remaining": running.settings.default_upload_quota - 1,
    }


class RawUpload:
    """An HTTP/1.1 upload written by hand on a socket, so that a test can stop in the
    middle of the body, stall, or reset the connection, which HTTP clients won't do."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def start(
        cls,
        gateway: Gateway,
        session_id: str,
        headers: Mapping[str, str],
        *,
        file_size: int,
    ) -> RawUpload:
        """Sends the request head and the form up to the file's first byte; the
        Content-Length announces a form carrying ``file_size`` file bytes."""
        url = httpx.URL(gateway.base_url)
        assert url.host and url.port
        reader, writer = await asyncio.open_connection(url.host, url.port)
        length = len(FILE_HEAD) + file_size + len(CLOSING)
        head = (
            f"POST /v1/dashboard/upload/{session_id} HTTP/1.1\r\n"
            f"Host: {url.host}:{url.port}\r\n"
            f"Content-Type: {MULTIPART['Content-Type']}\r\n"
            f"Content-Length: {length}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        )
        writer.write(head.encode() + FILE_HEAD)
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        for offset in range(0, len(data), MIB):
            self.writer.write(data[offset : offset + MIB])
            await self.writer.drain()

    async def response(self, within_s: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(within_s):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines if line)
            }
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def reset(self) -> None:
        """Drops the connection abruptly: RST, no FIN, no closing boundary."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


# --------------------------------------------------------------------------- routes


async def test_every_route_session_upload_status_video_analysis_cancel(
    server: Running,
    http: httpx.AsyncClient,
    videos: dict[str, bytes],
    s3: S3ObjectStore,
    db: Database,
) -> None:
    user = new_user("routes")
    headers = auth(server, user)
    data = videos["mp4"]

    # POST /v1/dashboard/upload/sessions -> the UploadSession (proto field names).
    created = await http.post("/v1/dashboard/upload/sessions", headers=headers, json={})
    assert created.status_code == 200, created.text
    session = created.json()
    assert session["state"] == "active"  # the REST shape: lower-case enums, numbers
    assert session["max_bytes"] == server.settings.max_upload_bytes
    assert session["committed_bytes"] == 0
    assert set(session["allowed_formats"]) == {"mp4", "mov", "mkv", "webm", "avi"}
    session_id = session["session_id"]
    assert await session_status(http, headers, session_id) == "active"

    # POST /v1/dashboard/upload/{session_id}: multipart, 201 with the earlier API's body.
    response = await upload(
        http,
        headers,
        session_id,
        data,
        filename="holiday.mp4",
        content_type="video/mp4",
        metadata=json.dumps({"camera": "front", "take": 2}),
    )
    assert response.status_code == 201, response.text
    result = response.json()
    video_id = result["video_id"]
    assert response.headers["location"] == f"/v1/videos/{video_id}"
    earlier_api_fields = {
        "video_id",
        "analysis_id",
        "upload_status",
        "redirect_url",
        "estimated_processing_time",
        "filename",
        "file_size",
        "file_hash",
        "format",
        "s3_key",
        "s3_url",
        "created_at",
        "uploaded_at",
        "metadata",
    }
    assert earlier_api_fields <= set(result), sorted(earlier_api_fields - set(result))
    assert result["upload_status"] == "processing"
    assert result["analysis_id"]
    assert result["redirect_url"] == f"/dashboard/videos/{video_id}/results"
    assert isinstance(result["estimated_processing_time"], int)
    assert result["filename"] == "holiday.mp4"
    assert result["file_size"] == len(data)  # a JSON number, unlike protojson's int64
    assert result["file_hash"] == hashlib.sha256(data).hexdigest()
    assert result["format"] == "mp4"
    assert result["s3_key"] == f"dashboard-uploads/{user}/{video_id}.mp4"
    playable = urlsplit(result["s3_url"])  # presigned GET (tests/test_content.py plays it)
    assert playable.path == f"/{BUCKET}/{result['s3_key']}"
    assert "X-Amz-Signature=" in playable.query
    assert datetime.fromisoformat(result["created_at"]).tzinfo is not None
    assert datetime.fromisoformat(result["uploaded_at"]).tzinfo is not None
    assert result["metadata"] == {"camera": "front", "take": 2}
    assert result["confidence_score"] is None and result["is_fake"] is None  # processing
    assert result["deduplicated"] is False

    # The bytes really are in S3, whole, and no multipart upload is left open.
    assert await s3.object_size(result["s3_key"]) == len(data)
    assert await s3.read_range(result["s3_key"], start=0, length=len(data)) == data
    assert await s3.list_multipart(prefix=f"dashboard-uploads/{user}/") == []
    assert await db.scalar("select count(*) from videos where user_id = :u", u=user) == 1

    # GET .../status: the session is spent.
    status = await http.get(f"/v1/dashboard/upload/{session_id}/status", headers=headers)
    assert status.status_code == 200
    assert status.json()["status"] == "completed"
    assert status.json()["session"]["state"] == "completed"

    # GET /v1/videos/{id} and GET /v1/analyses/{id}.
    video = await http.get(f"/v1/videos/{video_id}", headers=headers)
    assert video.status_code == 200, video.text
    assert video.json()["video_id"] == video_id
    assert video.json()["file_size"] == len(data)
    assert (video.json()["codec"], video.json()["width"], video.json()["height"]) == (
        "h264",
        160,
        120,
    )
    assert video.json()["latest_analysis_id"] == result["analysis_id"]
    analysis = await http.get(f"/v1/analyses/{result['analysis_id']}", headers=headers)
    assert analysis.status_code == 200, analysis.text
    assert analysis.json()["video_id"] == video_id
    assert analysis.json()["status"] == "pending"

    # Another user sees neither the video nor the session.
    stranger = auth(server, new_user("stranger"))
    assert_error(await http.get(f"/v1/videos/{video_id}", headers=stranger), 404, "VIDEO_NOT_FOUND")
    assert_error(
        await http.get(f"/v1/dashboard/upload/{session_id}/status", headers=stranger),
        404,
        "SESSION_NOT_FOUND",
    )

    # DELETE /v1/dashboard/upload/{session_id}: 204, no body, on a fresh session.
    other = await create_session(http, headers)
    deleted = await http.delete(f"/v1/dashboard/upload/{other}", headers=headers)
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert await session_status(http, headers, other) == "cancelled"
    # A cancelled session takes no upload.
    refused = await upload(http, headers, other, data)
    assert_error(refused, 404, "SESSION_NOT_FOUND")


async def test_healthz_and_openapi_document(http: httpx.AsyncClient, server: Running) -> None:
    health = await http.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "SERVING"}

    response = await http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    validate_openapi(doc)  # raises on an invalid Swagger 2.0 document
    assert doc["swagger"] == "2.0"
    routes = {
        "/v1/dashboard/upload/sessions": {"post"},
        "/v1/dashboard/upload/{session_id}/status": {"get"},
        "/v1/dashboard/upload/{session_id}": {"post", "delete"},
        "/v1/videos/{video_id}": {"get"},
        "/v1/analyses/{analysis_id}": {"get"},
    }
    for path, methods in routes.items():
        assert methods <= set(doc["paths"][path]), (path, doc["paths"].get(path))
    upload_op = doc["paths"]["/v1/dashboard/upload/{session_id}"]["post"]
    assert upload_op["consumes"] == ["multipart/form-data"]
    assert [p["name"] for p in upload_op["parameters"]][-1] == "file"
    assert str(server.settings.max_upload_bytes) in upload_op["description"]
    assert "204" in doc["paths"]["/v1/dashboard/upload/{session_id}"]["delete"]["responses"]
    result = doc["definitions"]["UploadResult"]["properties"]
    assert result["upload_status"]["enum"] == ["analyzed", "processing", "analysis_failed"]
    assert set(doc["definitions"]["ErrorResponse"]["required"]) == ERROR_KEYS


# --------------------------------------------------------------------------- headers


async def test_authorization_reaches_the_server(server: Running, http: httpx.AsyncClient) -> None:
    # No header: the server (not the gateway) refuses, on a generated route and on
    # the hand-written upload route alike.
    body = assert_error(
        await http.post("/v1/dashboard/upload/sessions", json={}), 401, "UNAUTHENTICATED"
    )
    assert body["cleanup_performed"] is False
    missing = await http.post("/v1/dashboard/upload/sessions", json={})
    assert missing.headers["www-authenticate"] == "Bearer"
    refused = await http.post(
        f"/v1/dashboard/upload/{uuid.uuid4()}", content=form(b"x" * 1024), headers=MULTIPART
    )
    assert_error(refused, 401, "UNAUTHENTICATED")
    bad = {"Authorization": "Bearer not-a-jwt"}
    assert_error(await http.get(f"/v1/videos/{uuid.uuid4()}", headers=bad), 401, "UNAUTHENTICATED")

    # With the header the server knows the user: the session belongs to it.
    headers = auth(server, new_user("auth"))
    session_id = await create_session(http, headers)
    assert await session_status(http, headers, session_id) == "active"


async def test_request_id_is_kept_or_generated_and_echoed(
    server: Running, http: httpx.AsyncClient
) -> None:
    headers = auth(server, new_user("reqid"))
    given = await http.post(
        "/v1/dashboard/upload/sessions", json={}, headers={**headers, "X-Request-Id": "abc-123"}
    )
    assert given.status_code == 200
    assert given.headers["x-request-id"] == "abc-123"

    generated = await http.post("/v1/dashboard/upload/sessions", json={}, headers=headers)
    assert UUID4.match(generated.headers["x-request-id"]), generated.headers

    # An unusable value (a space in it) is replaced; errors carry the id too.
    replaced = await http.get(
        f"/v1/dashboard/upload/{uuid.uuid4()}/status",
        headers={**headers, "X-Request-Id": "two words"},
    )
    assert replaced.status_code == 404
    assert UUID4.match(replaced.headers["x-request-id"]), replaced.headers
    on_upload = await http.post(
        f"/v1/dashboard/upload/{uuid.uuid4()}",
        content=form(b"x"),
        headers={**headers, **MULTIPART, "X-Request-Id": "upload-req-1"},
    )
    assert on_upload.status_code == 404
    assert on_upload.headers["x-request-id"] == "upload-req-1"


# --------------------------------------------------------------------------- errors


async def test_unknown_session_is_404_session_not_found(
    server: Running, http: httpx.AsyncClient, videos: dict[str, bytes]
) -> None:
    headers = auth(server, new_user("unknown"))
    missing = str(uuid.uuid4())
    body = assert_error(
        await upload(http, headers, missing, videos["mp4"]), 404, "SESSION_NOT_FOUND"
    )
    assert body["details"]["session_id"] == missing
    assert "cleanup_details" in body and "cleanup_performed" in body
    for response in (
        await http.get(f"/v1/dashboard/upload/{missing}/status", headers=headers),
        await http.delete(f"/v1/dashboard/upload/{missing}", headers=headers),
    ):
        assert assert_error(response, 404, "SESSION_NOT_FOUND")["details"]["session_id"] == missing


async def test_not_a_video_is_400_unsupported_format_with_cleanup(
    server: Running, http: httpx.AsyncClient, s3: S3ObjectStore, db: Database
) -> None:
    user = new_user("random")
    headers = auth(server, user)
    session_id = await create_session(http, headers)
    response = await upload(http, headers, session_id, os.urandom(3 * MIB))
    body = assert_error(response, 400, "UNSUPPORTED_FORMAT")
    assert body["cleanup_performed"] is True
    assert body["cleanup_details"]["quota_released"] is True
    assert body["cleanup_details"]["session_cleanup"] is True
    assert await leftovers(user, s3, db) == nothing_left(server)
    # Refused content spends the session.
    assert await session_status(http, headers, session_id) == "cancelled"


async def test_exhausted_quota_is_429(
    server: Running, http: httpx.AsyncClient, videos: dict[str, bytes], db: Database
) -> None:
    user = new_user("quota")
    headers = auth(server, user)
    session_id = await create_session(http, headers)  # creates the user's quota row
    await db.execute("update user_quotas set remaining = 0 where user_id = :u", u=user)

    body = assert_error(
        await upload(http, headers, session_id, videos["mp4"]), 429, "QUOTA_EXCEEDED"
    )
    assert body["details"]["quota_violations"][0]["subject"] == f"user:{user}"
    # The session was not spent by the refusal; a new one is refused up front.
    assert await session_status(http, headers, session_id) == "active"
    body = assert_error(
        await http.post("/v1/dashboard/upload/sessions", headers=headers, json={}),
        429,
        "QUOTA_EXCEEDED",
    )
    assert body["details"]["quota_violations"] == [
        {"subject": f"user:{user}", "description": "no uploads left"}
    ]


async def test_oversize_is_413_by_length_by_count_by_declared_size_and_from_server(
    start_server: StartServer,
    start_gw: StartGateway,
    big_video: bytes,
    s3: S3ObjectStore,
    db: Database,
) -> None:
    limit = 2 * MIB
    running = await start_server(max_upload_bytes=limit)
    gateway = await start_gw(running)
    user = new_user("oversize")
    headers = auth(running, user)
    data = big_video[: 5 * MIB]  # a real MP4's start: the server's sniffing accepts it

    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
        # Content-Length above the limit: answered at once, before the body is read
        # (only the request head and the file part's head are sent here).
        session_id = await create_session(http, headers)
        early = await RawUpload.start(gateway, session_id, headers, file_size=len(data))
        try:
            status, response_headers, raw = await early.response(within_s=10)
        finally:
            await early.close()
        assert status == 413, raw
        assert response_headers["content-type"] == "application/json"
        assert json.loads(raw)["error_code"] == "FILE_TOO_LARGE"
        assert json.loads(raw)["details"]["max_bytes"] == str(limit)

        # No Content-Length (chunked): the file bytes are counted as they stream.
        async def chunked() -> AsyncIterator[bytes]:
            payload = form(data)
            for offset in range(0, len(payload), 256 * 1024):
                yield payload[offset : offset + 256 * 1024]

        response = await http.post(
            f"/v1/dashboard/upload/{session_id}",
            content=chunked(),
            headers={**headers, **MULTIPART},
        )
        assert "content-length" not in response.request.headers
        assert assert_error(response, 413, "FILE_TOO_LARGE")["details"]["max_bytes"] == str(limit)

        # A declared `size` above the limit: refused when the file part starts.
        response = await http.post(
            f"/v1/dashboard/upload/{session_id}",
            content=form(b"\0" * 1024, size=str(5 * MIB)),
            headers={**headers, **MULTIPART},
        )
        assert_error(response, 413, "FILE_TOO_LARGE")
        # The gateway's refusals cancel the stream: the session can still be written.
        assert await session_status(http, headers, session_id) == "active"

    # A gateway configured with a larger limit than the server's: the server's own
    # FILE_TOO_LARGE (INVALID_ARGUMENT over gRPC) is still 413 over HTTP.
    lax = await start_gw(running, max_upload_bytes=64 * MIB)
    async with httpx.AsyncClient(base_url=lax.base_url, timeout=60) as http:
        fresh = await create_session(http, headers)
        response = await http.post(
            f"/v1/dashboard/upload/{fresh}",
            content=form(data),
            headers={**headers, **MULTIPART},
        )
        body = assert_error(response, 413, "FILE_TOO_LARGE")
        assert body["details"]["max_bytes"] == str(limit)
        assert await session_status(http, headers, fresh) == "cancelled"  # refused content
        # Cancelling the first session releases whatever it still held.
        cancelled = await http.delete(f"/v1/dashboard/upload/{session_id}", headers=headers)
        assert cancelled.status_code == 204
    await wait_until(lambda: equals(leftovers(user, s3, db), nothing_left(running)))


async def test_non_multipart_body_is_415_and_missing_boundary_400(
    server: Running, http: httpx.AsyncClient
) -> None:
    headers = auth(server, new_user("ctype"))
    session_id = await create_session(http, headers)
    response = await http.post(
        f"/v1/dashboard/upload/{session_id}", json={"file": "AAAA"}, headers=headers
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    response = await http.post(
        f"/v1/dashboard/upload/{session_id}",
        content=form(b"x"),
        headers={**headers, "Content-Type": "multipart/form-data"},
    )
    assert_error(response, 400, "MALFORMED_MULTIPART")


FORM_ERRORS: dict[str, tuple[Callable[[bytes], bytes], str, str]] = {
    # case: (body from the video bytes, error_code, field)
    # Only filename, content_type and metadata may follow the file (see the tests of
    # form order below); a field the header needed before the bytes may not.
    "size-after-file": (
        lambda v: FILE_HEAD + v + b"\r\n" + text_part("size", str(len(v))) + CLOSING[2:],
        "INVALID_FIELD",
        "size",
    ),
    "unknown-after-file": (
        lambda v: FILE_HEAD + v + b"\r\n" + text_part("note", "x") + CLOSING[2:],
        "INVALID_FIELD",
        "note",
    ),
    "field-before-and-after-file": (
        lambda v: (
            text_part("filename", "a.mp4")
            + FILE_HEAD
            + v
            + b"\r\n"
            + text_part("filename", "b.mp4")
            + CLOSING[2:]
        ),
        "INVALID_FIELD",
        "filename",
    ),
    "late-metadata-not-object": (
        lambda v: FILE_HEAD + v + b"\r\n" + text_part("metadata", "[1]") + CLOSING[2:],
        "INVALID_FIELD",
        "metadata",
    ),
    "second-file": (
        lambda v: FILE_HEAD + v + b"\r\n" + FILE_HEAD + v + CLOSING,
        "INVALID_FIELD",
        "file",
    ),
    "no-file": (lambda v: text_part("filename", "a.mp4") + CLOSING[2:], "INVALID_FIELD", "file"),
    "metadata-not-object": (lambda v: form(v, metadata="[1, 2]"), "INVALID_FIELD", "metadata"),
    "metadata-too-large": (
        lambda v: form(v, metadata=json.dumps({"k": "x" * 300_000})),
        "METADATA_TOO_LARGE",
        "metadata",
    ),
    "size-not-a-number": (lambda v: form(v, size="lots"), "INVALID_FIELD", "size"),
    "truncated-body": (lambda v: FILE_HEAD + v, "MALFORMED_MULTIPART", ""),
}


@pytest.mark.parametrize("case", list(FORM_ERRORS))
async def test_form_errors_are_400_and_leave_the_session_writable(
    case: str,
    server: Running,
    http: httpx.AsyncClient,
    videos: dict[str, bytes],
    s3: S3ObjectStore,
    db: Database,
) -> None:
    make_body, error_code, field = FORM_ERRORS[case]
    user = new_user(case)
    headers = auth(server, user)
    session_id = await create_session(http, headers)
    response = await http.post(
        f"/v1/dashboard/upload/{session_id}",
        content=make_body(videos["mp4"]),
        headers={**headers, **MULTIPART},
    )
    body = assert_error(response, 400, error_code)
    if field:
        assert body["details"]["field_violations"][0]["field"] == field

    # The stream was cancelled without finish_write: no video, and the same session
    # takes the upload afterwards (resumed where the server stands).
    await assert_interrupted_cleanly(server, http, headers, session_id, user, s3, db)
    result = await finish_upload(http, headers, session_id, videos["mp4"])
    await assert_stored_once(server, user, result, videos["mp4"], s3, db)


# --------------------------------------------------------------------------- form order


def ordered_form(data: bytes, *, late: bool, **fields: str) -> bytes:
    """An upload form with the text fields before the file, or (``late``) after it,
    as many form builders send them."""
    text = b"".join(text_part(k, v) for k, v in fields.items())
    if not late:
        return text + FILE_HEAD + data + CLOSING
    return FILE_HEAD + data + b"\r\n" + text + CLOSING[2:]


@pytest.mark.parametrize("order", ["before", "after"])
async def test_form_fields_before_or_after_the_file_are_recorded(
    order: str,
    server: Running,
    http: httpx.AsyncClient,
    videos: dict[str, bytes],
    s3: S3ObjectStore,
    db: Database,
) -> None:
    user = new_user(f"order-{order}")
    headers = auth(server, user)
    session_id = await create_session(http, headers)
    metadata = {"camera": "rear", "take": 3, "tags": ["a", "b"]}
    response = await http.post(
        f"/v1/dashboard/upload/{session_id}",
        content=ordered_form(
            videos["mp4"],
            late=order == "after",
            filename="renamed.mp4",
            content_type="video/x-test",
            metadata=json.dumps(metadata),
        ),
        headers={**headers, **MULTIPART},
    )
    assert response.status_code == 201, response.text
    result = response.json()
    assert (result["filename"], result["metadata"]) == ("renamed.mp4", metadata)

    # What was recorded, read back through the gateway (and the row's content type).
    video = await http.get(f"/v1/videos/{result['video_id']}", headers=headers)
    assert video.status_code == 200, video.text
    assert (video.json()["filename"], video.json()["metadata"]) == ("renamed.mp4", metadata)
    content_type = await db.scalar(
        "select content_type from videos where id = :v", v=result["video_id"]
    )
    assert content_type == "video/x-test"
    await assert_stored_once(server, user, result, videos["mp4"], s3, db)


async def test_oversized_late_metadata_is_refused_like_early_metadata(
    server: Running, http: httpx.AsyncClient, videos: dict[str, bytes], s3: S3ObjectStore,
    db: Database,
) -> None:  # fmt: skip
    """Over the server's metadata limit (16 KiB) but under the gateway's field limit
    (256 KiB): the trailer is refused by the server with the header's reason, and the
    bytes already stored are discarded (refused content spends the session)."""
    metadata = json.dumps({"k": "x" * 20_000})
    assert len(metadata) > server.settings.max_metadata_bytes
    answers = {}
    for order in ("before", "after"):
        user = new_user(f"big-md-{order}")
        headers = auth(server, user)
        session_id = await create_session(http, headers)
        response = await http.post(
            f"/v1/dashboard/upload/{session_id}",
            content=ordered_form(videos["mp4"], late=order == "after", metadata=metadata),
            headers={**headers, **MULTIPART},
        )
        body = assert_error(response, 400, "METADATA_TOO_LARGE")
        answers[order] = (body["error_code"], body["details"]["max_metadata_bytes"])
        # No object, no open multipart upload, no row, no reservation, the quota whole.
        assert await leftovers(user, s3, db) == nothing_left(server)
        state = await session_status(http, headers, session_id)
        assert state == ("active" if order == "before" else "cancelled")
    assert answers["before"] == answers["after"], answers


async def test_late_metadata_over_the_field_limit_is_refused_like_early_metadata(
    server: Running, http: httpx.AsyncClient, videos: dict[str, bytes], s3: S3ObjectStore,
    db: Database,
) -> None:  # fmt: skip
    """Over the gateway's field limit: the gateway refuses it without buffering it,
    with the same reason and field whichever side of the file it is on. After the
    file, the stream is cancelled without finish_write: no video, the quota whole,
    the session writable (what it kept is a resumable upload, released on cancel)."""
    metadata = json.dumps({"k": "x" * 300_000})

    async def refuse(order: str) -> None:
        user = new_user(f"huge-md-{order}")
        headers = auth(server, user)
        session_id = await create_session(http, headers)
        response = await http.post(
            f"/v1/dashboard/upload/{session_id}",
            content=ordered_form(videos["mp4"], late=order == "after", metadata=metadata),
            headers={**headers, **MULTIPART},
        )
        body = assert_error(response, 400, "METADATA_TOO_LARGE")
        assert body["details"]["field_violations"][0]["field"] == "metadata"
        await assert_interrupted_cleanly(server, http, headers, session_id, user, s3, db)
        cancelled = await http.delete(f"/v1/dashboard/upload/{session_id}", headers=headers)
        assert cancelled.status_code == 204
        await wait_until(lambda: equals(leftovers(user, s3, db), nothing_left(server)))

    await refuse("before")
    await refuse("after")


async def test_routing_errors_keep_their_status(server: Running, http: httpx.AsyncClient) -> None:
    headers = auth(server, new_user("routing"))
    assert_error(await http.get("/v1/nothing-here", headers=headers), 404, "NOT_FOUND")
    assert_error(
        await http.put(f"/v1/videos/{uuid.uuid4()}", headers=headers), 405, "METHOD_NOT_ALLOWED"
    )


async def test_second_upload_on_a_busy_session_is_409(
    server: Running, gateway: Gateway, http: httpx.AsyncClient, big_video: bytes
) -> None:
    headers = auth(server, new_user("busy"))
    session_id = await create_session(http, headers)
    first = await RawUpload.start(gateway, session_id, headers, file_size=len(big_video))
    try:
        await first.send(big_video[: 2 * MIB])  # the server holds the session's lock now
        await asyncio.sleep(0.5)
        second = await upload(http, headers, session_id, big_video[: 64 * 1024])
        body = assert_error(second, 409, "SESSION_BUSY")
        assert body["details"]["session_id"] == session_id
        # The first stream is unaffected and completes.
        await first.send(big_video[2 * MIB :] + CLOSING)
        status, response_headers, raw = await first.response(within_s=60)
        assert status == 201, raw
        assert json.loads(raw)["file_size"] == len(big_video)
        assert response_headers["location"].startswith("/v1/videos/")
    finally:
        await first.close()


async def test_stalled_upload_is_408_and_released(
    server: Running,
    start_gw: StartGateway,
    videos: dict[str, bytes],
    s3: S3ObjectStore,
    db: Database,
) -> None:
    # 1.5 s rather than 1 s: off the beat of the server's 1 s session-lock watch, so
    # this test is about the gateway's timeout, not about cancelling that watch.
    gateway = await start_gw(server, args=["-upload-idle-timeout", "1.5s"])
    user = new_user("stall")
    headers = auth(server, user)
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
        session_id = await create_session(http, headers)
        stalled = await RawUpload.start(gateway, session_id, headers, file_size=len(videos["mp4"]))
        try:
            await stalled.send(videos["mp4"][:1024])  # ... and nothing more
            status, _, raw = await stalled.response(within_s=15)
        finally:
            await stalled.close()
        assert status == 408, raw
        assert json.loads(raw)["error_code"] == "UPLOAD_IDLE_TIMEOUT"
        await assert_interrupted_cleanly(server, http, headers, session_id, user, s3, db)
        # Cancelling the session releases whatever the server still held for it.
        cancelled = await http.delete(f"/v1/dashboard/upload/{session_id}", headers=headers)
        assert cancelled.status_code == 204
    await wait_until(lambda: equals(leftovers(user, s3, db), nothing_left(server)))


async def test_unreachable_upstream_is_503(server: Running, start_gw: StartGateway) -> None:
    gateway = await start_gw(server, upstream=f"127.0.0.1:{free_port()}", wait_healthy=False)
    headers = auth(server, new_user("down"))
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
        health = await http.get("/healthz")
        assert health.status_code == 503
        assert_error(
            await http.post("/v1/dashboard/upload/sessions", headers=headers, json={}),
            503,
            "UNAVAILABLE",
        )


async def test_cors_preflight(server: Running, start_gw: StartGateway) -> None:
    allowed = "https://dash.example.com"
    gateway = await start_gw(server, args=["-cors-origins", allowed])
    preflight = {"Access-Control-Request-Method": "POST"}
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
        ok = await http.options(
            "/v1/dashboard/upload/sessions", headers={**preflight, "Origin": allowed}
        )
        assert ok.status_code == 204
        assert ok.headers["access-control-allow-origin"] == allowed
        denied = await http.options(
            "/v1/dashboard/upload/sessions", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert_error(denied, 403, "CORS_ORIGIN_NOT_ALLOWED")


# --------------------------------------------------------------------------- streaming


def top_level_boxes(data: bytes) -> list[tuple[bytes, int]]:
    boxes, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        assert size >= 8, (kind, size)
        boxes.append((kind, size))
        offset += size
    return boxes


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread."""

    def __init__(self, gateway: Gateway, interval: float = 0.05) -> None:
        self.gateway, self.interval = gateway, interval
        self.baseline = gateway.rss_bytes()
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.gateway.rss_bytes())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


async def test_300_mib_upload_streams_through_in_bounded_memory(
    start_server: StartServer,
    start_gw: StartGateway,
    big_video: bytes,
    s3: S3ObjectStore,
) -> None:
    """A valid 300 MiB MP4 (big_video plus a large `free` box after `moov`: chunk
    offsets stay valid and demuxers skip it) produced lazily, never held in memory."""
    assert top_level_boxes(big_video)[-1][0] == b"moov", top_level_boxes(big_video)
    file_size = 300 * MIB
    free_payload = file_size - len(big_video) - 8
    running = await start_server(max_upload_bytes=400 * MIB)
    gateway = await start_gw(running)
    headers = auth(running, new_user("large"))
    zeros = bytes(MIB)
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        yield FILE_HEAD
        for piece in (big_video, struct.pack(">I4s", 8 + free_payload, b"free")):
            digest.update(piece)
            yield piece
        left = free_payload
        while left:
            piece = zeros[: min(left, MIB)]
            digest.update(piece)
            left -= len(piece)
            yield piece
        yield CLOSING

    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=120) as http:
        session_id = await create_session(http, headers)
        length = len(FILE_HEAD) + file_size + len(CLOSING)
        started = time.monotonic()
        with RssSampler(gateway) as rss:
            response = await http.post(
                f"/v1/dashboard/upload/{session_id}",
                content=body(),
                headers={**headers, **MULTIPART, "Content-Length": str(length)},
            )
        elapsed = time.monotonic() - started
    assert response.status_code == 201, response.text
    result = response.json()
    print(
        f"\ngateway 300 MiB upload: {file_size / MIB / elapsed:.1f} MiB/s ({elapsed:.1f} s), "
        f"gateway RSS {rss.baseline / MIB:.1f} MiB -> peak {rss.peak / MIB:.1f} MiB "
        f"(+{rss.growth / MIB:.1f} MiB, {rss.samples} samples)"
    )
    assert result["file_size"] == file_size
    assert result["file_hash"] == digest.hexdigest()
    assert await s3.object_size(result["s3_key"]) == file_size
    assert await s3.read_range(result["s3_key"], start=0, length=len(big_video)) == big_video
    assert rss.samples > 10
    assert rss.growth < 64 * MIB, f"gateway RSS grew by {rss.growth / MIB:.1f} MiB"


async def test_client_dropping_mid_upload_leaves_no_trace_and_the_session_writable(
    server: Running,
    gateway: Gateway,
    http: httpx.AsyncClient,
    big_video: bytes,
    s3: S3ObjectStore,
    db: Database,
) -> None:
    """A client resets the connection mid-body: the gateway must cancel the gRPC
    stream (never finish_write), so the server stops, writes no video, and releases
    the session: it discards what it had, or keeps it for a resume (a resumable
    server); either way the session takes the upload again and ends up stored once."""
    user = new_user("drop")
    headers = auth(server, user)
    session_id = await create_session(http, headers)
    raw = await RawUpload.start(gateway, session_id, headers, file_size=len(big_video))
    try:
        # ~19 MiB, all but the file's last 64 KiB (and the closing boundary): the server
        # has started the multipart upload (8 MiB parts) and holds a quota reservation.
        await raw.send(big_video[: -64 * 1024])

        async def in_flight() -> bool:
            held = await leftovers(user, s3, db)
            return bool(held["multipart"] == 1 and held["reservations"] == 1)

        await wait_until(in_flight)
    finally:
        await raw.reset()

    await assert_interrupted_cleanly(server, http, headers, session_id, user, s3, db)
    if await committed_bytes(http, headers, session_id) == 0:
        # The server discarded the stream: nothing is left for the user at all.
        assert await leftovers(user, s3, db) == nothing_left(server)

    # The same session takes the whole file (resumed where the server stands).
    result = await finish_upload(http, headers, session_id, big_video)
    await assert_stored_once(server, user, result, big_video, s3, db)
    assert await session_status(http, headers, session_id) == "completed"
