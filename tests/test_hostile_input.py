"""Bad input gets a precise status, a stable reason, and leaves nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from conftest import Database, Running, StartServer
from support.hostile import garbage_after_ftyp, png_image, random_bytes
from support.rpc import CHUNK, details
from support.videos import make_audio_only

from server.storage.s3 import S3ObjectStore

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def assert_nothing_left(
    running: Running, user_id: str, s3: S3ObjectStore, db: Database
) -> None:
    prefix = f"dashboard-uploads/{user_id}/"
    assert await s3.list_multipart(prefix=prefix) == []
    assert await s3.list_keys(prefix=prefix) == []
    assert await db.scalar("select count(*) from videos where user_id = :u", u=user_id) == 0
    remaining = await db.scalar("select remaining from user_quotas where user_id = :u", u=user_id)
    assert remaining in (None, running.settings.default_upload_quota)
    assert (
        await db.scalar("select count(*) from quota_reservations where user_id = :u", u=user_id)
        == 0
    )


async def refuse(
    running: Running, user_id: str, data: bytes, **header: object
) -> tuple[grpc.RpcError, str]:
    client = running.client(user_id)
    session = await client.new_session()
    with pytest.raises(grpc.RpcError) as caught:
        await client.upload(data, session_id=session.session_id, **header)  # type: ignore[arg-type]
    return caught.value, session.session_id


CASES = {
    "empty": (b"", "EMPTY_UPLOAD"),
    "text": (b"Hello, this is a text file and not a video at all.\n" * 100, "UNSUPPORTED_FORMAT"),
    "image": (png_image(), "UNSUPPORTED_FORMAT"),
    "random": (random_bytes(3 * 1024 * 1024), "UNSUPPORTED_FORMAT"),
    "garbage-after-ftyp": (garbage_after_ftyp(1024 * 1024), "CORRUPT_CONTAINER"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_non_video_is_refused_and_nothing_is_left(
    case: str, server: Running, s3: S3ObjectStore, db: Database
) -> None:
    data, reason = CASES[case]
    user = f"hostile-{case}-{id(server)}"
    error, session_id = await refuse(server, user, data)
    info = details(error)
    assert (error.code(), info.reason) == (INVALID, reason)
    assert info.cleanup is not None and info.cleanup.session_cleanup
    assert (await server.client(user).status(session_id)).status == "cancelled"
    await assert_nothing_left(server, user, s3, db)


async def test_truncated_and_audio_only_files(
    server: Running, videos: dict[str, bytes], s3: S3ObjectStore, db: Database, tmp_path: object
) -> None:
    from pathlib import Path

    audio = make_audio_only(Path(str(tmp_path)) / "audio.mp4").read_bytes()
    cases = {
        "truncated-mp4": (videos["mp4"][: len(videos["mp4"]) // 2], "CORRUPT_CONTAINER"),
        "truncated-faststart": (videos["mp4-faststart"][:-100], "CORRUPT_CONTAINER"),
        "truncated-mkv-header": (videos["mkv"][:40], "CORRUPT_CONTAINER"),
        "truncated-webm": (videos["webm"][:300], None),
        "audio-only": (audio, "NO_VIDEO_STREAM"),
    }
    for name, (data, reason) in cases.items():
        user = f"trunc-{name}-{id(server)}"
        error, _ = await refuse(server, user, data)
        info = details(error)
        assert error.code() == INVALID, name
        if reason:
            assert info.reason == reason, (name, info.reason, info.message)
        else:
            assert info.reason in {"CORRUPT_CONTAINER", "VIDEO_UNDECODABLE", "NO_VIDEO_STREAM"}
        assert "/spool/" not in info.message  # no server paths in client errors
        await assert_nothing_left(server, user, s3, db)


async def test_declared_size_and_hash_must_match(
    server: Running, big_video: bytes, s3: S3ObjectStore, db: Database
) -> None:
    """Mismatches are found after S3 parts were already sent: the multipart upload
    must be aborted, the quota given back, no row written."""
    user = f"declared-{id(server)}"
    error, _ = await refuse(server, user, big_video, declared_sha256="0" * 64)
    info = details(error)
    assert (error.code(), info.reason) == (INVALID, "HASH_MISMATCH")
    assert info.cleanup is not None
    assert info.cleanup.s3_cleanup and info.cleanup.quota_released
    assert info.cleanup.cleanup_performed
    await assert_nothing_left(server, user, s3, db)

    error, _ = await refuse(server, user, big_video, declared_size=len(big_video) + 1)
    assert details(error).reason == "SIZE_MISMATCH"
    error, _ = await refuse(server, user, big_video, declared_size=len(big_video) - 1)
    assert details(error).reason == "SIZE_MISMATCH"
    await assert_nothing_left(server, user, s3, db)


async def test_header_field_rules(server: Running, videos: dict[str, bytes]) -> None:
    user = f"fields-{id(server)}"
    cases: list[tuple[dict[str, Any], str, list[str]]] = [
        ({"declared_sha256": "xyz"}, "INVALID_FIELD", ["header.declared_sha256"]),
        ({"metadata": {"blob": "x" * 20000}}, "METADATA_TOO_LARGE", []),
        ({"model": "no-such-model"}, "MODEL_NOT_ALLOWED", []),
        ({"declared_size": 10**12}, "FILE_TOO_LARGE", []),
    ]
    for header, reason, fields in cases:
        error, _ = await refuse(server, user, videos["mp4"], **header)
        info = details(error)
        assert (error.code(), info.reason) == (INVALID, reason), header
        assert info.field_violations == fields


async def test_wrong_offset_and_missing_header(server: Running, videos: dict[str, bytes]) -> None:
    client = server.client()
    session = await client.new_session()
    with pytest.raises(grpc.RpcError) as caught:
        await client.upload(videos["mp4"], session_id=session.session_id, write_offset=100)
    info = details(caught.value)
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert (info.reason, info.metadata["expected_offset"]) == ("INVALID_OFFSET", "0")

    from vidscan.v1 import upload_pb2

    async def chunks_only() -> AsyncIterator[upload_pb2.UploadVideoRequest]:
        yield upload_pb2.UploadVideoRequest(chunk=videos["mp4"], finish_write=True)

    with pytest.raises(grpc.RpcError) as caught:
        await client.uploads.UploadVideo(chunks_only(), metadata=client.metadata)
    assert details(caught.value).reason == "MISSING_HEADER"
    # Neither attempt spent the session.
    assert (await client.status(session.session_id)).status == "active"


async def test_size_limit_is_enforced_while_streaming(
    start_server: StartServer, s3: S3ObjectStore, db: Database
) -> None:
    """With a 1 MiB limit, a 200 MiB stream is cut off at the limit: the server
    stops reading, so the client gets the error long before it sent everything."""
    running = await start_server(max_upload_bytes=1024 * 1024)
    user = f"limit-{id(running)}"
    sent = 0

    def endless_video() -> Iterator[bytes]:
        nonlocal sent
        head = garbage_after_ftyp(64)[:24]  # a plausible start, then filler boxes
        yield head
        sent += len(head)
        free_box = (CHUNK).to_bytes(4, "big") + b"free" + b"\0" * (CHUNK - 8)
        for _ in range(800):
            sent += len(free_box)
            yield free_box

    error, _ = await refuse(running, user, endless_video())  # type: ignore[arg-type]
    info = details(error)
    assert (error.code(), info.reason) == (INVALID, "FILE_TOO_LARGE")
    assert info.metadata["max_bytes"] == str(1024 * 1024)
    assert sent < 32 * 1024 * 1024, f"the client could push {sent} bytes"
    await assert_nothing_left(running, user, s3, db)


async def test_non_video_is_refused_within_the_first_chunks(
    server: Running, s3: S3ObjectStore, db: Database
) -> None:
    sent = 0

    def noise() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(2000):  # 500 MiB if the server read it all
            sent += CHUNK
            yield random_bytes(CHUNK)

    user = f"noise-{id(server)}"
    error, _ = await refuse(server, user, noise())  # type: ignore[arg-type]
    assert details(error).reason == "UNSUPPORTED_FORMAT"
    assert sent < 32 * 1024 * 1024
    await assert_nothing_left(server, user, s3, db)


async def test_decode_bomb_limits(start_server: StartServer, videos: dict[str, bytes]) -> None:
    running = await start_server(max_video_pixels=100 * 100)
    error, _ = await refuse(running, f"bomb-{id(running)}", videos["mp4"])
    info = details(error)
    assert info.reason == "VIDEO_LIMITS_EXCEEDED"
    assert "160x120" in info.message


@pytest.mark.parametrize("fault", ["crash", "hang"])
async def test_media_worker_crash_or_hang_is_contained(
    fault: str, start_server: StartServer, videos: dict[str, bytes], s3: S3ObjectStore, db: Database
) -> None:
    faulty = await start_server(media_fault_injection=fault, media_timeout_seconds=3)
    user = f"fault-{fault}-{id(faulty)}"
    error, _ = await refuse(faulty, user, videos["webm"])
    info = details(error)
    assert (error.code(), info.reason) == (INVALID, "VIDEO_UNDECODABLE")
    assert ("crashed" if fault == "crash" else "longer than") in info.message
    await assert_nothing_left(faulty, user, s3, db)
    # The server process is unharmed and keeps serving.
    session = await faulty.client().new_session()
    assert session.session_id


async def test_requests_without_a_valid_token_are_refused(server: Running) -> None:
    from support.rpc import Client

    from server.auth import TokenAuthority
    from server.clock import system_clock

    forged = TokenAuthority(
        secret="another-secret-that-is-long-enough-for-hs256",
        issuer="",
        audience="",
        clock=system_clock,
    ).mint("mallory")
    for token in ("", "not-a-jwt", forged):
        client = Client(server.channel, token, server.target)
        with pytest.raises(grpc.RpcError) as caught:
            await client.new_session()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert details(caught.value).reason == "UNAUTHENTICATED"
    await asyncio.sleep(0)
