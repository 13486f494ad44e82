"""The tus 1.0 endpoint of the gateway (/v1/tus/), driven by a real tus client library
(tuspy) and by plain HTTP where a test needs one exact request, in front of the real
server on PostgreSQL, Redis and MinIO.

A tus upload is a vidscan upload session: the offset a tus client sees is the
session's committed_bytes, so a dropped PATCH resumes where the server's bytes end,
through any gateway; refusals carry the REST API's JSON error body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Database, Running, StartServer
from support.gateway import Gateway, start_gateway
from support.leftovers import leftovers, nothing_left
from support.tcpproxy import TcpProxy
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.uploader.uploader import Uploader
from vidscan.v1 import analysis_pb2, upload_pb2

from server.storage.s3 import S3ObjectStore

TUS = {"Tus-Resumable": "1.0.0"}
MIB = 1024 * 1024


class Sha256Uploader(Uploader):
    """tuspy's uploader with the checksum extension on sha256 (its default is sha1,
    which vidscan's gateway does not offer)."""

    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


@pytest.fixture
async def gateways(server: Running, tmp_path: Path) -> AsyncIterator[list[Gateway]]:
    """Two gateway replicas in front of the same server."""
    started = [
        await asyncio.to_thread(
            start_gateway,
            upstream=server.target,
            max_upload_bytes=server.settings.max_upload_bytes,
            workdir=tmp_path,
        )
        for _ in range(2)
    ]
    yield started
    for gateway in started:
        await asyncio.to_thread(gateway.stop)


def new_user(tag: str) -> str:
    return f"tus-{tag}-{uuid.uuid4().hex[:10]}"


def auth(running: Running, user: str) -> dict[str, str]:
    ((key, value),) = running.client(user).metadata
    return {key.title(): value}


def uploader(
    base_url: str,
    headers: Mapping[str, str],
    data: bytes,
    *,
    cls: type[Uploader] = Uploader,
    url: str | None = None,
    chunk_size: int = 4 * MIB,
    **options: Any,
) -> Uploader:
    client = TusClient(f"{base_url}/v1/tus/", headers=dict(headers))
    return cls(
        file_stream=BytesIO(data),
        client=client,
        url=url,
        chunk_size=chunk_size,
        metadata=options.pop("metadata", {"filename": "clip.mp4", "filetype": "video/mp4"}),
        **options,
    )


def error_of(error: TusCommunicationError) -> tuple[int | None, str]:
    """The HTTP status and the JSON error body's error_code of a refused request."""
    content = error.response_content
    body = json.loads(content if isinstance(content, bytes | str) else b"{}")
    return error.status_code, str(body["error_code"])


async def test_a_tus_client_uploads_a_video_and_gets_its_result(
    server: Running, gateways: list[Gateway], big_video: bytes
) -> None:
    gateway = gateways[0]
    user = new_user("upload")
    headers = auth(server, user)
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
        options = await http.options("/v1/tus/", headers=TUS)
        assert options.status_code in (200, 204), options.text
        assert "creation" in options.headers["Tus-Extension"]
        assert "termination" in options.headers["Tus-Extension"]
        assert "checksum" in options.headers["Tus-Extension"]
        assert options.headers["Tus-Checksum-Algorithm"] == "sha256"
        assert int(options.headers["Tus-Max-Size"]) == server.settings.max_upload_bytes

        metadata = {
            "filename": "holiday.mp4",
            "filetype": "video/mp4",
            "metadata": json.dumps({"camera": "phone", "takes": 3}),
            "sha256": hashlib.sha256(big_video).hexdigest(),
        }
        up = uploader(gateway.base_url, headers, big_video, metadata=metadata)
        await asyncio.to_thread(up.upload)  # five PATCHes of 4 MiB and one shorter
        assert up.url is not None
        session_id = up.url.rstrip("/").rsplit("/", 1)[1]
        last: dict[str, str] = up.request.response_headers if up.request else {}
        assert last["vidscan-result"] == f"/v1/dashboard/upload/{session_id}/result"
        video_id, analysis_id = last["vidscan-video-id"], last["vidscan-analysis-id"]

        head = await http.head(up.url, headers={**headers, **TUS})
        assert head.status_code == 200
        assert int(head.headers["Upload-Offset"]) == int(head.headers["Upload-Length"])
        assert int(head.headers["Upload-Length"]) == len(big_video)

        result = await http.get(last["vidscan-result"], headers=headers)
        assert result.status_code == 200, result.text
        body = result.json()
        assert (body["video_id"], body["analysis_id"]) == (video_id, analysis_id)
        assert body["file_hash"] == hashlib.sha256(big_video).hexdigest()
        assert (body["filename"], int(body["file_size"])) == ("holiday.mp4", len(big_video))
        assert body["metadata"] == {"camera": "phone", "takes": 3}

    # The same session, seen over gRPC: completed, with the intent tus gave it.
    client = server.client(user)
    status = await client.status(session_id)
    assert status.session.state == upload_pb2.UPLOAD_SESSION_STATE_COMPLETED
    assert status.session.video_id == video_id
    assert status.session.intent.filename == "holiday.mp4"
    assert status.session.intent.declared_size == len(big_video)
    video = await client.analyses.GetVideo(
        analysis_pb2.GetVideoRequest(video_id=video_id), metadata=client.metadata
    )
    assert video.video.filename == "holiday.mp4"


