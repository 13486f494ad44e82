"""Playable URLs: ``s3_url`` is a presigned GET on S3, and on the embedded store the
gateway's signed content route (HTTP ranges, no token needed); never a server path."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from conftest import StartServer
from pydantic import SecretStr
from support.gateway import Gateway, start_gateway

from server.config import Settings
from server.main import link_signer, token_authority
from server.storage.signing import LinkSigner


@pytest.fixture
async def embedded_gateway(
    start_server: StartServer, embedded_settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, str, LinkSigner]]:
    running = await start_server(
        embedded_settings.model_copy(
            update={"url_signing_key": SecretStr("content-test-key-" + uuid.uuid4().hex)}
        )
    )
    gateway = await asyncio.to_thread(
        start_gateway,
        upstream=running.target,
        max_upload_bytes=running.settings.max_upload_bytes,
        workdir=tmp_path,
    )
    user = f"content-{uuid.uuid4().hex[:8]}"
    try:
        yield gateway, user, link_signer(running.settings)
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_the_embedded_store_gives_a_signed_playable_content_url(
    embedded_settings: Settings,
    embedded_gateway: tuple[Gateway, str, LinkSigner],
    videos: dict[str, bytes],
) -> None:
    gateway, user, signer = embedded_gateway
    clip = videos["mp4"]
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
        token = token_authority(embedded_settings).mint(user)
        auth = {"Authorization": f"Bearer {token}"}
        created = await http.post("/v1/dashboard/upload/sessions", headers=auth, json={})
        session_id = created.json()["session_id"]
        response = await http.post(
            f"/v1/dashboard/upload/{session_id}",
            headers=auth,
            files={"file": ("clip.mp4", clip, "video/mp4")},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        url = body["s3_url"]
        video_id = body["video_id"]
        parts = urlsplit(url)
        assert parts.path == f"/v1/videos/{video_id}/content", url
        assert not parts.scheme.startswith("file") and "var/objects" not in url
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert set(query) == {"user", "expires", "signature"}

        # A <video src> sends no token: the signed URL alone plays, whole and in ranges.
        whole = await http.get(url)
        assert whole.status_code == 200
        assert whole.content == clip
        assert whole.headers["content-type"] == "video/mp4"
        assert whole.headers["accept-ranges"] == "bytes"
        part = await http.get(url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206
        assert part.content == clip[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(clip)}"
        tail = await http.get(url, headers={"Range": "bytes=-5"})
        assert (tail.status_code, tail.content) == (206, clip[-5:])
        open_ended = await http.get(url, headers={"Range": f"bytes={len(clip) - 3}-"})
        assert open_ended.content == clip[-3:]
        past = await http.get(url, headers={"Range": f"bytes={len(clip)}-"})
        assert past.status_code == 416
        assert "RANGE_NOT_SATISFIABLE" in past.text
        head = await http.head(url)
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(clip))
        assert head.content == b""

        # The token works too; a forged or expired link, or someone else's, does not.
        with_token = await http.get(f"/v1/videos/{video_id}/content", headers=auth)
        assert with_token.content == clip
        forged = {**query, "signature": "0" * 64}
        refused = await http.get(f"{parts.path}?{urlencode(forged)}")
        assert refused.status_code == 401
        old = signer.sign(user_id=user, video_id=video_id, lifetime_seconds=-10)
        expired = {"user": user, "expires": old.expires, "signature": old.signature}
        assert (await http.get(f"{parts.path}?{urlencode(expired)}")).status_code == 401
        other = token_authority(embedded_settings).mint(f"other-{uuid.uuid4().hex[:6]}")
        foreign = await http.get(
            f"/v1/videos/{video_id}/content", headers={"Authorization": f"Bearer {other}"}
        )
        assert foreign.status_code == 404
        # The same URL comes back from GET /v1/videos/{id}, freshly signed.
        video = await http.get(f"/v1/videos/{video_id}", headers=auth)
        assert urlsplit(video.json()["s3_url"]).path == parts.path
        assert int(query["expires"]) > time.time()


async def test_s3_gives_a_presigned_url_that_plays_directly(
    start_server: StartServer, videos: dict[str, bytes]
) -> None:
    running = await start_server(playback_url_seconds=120)
    client = running.client()
    clip = videos["mp4"]
    result = await client.upload(clip)
    url = result.s3_url
    assert url.startswith("http://127.0.0.1:"), url  # MinIO's endpoint, presigned
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=120" in url
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(url)
        assert response.status_code == 200
        assert response.content == clip
        assert response.headers["content-type"] == "video/mp4"
        assert response.headers["content-disposition"].startswith("inline;")
        ranged = await http.get(url, headers={"Range": "bytes=0-9"})
        assert (ranged.status_code, ranged.content) == (206, clip[:10])
        tampered = url.replace("X-Amz-Expires=120", "X-Amz-Expires=999")
        assert (await http.get(tampered)).status_code == 403
    video = await client.video(result.video_id)
    assert video.s3_url.startswith("http://127.0.0.1:")
