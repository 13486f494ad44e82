"""Concurrency rules on real services: one stream per session, the quota race,
and a client that goes away mid-stream."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator

import grpc
import pytest
from conftest import Database, Running, StartServer
from support.rpc import CHUNK, Client, details, header
from vidscan.v1 import upload_pb2, upload_pb2_grpc

from server.config import Settings
from server.storage.s3 import S3ObjectStore


class PausedStream:
    """Sends a header and ``before`` bytes, then waits until released."""

    def __init__(self, first: upload_pb2.UploadVideoRequest, data: bytes, before: int) -> None:
        self.first, self.data, self.before = first, data, before
        self.paused = threading.Event()
        self.release = threading.Event()

    def __iter__(self) -> Iterator[upload_pb2.UploadVideoRequest]:
        yield self.first
        for offset in range(0, len(self.data), CHUNK):
            if offset >= self.before and not self.release.is_set():
                self.paused.set()
                self.release.wait(30)
            yield upload_pb2.UploadVideoRequest(chunk=self.data[offset : offset + CHUNK])
        yield upload_pb2.UploadVideoRequest(finish_write=True)


def start_stream(target: str, metadata: tuple[tuple[str, str], ...], requests: PausedStream):  # type: ignore[no-untyped-def]
    channel = grpc.insecure_channel(target)
    stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
    return channel, stub.UploadVideo.future(iter(requests), metadata=metadata)


async def wait_for(predicate, within: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_second_stream_on_a_session_is_aborted_first_continues(
    server: Running, big_video: bytes
) -> None:
    client = server.client()
    session = await client.new_session()
    paused = PausedStream(header(session.session_id, filename="a.mp4"), big_video, 2 * CHUNK)
    channel, first = start_stream(server.target, client.metadata, paused)
    try:
        assert await asyncio.to_thread(paused.paused.wait, 10)
        await asyncio.sleep(0.3)  # the server has the header and holds the lock
        with pytest.raises(grpc.RpcError) as caught:
            await client.upload(big_video, session_id=session.session_id)
        assert caught.value.code() == grpc.StatusCode.ABORTED
        assert details(caught.value).reason == "SESSION_BUSY"
        paused.release.set()
        result = (await asyncio.to_thread(first.result, 60)).result
        assert result.file_size == len(big_video)
    finally:
        paused.release.set()
        channel.close()


@pytest.mark.parametrize("backend", ["real", "embedded"])
async def test_quota_race_exactly_n_succeed(
    backend: str,
    start_server: StartServer,
    embedded_settings: Settings,
    videos: dict[str, bytes],
    db: Database,
) -> None:
    running = await (start_server() if backend == "real" else start_server(embedded_settings))
    quota = 3
    user = f"race-{backend}-{id(running)}"
    client = running.client(user)
    sessions = [await client.new_session() for _ in range(2 * quota)]
    if backend == "real":
        await db.execute(
            "update user_quotas set remaining = :n where user_id = :u", n=quota, u=user
        )
    else:
        from server.db.engine import create_engine
        from server.db.repository import SqlRepository
        from server.main import database_url

        engine = create_engine(database_url(running.settings))
        from server.clock import system_clock

        await SqlRepository(engine=engine, clock=system_clock, default_quota=0).set_quota(
            user_id=user, remaining=quota
        )
        await engine.dispose()

    outcomes = await asyncio.gather(
        *(client.upload(videos["webm"], session_id=s.session_id) for s in sessions),
        return_exceptions=True,
    )
    succeeded = [o for o in outcomes if isinstance(o, upload_pb2.UploadResult)]
    refused = [o for o in outcomes if isinstance(o, grpc.RpcError)]
    assert len(succeeded) == quota, outcomes
    assert len(refused) == quota
    for error in refused:
        info = details(error)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.reason == "QUOTA_EXCEEDED"
        assert info.quota_subjects == [f"user:{user}"]
    # Now at zero: a new session is refused up front.
    with pytest.raises(grpc.RpcError) as caught:
        await client.new_session()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def drop_mid_stream(
    running: Running, client: Client, session_id: str, data: bytes, s3: S3ObjectStore, user: str
) -> int:
    """Streams ~12 MiB of ``data``, then the client goes away. Returns the committed
    offset the server recorded for the session."""
    paused = PausedStream(header(session_id), data, 12 * 1024 * 1024)
    channel, call = start_stream(running.target, client.metadata, paused)
    try:
        assert await asyncio.to_thread(paused.paused.wait, 20)

        async def multipart_started() -> bool:
            return len(await s3.list_multipart(prefix=f"dashboard-uploads/{user}/")) == 1

        await wait_for(multipart_started)
        call.cancel()
    finally:
        paused.release.set()
        channel.close()

    # Parts are committed while the stream runs and the tail when it is suspended:
    # wait until the committed count has settled (unchanged for half a second).
    seen: list[int] = []

    async def settled() -> bool:
        seen.append(int((await client.status(session_id)).session.committed_bytes))
        return len(seen) >= 6 and seen[-1] > 0 and len(set(seen[-6:])) == 1

    await wait_for(settled)
    return seen[-1]


async def test_dropped_stream_is_suspended_and_resumed(
    server: Running, big_video: bytes, s3: S3ObjectStore, db: Database
) -> None:
    user = f"resume-{id(server)}"
    client = server.client(user)
    session = await client.new_session()
    committed = await drop_mid_stream(server, client, session.session_id, big_video, s3, user)
    assert 8 * 1024 * 1024 <= committed <= 12 * 1024 * 1024
    # Nothing is lost: the parts stay, the quota unit stays reserved, no row yet.
    assert len(await s3.list_multipart(prefix=f"dashboard-uploads/{user}/")) == 1
    assert await db.scalar("select count(*) from videos where user_id = :u", u=user) == 0
    assert (
        await db.scalar("select count(*) from quota_reservations where user_id = :u", u=user) == 1
    )
    # A wrong offset names the right one.
    with pytest.raises(grpc.RpcError) as caught:
        await client.upload(big_video, session_id=session.session_id, write_offset=0)
    info = details(caught.value)
    assert (caught.value.code(), info.reason) == (grpc.StatusCode.OUT_OF_RANGE, "INVALID_OFFSET")
    assert info.metadata["expected_offset"] == str(committed)
    for _ in range(50):  # the refused stream's lock is released right after it
        try:
            result = await client.upload(
                big_video[committed:], session_id=session.session_id, write_offset=committed
            )
            break
        except grpc.RpcError as error:
            assert details(error).reason == "SESSION_BUSY"
            await asyncio.sleep(0.1)
    assert result.file_hash == hashlib.sha256(big_video).hexdigest()
    assert result.file_size == len(big_video)
    assert await s3.read_range(result.s3_key, start=0, length=len(big_video)) == big_video
    assert await s3.list_multipart(prefix=f"dashboard-uploads/{user}/") == []
    assert await s3.list_keys(prefix=f"dashboard-uploads/{user}/") == [result.s3_key]
    assert (
        await db.scalar("select remaining from user_quotas where user_id = :u", u=user)
        == server.settings.default_upload_quota - 1
    )
    assert (
        await db.scalar("select count(*) from quota_reservations where user_id = :u", u=user) == 0
    )


async def test_cancelling_a_suspended_session_discards_it(
    server: Running, big_video: bytes, s3: S3ObjectStore, db: Database
) -> None:
    user = f"cancel-suspended-{id(server)}"
    client = server.client(user)
    session = await client.new_session()
    await drop_mid_stream(server, client, session.session_id, big_video, s3, user)
    reply = await client.uploads.CancelUploadSession(
        upload_pb2.CancelUploadSessionRequest(session_id=session.session_id),
        metadata=client.metadata,
    )
    assert reply.cleanup_performed
    assert await s3.list_multipart(prefix=f"dashboard-uploads/{user}/") == []
    assert await s3.list_keys(prefix=f"dashboard-uploads/{user}/") == []
    assert (
        await db.scalar("select remaining from user_quotas where user_id = :u", u=user)
        == server.settings.default_upload_quota
    )
    assert (await client.status(session.session_id)).status == "cancelled"


async def test_cancel_session_stops_an_upload_in_flight(
    server: Running, big_video: bytes, s3: S3ObjectStore, db: Database
) -> None:
    user = f"cancel-rpc-{id(server)}"
    client = server.client(user)
    session = await client.new_session()
    paused = PausedStream(header(session.session_id), big_video, 10 * 1024 * 1024)
    channel, call = start_stream(server.target, client.metadata, paused)
    try:
        assert await asyncio.to_thread(paused.paused.wait, 20)
        await client.uploads.CancelUploadSession(
            upload_pb2.CancelUploadSessionRequest(session_id=session.session_id),
            metadata=client.metadata,
        )
        # The client is still paused mid-file: the server must end the stream itself.
        with pytest.raises(grpc.RpcError) as caught:
            await asyncio.to_thread(call.result, 30)
        assert caught.value.code() == grpc.StatusCode.CANCELLED
        assert details(caught.value).reason == "UPLOAD_CANCELLED"
    finally:
        paused.release.set()
        channel.close()
    assert await s3.list_multipart(prefix=f"dashboard-uploads/{user}/") == []
    assert await db.scalar("select count(*) from videos where user_id = :u", u=user) == 0


async def test_resume_after_expiry_is_not_found_and_racing_resumes_get_one_winner(
    start_server: StartServer, big_video: bytes, s3: S3ObjectStore, db: Database
) -> None:
    running = await start_server(session_ttl_seconds=4)
    user = f"resume-race-{id(running)}"
    client = running.client(user)

    # Two streams race to resume the same suspended session: one wins, one is ABORTED.
    session = await client.new_session()
    committed = await drop_mid_stream(running, client, session.session_id, big_video, s3, user)
    rest = big_video[committed:]
    outcomes = await asyncio.gather(
        client.upload(rest, session_id=session.session_id, write_offset=committed),
        client.upload(rest, session_id=session.session_id, write_offset=committed),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, upload_pb2.UploadResult)]
    losers = [o for o in outcomes if isinstance(o, grpc.RpcError)]
    assert len(winners) == 1, outcomes
    assert winners[0].file_hash == hashlib.sha256(big_video).hexdigest()
    assert len(losers) == 1
    assert details(losers[0]).reason in {"SESSION_BUSY", "SESSION_NOT_FOUND"}

    # A suspended session that expires cannot be resumed: NOT_FOUND.
    expiring = await client.new_session()
    committed = await drop_mid_stream(running, client, expiring.session_id, big_video, s3, user)
    await asyncio.sleep(4.5)
    assert (await client.status(expiring.session_id)).status == "expired"
    with pytest.raises(grpc.RpcError) as caught:
        await client.upload(
            big_video[committed:], session_id=expiring.session_id, write_offset=committed
        )
    assert (caught.value.code(), details(caught.value).reason) == (
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )
