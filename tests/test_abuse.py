"""Abuse resistance against the real services: stalled streams are cut and stay
resumable, per-user caps and rate limits refuse with RetryInfo (shared by replicas
through Redis), other users are not affected, and a slow but steady upload is not cut."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import Running, StartServer
from support.gateway import _read_vmrss, start_gateway
from support.process import ServerProcess
from support.rpc import Client, details, header
from vidscan.v1 import upload_pb2, upload_pb2_grpc

from server.config import Settings
from server.main import token_authority

GENEROUS = {
    "max_sessions_per_user": 0,
    "max_streams_per_user": 0,
    "create_session_rate": 0.0,
    "unary_rate": 0.0,
}


def client_for(running: Running, user: str) -> Client:
    return running.client(user)


async def stalled_stream(
    stub: upload_pb2_grpc.UploadServiceStub,
    metadata: tuple[tuple[str, str], ...],
    session_id: str,
    first_bytes: bytes,
    forever: asyncio.Event,
) -> grpc.aio.AioRpcError:
    """A stream that sends its header and a few bytes, then nothing."""

    async def requests() -> AsyncIterator[upload_pb2.UploadVideoRequest]:
        yield header(session_id, filename="clip.mp4")
        yield upload_pb2.UploadVideoRequest(chunk=first_bytes)
        await forever.wait()

    try:
        await stub.UploadVideo(requests(), metadata=metadata, timeout=120)
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("a stalled stream was answered")


# -- stalled streams ----------------------------------------------------------------


@pytest.fixture
def stalling_server(real_settings: Settings, tmp_path: Path) -> Iterator[ServerProcess]:
    settings = real_settings.model_copy(
        update={
            **GENEROUS,
            "stream_idle_seconds": 3.0,
            "analysis_wait_seconds": 0.0,
            "default_upload_quota": 1000,  # each stream reserves a unit
        }
    )
    proc = ServerProcess(settings, log_path=tmp_path / "server.log")
    try:
        yield proc
    finally:
        proc.close()


async def test_200_stalled_streams_are_cut_and_resumable_while_others_upload(
    stalling_server: ServerProcess, real_settings: Settings, videos: dict[str, bytes]
) -> None:
    clip = videos["mp4"]
    authority = token_authority(real_settings)
    hostile_token = authority.mint(f"stall-{uuid.uuid4().hex[:8]}")
    hostile = (("authorization", f"Bearer {hostile_token}"),)
    honest_token = authority.mint(f"honest-{uuid.uuid4().hex[:8]}")
    # 200 streams over 4 connections (100 concurrent calls per connection at most).
    channels = [
        grpc.aio.insecure_channel(
            stalling_server.target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(4)
    ]  # a connection each: channels to one target share one by default
    stubs = [upload_pb2_grpc.UploadServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
    forever = asyncio.Event()
    try:
        sessions = []
        for _ in range(200):
            created = await stubs[0].CreateUploadSession(
                upload_pb2.CreateUploadSessionRequest(), metadata=hostile
            )
            sessions.append(created.session.session_id)
        rss_before = _read_vmrss(stalling_server.process.pid)
        started = time.monotonic()
        streams = [
            asyncio.create_task(
                stalled_stream(stubs[i % 4], hostile, session_id, clip[:20], forever)
            )
            for i, session_id in enumerate(sessions)
        ]
        await asyncio.sleep(1.5)  # all open, none cut yet
        assert not any(s.done() for s in streams)
        rss_open = _read_vmrss(stalling_server.process.pid)

        # Meanwhile another user's upload goes through.
        honest = Client(channels[1], honest_token, stalling_server.target)
        result = await honest.upload(clip)
        assert result.video_id

        errors = await asyncio.wait_for(asyncio.gather(*streams), timeout=60)
        elapsed = time.monotonic() - started
        assert elapsed < 3.0 + 10, f"the stalled streams took {elapsed:.1f} s to be cut"
        for error in errors:
            assert error.code() == grpc.StatusCode.ABORTED, error
            assert details(error).reason == "UPLOAD_STALLED"
        # Bounded: 200 open streams cost the server far less than 200 part windows.
        growth = rss_open - rss_before
        assert growth < 200 * 1024 * 1024, f"RSS grew {growth / 2**20:.0f} MiB for 200 streams"

        # Each session kept what it stored and its lock is free: it resumes at once.
        client = Client(channels[2], hostile_token, stalling_server.target)
        for session_id in sessions[:3]:
            status = await client.status(session_id)
            offset = status.session.committed_bytes
            assert offset in (0, 20), status
            result = await client.upload(clip[offset:], session_id=session_id, write_offset=offset)
            assert result.file_size == len(clip)
    finally:
        forever.set()
        for channel in channels:
            await channel.close()


async def test_a_slow_but_steady_upload_is_not_cut_and_a_trickle_is(
    start_server: StartServer, videos: dict[str, bytes]
) -> None:
    running = await start_server(
        **GENEROUS, stream_idle_seconds=1.0, stream_min_bytes_per_second=1024.0
    )
    client = client_for(running, f"slow-{uuid.uuid4().hex[:8]}")
    clip = videos["mp4"]

    def paced(data: bytes, piece: int, pause: float) -> Iterator[bytes]:
        for i in range(0, len(data), piece):
            time.sleep(pause)  # the sync client's request iterator runs on its own thread
            yield data[i : i + piece]

    # ~2.5 KiB/s, a message every 0.2 s: above the minimum, over several windows.
    assert len(clip) > 2048, "the clip must span several idle windows"
    result = await client.upload(paced(clip, 512, 0.2))
    assert result.file_size == len(clip)

    # 40 bytes/s, a message every 0.25 s: never idle for 1 s, but far below 1 KiB/s.
    session = await client.new_session()
    with pytest.raises(grpc.RpcError) as caught:
        await client.upload(paced(clip, 10, 0.25), session_id=session.session_id)
    found = details(caught.value)
    assert (found.code, found.reason) == (grpc.StatusCode.ABORTED, "UPLOAD_STALLED")
    assert "minimum" in found.message


# -- session caps and request rates ---------------------------------------------------


async def create(client: Client) -> str:
    """'' when created, else the refusal's reason."""
    try:
        await client.new_session()
    except grpc.aio.AioRpcError as error:
        found = details(error)
        assert found.code == grpc.StatusCode.RESOURCE_EXHAUSTED, found
        assert found.retry_after_seconds is not None and found.retry_after_seconds > 0
        assert found.metadata["limit"]
        return found.reason
    return ""


