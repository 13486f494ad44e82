"""UploadVideo end to end on real PostgreSQL, Redis and MinIO."""

from __future__ import annotations

import hashlib
import struct
import uuid
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from aiobotocore.session import get_session
from conftest import BUCKET, Database, Running, StartServer
from support.rpc import details
from vidscan.v1 import analysis_pb2, upload_pb2

from server.config import Settings
from server.storage.s3 import S3ObjectStore, signs_payload

FORMATS = {
    "mp4": ("mp4", "h264"),
    "mp4-faststart": ("mp4", "h264"),
    "mov": ("mov", "h264"),
    "webm": ("webm", "vp9"),
    "mkv": ("mkv", "hevc"),
    "avi": ("avi", "mpeg4"),
}


@pytest.mark.parametrize("name", list(FORMATS))
async def test_each_container_is_stored_recorded_and_charged(
    name: str, server: Running, videos: dict[str, bytes], s3: S3ObjectStore, db: Database
) -> None:
    user = f"u-{name}"
    client = server.client(f"{user}-{id(server)}")
    data = videos[name]
    quota_before = await db.scalar(
        "select remaining from user_quotas where user_id = :u", u=f"{user}-{id(server)}"
    )
    result = await client.upload(data, filename=f"../../etc/My Clip\x00.{name}", metadata={"k": 1})

    fmt, codec = FORMATS[name]
    assert result.format == fmt
    assert result.file_size == len(data)
    assert result.file_hash == hashlib.sha256(data).hexdigest()
    assert result.s3_key == f"dashboard-uploads/{user}-{id(server)}/{result.video_id}.{fmt}"
    playable = urlsplit(result.s3_url)  # presigned GET (tests/test_content.py plays it)
    assert playable.path == f"/{BUCKET}/{result.s3_key}"
    assert "X-Amz-Signature=" in playable.query
    assert result.redirect_url == f"/dashboard/videos/{result.video_id}/results"
    assert result.filename == f"My Clip.{name}"
    assert result.upload_status == upload_pb2.UPLOAD_STATUS_PROCESSING
    assert result.analysis_id
    assert dict(result.metadata) == {"k": 1.0}
    assert result.created_at.seconds > 0 and result.uploaded_at.seconds > 0

    # The object is byte-identical, and no multipart upload is left behind.
    assert await s3.object_size(result.s3_key) == len(data)
    assert await s3.read_range(result.s3_key, start=0, length=len(data)) == data
    assert await s3.list_multipart(prefix=f"dashboard-uploads/{user}-{id(server)}/") == []

    video = await client.video(result.video_id)
    assert (video.codec, video.width, video.height) == (codec, 160, 120)
    assert video.duration_seconds == pytest.approx(1.0, abs=0.25)
    assert video.fps == pytest.approx(10.0, abs=0.5)
    assert video.latest_analysis_id == result.analysis_id
    analysis = await client.analysis(result.analysis_id)
    assert analysis.video_id == result.video_id
    assert analysis.status == analysis_pb2.ANALYSIS_STATUS_PENDING

    # The session is spent and the quota went down by exactly one.
    assert quota_before is None  # first upload of a new user creates the quota row
    remaining = await db.scalar(
        "select remaining from user_quotas where user_id = :u", u=f"{user}-{id(server)}"
    )
    assert remaining == server.settings.default_upload_quota - 1
    reservations = await db.scalar(
        "select count(*) from quota_reservations where user_id = :u", u=f"{user}-{id(server)}"
    )
    assert reservations == 0


async def test_a_file_under_a_part_is_stored_in_one_request_larger_ones_in_parts(
    server: Running, videos: dict[str, bytes], s3: S3ObjectStore
) -> None:
    """One PutObject where a multipart upload would take three calls; from a part's
    size on, parts (the multipart ETag says which: "<md5>-<parts>"). Both carry the
    container's content type."""
    user = f"whole-{id(server)}"
    client = server.client(user)
    small = videos["mp4"]
    part = server.settings.part_size
    large = small + struct.pack(">I4s", part + 8, b"free") + b"\0" * part  # valid MP4
    session = get_session()
    settings = server.settings
    async with session.create_client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key.get_secret_value(),
    ) as raw:
        for data, parts in ((small, None), (large, 2)):
            result = await client.upload(data, filename="clip.mp4")
            assert result.file_size == len(data)
            head = await raw.head_object(Bucket=BUCKET, Key=result.s3_key)
            etag = head["ETag"].strip('"')
            if parts is None:
                assert "-" not in etag and etag == hashlib.md5(data).hexdigest()
            else:
                assert etag.endswith(f"-{parts}")
            assert head["ContentType"] == "video/mp4"
            assert await s3.read_range(result.s3_key, start=0, length=len(data)) == data
    assert await s3.list_multipart(prefix=f"dashboard-uploads/{user}/") == []


