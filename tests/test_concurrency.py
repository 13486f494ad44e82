"""Concurrency rules on real services: one stream per session, the quota race,
and a client that goes away mid-stream."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import grpc
import pytest
from conftest import Database, Running, StartServer
from support.rpc import CHUNK, _messages, details, header
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
        from server.db.repository import Repository
        from server.main import database_url

        engine = create_engine(database_url(running.settings))
        from server.clock import system_clock

        await Repository(engine=engine, clock=system_clock, default_quota=0).set_quota(
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


async def test_client_cancelling_mid_stream_leaves_nothing(
    server: Running, big_video: bytes, s3: S3ObjectStore, db: Database
) -> None:
    user = f"cancel-{id(server)}"
    client = server.client(user)
    session = await client.new_session()
    prefix = f"dashboard-uploads/{user}/"
    paused = PausedStream(header(session.session_id), big_video, 12 * 1024 * 1024)
    channel, call = start_stream(server.target, client.metadata, paused)
    try:
        assert await asyncio.to_thread(paused.paused.wait, 20)

        async def multipart_started() -> bool:
            return len(await s3.list_multipart(prefix=prefix)) == 1

        await wait_for(multipart_started)
        reserved = await db.scalar(
            "select count(*) from quota_reservations where user_id = :u", u=user
        )
        assert reserved == 1
        call.cancel()
    finally:
        paused.release.set()
        channel.close()

    async def cleaned_up() -> bool:
        return (
            await s3.list_multipart(prefix=prefix) == []
            and await db.scalar(
                "select count(*) from quota_reservations where user_id = :u", u=user
            )
            == 0
        )

    await wait_for(cleaned_up)
    assert await s3.list_keys(prefix=prefix) == []
    assert await db.scalar("select count(*) from videos where user_id = :u", u=user) == 0
    assert (
        await db.scalar("select remaining from user_quotas where user_id = :u", u=user)
        == server.settings.default_upload_quota
    )
    status = await client.status(session.session_id)
    assert (status.status, status.session.committed_bytes) == ("active", 0)
    # The session is usable again.
    result = await client.upload(big_video, session_id=session.session_id)
    assert result.file_size == len(big_video)


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
        assert caught.value.code() == grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
        assert details(caught.value).reason == "UPLOAD_CANCELLED"
    finally:
        paused.release.set()
        channel.close()
    assert await s3.list_multipart(prefix=f"dashboard-uploads/{user}/") == []
    assert await db.scalar("select count(*) from videos where user_id = :u", u=user) == 0


_ = _messages