async def test_a_session_flood_meets_the_cap_then_the_rate_limit_others_unaffected(
    start_server: StartServer,
) -> None:
    running = await start_server(
        max_sessions_per_user=30, create_session_rate=1.0, create_session_burst=50
    )
    flooder = client_for(running, f"flood-{uuid.uuid4().hex[:8]}")
    outcomes = [await create(flooder) for _ in range(70)]
    # Rate first (each call takes a token), then the cap on what is held.
    assert outcomes[:30] == [""] * 30
    assert outcomes[30:50] == ["TOO_MANY_SESSIONS"] * 20, outcomes[30:50]
    assert set(outcomes[50:]) == {"RATE_LIMITED"}, outcomes[50:]

    other = client_for(running, f"other-{uuid.uuid4().hex[:8]}")
    assert [await create(other) for _ in range(10)] == [""] * 10


async def test_a_cancelled_session_frees_its_slot(start_server: StartServer) -> None:
    running = await start_server(max_sessions_per_user=2, create_session_rate=0.0)
    client = client_for(running, f"cap-{uuid.uuid4().hex[:8]}")
    first = await client.new_session()
    await client.new_session()
    assert await create(client) == "TOO_MANY_SESSIONS"
    await client.uploads.CancelUploadSession(
        upload_pb2.CancelUploadSessionRequest(session_id=first.session_id),
        metadata=client.metadata,
    )
    assert await create(client) == ""


async def test_the_rate_limit_holds_across_two_replicas_sharing_redis(
    start_server: StartServer,
) -> None:
    limits = {"create_session_rate": 0.5, "create_session_burst": 20, "max_sessions_per_user": 0}
    replicas = [await start_server(**limits), await start_server(**limits)]
    user = f"replicas-{uuid.uuid4().hex[:8]}"
    clients = [client_for(r, user) for r in replicas]
    outcomes = [await create(clients[i % 2]) for i in range(40)]
    created = outcomes.count("")
    assert 20 <= created <= 22, outcomes  # the burst, plus what refilled meanwhile
    assert set(outcomes) == {"", "RATE_LIMITED"}


async def test_too_many_streams_per_user(
    start_server: StartServer, videos: dict[str, bytes]
) -> None:
    running = await start_server(max_streams_per_user=2, stream_idle_seconds=30.0)
    client = client_for(running, f"streams-{uuid.uuid4().hex[:8]}")
    forever = asyncio.Event()
    sessions = [(await client.new_session()).session_id for _ in range(3)]
    open_streams = [
        asyncio.create_task(
            stalled_stream(client.uploads, client.metadata, s, videos["mp4"][:20], forever)
        )
        for s in sessions[:2]
    ]
    try:
        await asyncio.sleep(0.5)
        with pytest.raises(grpc.RpcError) as caught:
            await client.upload(videos["mp4"], session_id=sessions[2])
        found = details(caught.value)
        assert (found.code, found.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "TOO_MANY_STREAMS",
        )
        assert found.retry_after_seconds
    finally:
        for task in open_streams:
            task.cancel()
        await asyncio.gather(*open_streams, return_exceptions=True)
    await asyncio.sleep(0.5)  # the cancelled streams' slots are released
    result = await client.upload(videos["mp4"], session_id=sessions[2])
    assert result.file_size == len(videos["mp4"])


async def test_the_server_wide_stream_cap_refuses_at_once(
    start_server: StartServer, videos: dict[str, bytes]
) -> None:
    running = await start_server(**GENEROUS, max_streams_per_process=1)
    client = client_for(running, f"busy-{uuid.uuid4().hex[:8]}")
    forever = asyncio.Event()
    held = (await client.new_session()).session_id
    task = asyncio.create_task(
        stalled_stream(client.uploads, client.metadata, held, videos["mp4"][:20], forever)
    )
    try:
        await asyncio.sleep(0.5)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            await client.upload(videos["mp4"])
        found = details(caught.value)
        assert (found.code, found.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")
        assert time.monotonic() - started < 5  # refused, not queued
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_gateway_answers_429_with_retry_after(
    start_server: StartServer, real_settings: Settings, tmp_path: Path
) -> None:
    running = await start_server(create_session_rate=0.2, create_session_burst=2)
    gateway = await asyncio.to_thread(
        start_gateway,
        upstream=running.target,
        max_upload_bytes=real_settings.max_upload_bytes,
        workdir=tmp_path,
    )
    try:
        token = token_authority(running.settings).mint(f"rest-{uuid.uuid4().hex[:8]}")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
            codes = []
            for _ in range(3):
                response = await http.post(
                    "/v1/dashboard/upload/sessions", headers=headers, json={}
                )
                codes.append(response.status_code)
        assert codes == [200, 200, 429], codes
        assert int(response.headers["Retry-After"]) >= 1
        assert "RATE_LIMITED" in response.text
    finally:
        await asyncio.to_thread(gateway.stop)