async def test_session_lifecycle_states(server: Running, videos: dict[str, bytes]) -> None:
    client = server.client()
    session = await client.new_session(expected_size=1000)
    assert session.state == upload_pb2.UPLOAD_SESSION_STATE_ACTIVE
    assert session.max_bytes == server.settings.max_upload_bytes
    assert session.committed_bytes == 0
    assert list(session.allowed_formats) == ["mp4", "mov", "mkv", "webm", "avi"]
    assert session.expires_at.seconds - session.created_at.seconds == 3600

    status = await client.status(session.session_id)
    assert (status.status, status.session_id) == ("active", session.session_id)

    await client.upload(videos["mp4"], session_id=session.session_id)
    done = await client.status(session.session_id)
    assert done.status == "completed"
    assert done.session.committed_bytes == len(videos["mp4"])

    # A completed session cannot be written again: NOT_FOUND, like the earlier 404.
    with pytest.raises(grpc.RpcError) as caught:
        await client.upload(videos["mp4"], session_id=session.session_id)
    assert details(caught.value).reason == "SESSION_NOT_FOUND"
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancelled_session_refuses_uploads(server: Running, videos: dict[str, bytes]) -> None:
    client = server.client()
    session = await client.new_session()
    cancelled = await client.uploads.CancelUploadSession(
        upload_pb2.CancelUploadSessionRequest(session_id=session.session_id),
        metadata=client.metadata,
    )
    assert cancelled.cleanup_performed
    assert (await client.status(session.session_id)).status == "cancelled"
    with pytest.raises(grpc.RpcError) as caught:
        await client.upload(videos["mp4"], session_id=session.session_id)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_other_users_see_nothing(server: Running, videos: dict[str, bytes]) -> None:
    owner, stranger = server.client(), server.client()
    session = await owner.new_session()
    result = await owner.upload(videos["webm"])
    for call in (
        stranger.status(session.session_id),
        stranger.upload(videos["webm"], session_id=session.session_id),
        stranger.video(result.video_id),
        stranger.analysis(result.analysis_id),
        stranger.status("no-such-session"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # The owner's session is untouched by the stranger's attempt.
    assert (await owner.status(session.session_id)).status == "active"


async def test_expired_session_is_not_found(start_server: object, videos: dict[str, bytes]) -> None:
    running = await start_server(session_ttl_seconds=1)  # type: ignore[operator]
    client = running.client()
    session = await client.new_session()
    import asyncio

    await asyncio.sleep(1.2)
    assert (await client.status(session.session_id)).status == "expired"
    with pytest.raises(grpc.RpcError) as caught:
        await client.upload(videos["mp4"], session_id=session.session_id)
    assert details(caught.value).reason == "SESSION_NOT_FOUND"


@pytest.mark.parametrize(
    ("endpoint", "setting", "signed"),
    [
        ("http://127.0.0.1:9000", "auto", True),
        ("https://s3.example.com", "auto", False),
        ("", "auto", False),  # AWS itself, over HTTPS
        ("HTTPS://s3.example.com", "on", True),
        ("http://127.0.0.1:9000", "off", False),
    ],
)
def test_payload_signing_choice(endpoint: str, setting: str, signed: bool) -> None:
    assert signs_payload(endpoint, setting) is signed


@pytest.mark.parametrize(("setting", "unsigned"), [("auto", False), ("off", True)])
async def test_the_payload_signing_setting_reaches_the_requests(
    setting: str, unsigned: bool, real_settings: Settings
) -> None:
    """What the S3 adapter really sends for a part over plain HTTP (MinIO): the SHA-256
    of the body under "auto", UNSIGNED-PAYLOAD under "off" (the header as botocore
    hands the request to aiohttp, seen through botocore's public event hooks)."""
    store = await S3ObjectStore.open(
        endpoint_url=real_settings.s3_endpoint_url,
        bucket=BUCKET,
        region=real_settings.s3_region,
        access_key_id=real_settings.s3_access_key_id,
        secret_access_key=real_settings.s3_secret_access_key.get_secret_value(),
        payload_signing=setting,
    )
    sent: list[str] = []

    def seen(request: Any, **_: Any) -> None:
        value = request.headers["X-Amz-Content-SHA256"]
        sent.append(value.decode() if isinstance(value, bytes) else value)

    store._client.meta.events.register("before-send.s3.UploadPart", seen)  # the adapter's client
    try:
        key = f"dashboard-uploads/signing-{setting}/{uuid.uuid4().hex}.mp4"
        upload_id = await store.create_multipart(key, content_type="video/mp4")
        data = b"v" * 1024
        await store.upload_part(key, upload_id=upload_id, number=1, data=data)
        await store.abort_multipart(key, upload_id=upload_id)
    finally:
        await store.close()
    expected = "UNSIGNED-PAYLOAD" if unsigned else hashlib.sha256(data).hexdigest()
    assert sent == [expected]


async def test_parts_sent_with_unsigned_payloads_are_stored_whole(
    start_server: StartServer, videos: dict[str, bytes], s3: S3ObjectStore
) -> None:
    """VIDSCAN_S3_PAYLOAD_SIGNING=off over plain HTTP (MinIO): S3 takes the parts
    with UNSIGNED-PAYLOAD and the object is the file, byte for byte."""
    running = await start_server(s3_payload_signing="off")
    part = running.settings.part_size
    data = videos["mp4"] + struct.pack(">I4s", part + 8, b"free") + b"\x01" * part
    result = await running.client().upload(data, filename="clip.mp4")
    assert result.file_size == len(data)
    assert await s3.read_range(result.s3_key, start=0, length=len(data)) == data