async def test_a_dropped_patch_resumes_at_the_committed_offset_through_another_gateway(
    server: Running, gateways: list[Gateway], big_video: bytes
) -> None:
    """One PATCH with the whole file, cut after 7 MiB by the network: what reached the
    server stays committed, and a new tus client (as a browser that reloads) resumes
    from there through the other gateway replica."""
    first, second = gateways
    user = new_user("resume")
    headers = auth(server, user)
    proxy = TcpProxy(first.base_url.removeprefix("http://"))
    try:
        up = uploader(f"http://{proxy.target}", headers, big_video, chunk_size=len(big_video))
        await asyncio.to_thread(up.set_url, await asyncio.to_thread(up.create_url))
        proxy.cut_after(7 * MIB)
        with pytest.raises((TusUploadFailed, TusCommunicationError)):
            await asyncio.to_thread(up.upload)
        assert proxy.cuts == 1
    finally:
        proxy.stop()
    assert up.url is not None
    session_id = up.url.rstrip("/").rsplit("/", 1)[1]
    moved = up.url.replace(f"http://{proxy.target}", second.base_url)

    async with httpx.AsyncClient(timeout=60) as http:
        # The cut stream's suspension settles on the server a moment after the drop.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            head = await http.head(moved, headers={**headers, **TUS})
            assert head.status_code == 200, head.text
            offset = int(head.headers["Upload-Offset"])
            status = await server.client(user).status(session_id)
            if offset > 0 and offset == status.session.committed_bytes:
                break
            assert asyncio.get_running_loop().time() < deadline, (offset, status)
            await asyncio.sleep(0.2)
    assert 0 < offset < len(big_video)

    # tuspy asks for the offset (HEAD) in its constructor: off the event loop.
    resumed = await asyncio.to_thread(uploader, second.base_url, headers, big_video, url=moved)
    assert resumed.offset == offset
    await asyncio.to_thread(resumed.upload)
    last: dict[str, str] = resumed.request.response_headers if resumed.request else {}
    video = await server.client(user).video(last["vidscan-video-id"])
    assert video.file_size == len(big_video)
    assert video.file_hash == hashlib.sha256(big_video).hexdigest()


async def test_refusals_reach_the_tus_client_with_the_json_error_body(
    server: Running,
    gateways: list[Gateway],
    videos: dict[str, bytes],
    s3: S3ObjectStore,
    db: Database,
) -> None:
    gateway = gateways[0]
    user = new_user("refused")
    headers = auth(server, user)

    async def refused(data: bytes, **options: Any) -> tuple[int | None, str]:
        up = uploader(gateway.base_url, headers, data, **options)
        with pytest.raises(TusCommunicationError) as caught:
            await asyncio.to_thread(up.upload)
        return error_of(caught.value)

    assert await refused(b"this is not a video" * 500) == (400, "UNSUPPORTED_FORMAT")
    wrong_hash = {"filename": "a.mp4", "sha256": "0" * 64}
    assert await refused(videos["mp4"], metadata=wrong_hash) == (400, "HASH_MISMATCH")
    # Refused at creation, before a byte is sent:
    assert await refused(videos["mp4"], metadata={"metadata": "[1, 2]"}) == (400, "INVALID_FIELD")
    assert await refused(videos["mp4"], metadata={"model": "no-such-model"}) == (
        400,
        "MODEL_NOT_ALLOWED",
    )
    assert await refused(b"") == (400, "EMPTY_UPLOAD")
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
        too_big = await http.post(
            "/v1/tus/",
            headers={**headers, **TUS, "Upload-Length": str(server.settings.max_upload_bytes + 1)},
        )
        assert too_big.status_code == 413, too_big.text
        assert too_big.json()["error_code"] == "FILE_TOO_LARGE"
        anonymous = await http.post("/v1/tus/", headers={**TUS, "Upload-Length": "10"})
        assert anonymous.status_code == 401
        assert anonymous.json()["error_code"] == "UNAUTHENTICATED"
    assert await leftovers(user, s3, db) == nothing_left(server)

    await db.execute("update user_quotas set remaining = 0 where user_id = :u", u=user)
    assert await refused(videos["mp4"]) == (429, "QUOTA_EXCEEDED")


async def test_the_checksum_extension_with_sha256(
    server: Running, gateways: list[Gateway], big_video: bytes
) -> None:
    gateway = gateways[0]
    user = new_user("checksum")
    headers = auth(server, user)
    up = uploader(gateway.base_url, headers, big_video, cls=Sha256Uploader, upload_checksum=True)
    await asyncio.to_thread(up.upload)
    last: dict[str, str] = up.request.response_headers if up.request else {}
    video = await server.client(user).video(last["vidscan-video-id"])
    assert video.file_hash == hashlib.sha256(big_video).hexdigest()

    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
        created = await http.post(
            "/v1/tus/", headers={**headers, **TUS, "Upload-Length": str(len(big_video))}
        )
        assert created.status_code == 201, created.text
        location = created.headers["Location"]
        chunk = big_video[: 2 * MIB]
        patch = {**headers, **TUS, "Content-Type": "application/offset+octet-stream"}

        def checksum(algorithm: str, data: bytes) -> str:
            digest = hashlib.new(algorithm, data).digest()
            return f"{algorithm} {base64.b64encode(digest).decode()}"

        wrong = await http.patch(
            location,
            content=chunk,
            headers={
                **patch,
                "Upload-Offset": "0",
                "Upload-Checksum": checksum("sha256", chunk[:-1] + b"x"),
            },
        )
        assert wrong.status_code == 460, wrong.text
        assert wrong.json()["error_code"] == "CHECKSUM_MISMATCH"
        sha1 = await http.patch(
            location,
            content=chunk,
            headers={**patch, "Upload-Offset": "0", "Upload-Checksum": checksum("sha1", chunk)},
        )
        assert sha1.status_code == 400
        assert sha1.json()["error_code"] == "CHECKSUM_NOT_SUPPORTED"
        head = await http.head(location, headers={**headers, **TUS})
        assert head.headers["Upload-Offset"] == "0"  # nothing of either body was stored

        right = await http.patch(
            location,
            content=chunk,
            headers={**patch, "Upload-Offset": "0", "Upload-Checksum": checksum("sha256", chunk)},
        )
        assert right.status_code == 204, right.text
        assert right.headers["Upload-Offset"] == str(len(chunk))
        # A PATCH at another offset than the committed one: tusd's 409.
        stale = await http.patch(location, content=chunk, headers={**patch, "Upload-Offset": "0"})
        assert stale.status_code == 409


async def test_termination_cancels_the_session_and_frees_everything(
    server: Running,
    gateways: list[Gateway],
    big_video: bytes,
    s3: S3ObjectStore,
    db: Database,
) -> None:
    gateway = gateways[0]
    user = new_user("terminate")
    headers = auth(server, user)
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
        created = await http.post(
            "/v1/tus/",
            headers={
                **headers,
                **TUS,
                "Upload-Length": str(len(big_video)),
                "Upload-Metadata": "filename " + base64.b64encode(b"gone.mp4").decode(),
            },
        )
        assert created.status_code == 201, created.text
        location = created.headers["Location"]
        sent = await http.patch(
            location,
            content=big_video[: 6 * MIB],
            headers={
                **headers,
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert sent.status_code == 204, sent.text
        assert sent.headers["Upload-Offset"] == str(6 * MIB)
        head = await http.head(location, headers={**headers, **TUS})
        assert (
            head.headers["Upload-Metadata"] == "filename " + base64.b64encode(b"gone.mp4").decode()
        )

        deleted = await http.delete(location, headers={**headers, **TUS})
        assert deleted.status_code == 204, deleted.text
        gone = await http.head(location, headers={**headers, **TUS})
        assert gone.status_code in (404, 410)
        other = auth(server, new_user("stranger"))
        assert (await http.head(location, headers={**other, **TUS})).status_code == 404
    session_id = location.rstrip("/").rsplit("/", 1)[1]
    status = await server.client(user).status(session_id)
    assert status.session.state == upload_pb2.UPLOAD_SESSION_STATE_CANCELLED
    assert await leftovers(user, s3, db) == nothing_left(server)


async def test_a_sealed_upload_is_finished_by_the_next_head(
    start_server: StartServer, videos: dict[str, bytes], tmp_path: Path
) -> None:
    """The client goes away after its last byte, while the server is finishing the
    upload (held at the seal): every byte is stored, so the next HEAD -- a tus client
    resuming sees offset == length and calls it done -- finishes the session first, and
    the result is there to GET."""
    gate = tmp_path / "gate"
    running = await start_server(fault_points=f"sealed=wait:{gate}")
    gateway = await asyncio.to_thread(
        start_gateway,
        upstream=running.target,
        max_upload_bytes=running.settings.max_upload_bytes,
        workdir=tmp_path,
    )
    data = videos["mp4"]
    headers = auth(running, new_user("sealed"))
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
            created = await http.post(
                "/v1/tus/",
                headers={
                    **headers,
                    **TUS,
                    "Upload-Length": str(len(data)),
                    "Upload-Metadata": "filename " + base64.b64encode(b"sealed.mp4").decode(),
                },
            )
            assert created.status_code == 201, created.text
            location = created.headers["Location"]
            patching = asyncio.ensure_future(
                http.patch(
                    location,
                    content=data,
                    headers={
                        **headers,
                        **TUS,
                        "Upload-Offset": "0",
                        "Content-Type": "application/offset+octet-stream",
                    },
                )
            )
            reached = gate.with_name(gate.name + ".reached")
            deadline = asyncio.get_running_loop().time() + 30
            while not reached.exists():
                assert asyncio.get_running_loop().time() < deadline, "never reached the seal"
                await asyncio.sleep(0.05)
            patching.cancel()  # the client is gone while the server finishes
            with contextlib.suppress(asyncio.CancelledError):
                await patching
            gate.touch()

            deadline = asyncio.get_running_loop().time() + 30
            while True:  # the cut stream may hold the session for a moment (409)
                head = await http.head(location, headers={**headers, **TUS})
                if head.status_code == 200:
                    break
                assert head.status_code == 409, (head.status_code, head.text)
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
            assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))
            session_id = location.rstrip("/").rsplit("/", 1)[1]
            result = await http.get(f"/v1/dashboard/upload/{session_id}/result", headers=headers)
            assert result.status_code == 200, result.text
            body = result.json()
            assert (body["filename"], int(body["file_size"])) == ("sealed.mp4", len(data))
            assert body["file_hash"] == hashlib.sha256(data).hexdigest()
    finally:
        await asyncio.to_thread(gateway.stop)
