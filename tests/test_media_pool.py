"""The warm media worker pool under hostile input and saturation, on the real server.

Hostile files crash (or hang) the worker that inspects them, by the media fault
injection keyed on a marker inside the file (``crash@MARK``): a valid MP4 with a
``free`` box holding the marker. Valid uploads run beside them.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import AsyncIterator

import grpc
import psutil
import pytest
from conftest import Running, StartServer
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from support.rpc import _messages, details, header
from vidscan.v1 import upload_pb2_grpc

from server.config import Settings
from server.main import build_app
from server.media.pool import MediaPool, WorkerStartError

INVALID = grpc.StatusCode.INVALID_ARGUMENT
MARK = "vidscan-hostile-media-7c1e"
# Long enough for anything here; polls below stop as soon as their condition holds.
SETTLE_SECONDS = 60.0


def free_box(payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + b"free" + payload


def unique(clip: bytes) -> bytes:
    """The clip, made unique (vidscan deduplicates a user's identical uploads)."""
    return clip + free_box(uuid.uuid4().hex.encode())


def hostile(clip: bytes) -> bytes:
    return clip + free_box(f"{MARK}-{uuid.uuid4().hex}".encode())


def media_workers() -> set[int]:
    """The media worker processes that are children of this (the server's) process."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "server.media.worker" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


async def settled(pool: MediaPool, before: set[int], expected: int) -> set[int]:
    """The pool's worker pids once the children of this process are exactly those and
    there are ``expected`` of them (replacements start in the background); the
    caller asserts on what it gets."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + SETTLE_SECONDS
    while loop.time() < give_up:
        mine = media_workers() - before
        if mine == set(pool.pids()) and len(mine) == expected:
            return mine
        await asyncio.sleep(0.1)
    return media_workers() - before


async def settled_pool(running: Running, expected: int) -> bool:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + SETTLE_SECONDS
    while len(running.app.core.media.pool.pids()) != expected and loop.time() < give_up:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return len(running.app.core.media.pool.pids()) == expected


@pytest.fixture
async def crashing(real_settings: Settings) -> AsyncIterator[Running]:
    """A server of its own (stopped inside the test) with 2 workers, recycled often."""
    settings = real_settings.model_copy(
        update={
            "media_workers": 2,
            "media_recycle_jobs": 3,
            "media_fault_injection": f"crash@{MARK}",
        }
    )
    app = await build_app(settings)
    await app.server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    yield Running(app, settings, channel)
    await channel.close()
    if not app.admission.draining:  # the test failed before it stopped the server
        await app.stop(1.0)


async def test_crashing_files_beside_valid_uploads_leak_no_worker(
    crashing: Running, videos: dict[str, bytes]
) -> None:
    clip = videos["mp4"]
    client = crashing.client()
    before = media_workers() - set(crashing.app.core.media.pool.pids())

    async def valid() -> str:
        return (await client.upload(unique(clip))).video_id

    async def crash() -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            await client.upload(hostile(clip))
        return caught.value

    for _ in range(4):
        results = await asyncio.gather(valid(), crash(), valid(), crash(), valid())
        for video_id in results[0::2]:
            assert isinstance(video_id, str) and video_id
        for error in results[1::2]:
            assert isinstance(error, grpc.RpcError)
            info = details(error)
            assert (error.code(), info.reason) == (INVALID, "VIDEO_UNDECODABLE")
            assert "crashed (SIGSEGV)" in info.message

    # Every crashed or recycled worker was replaced, none left over, none extra.
    pool = crashing.app.core.media.pool
    pids = await settled(pool, before, 2)
    assert pids == set(pool.pids()) and len(pids) == 2
    assert (await client.new_session()).session_id  # still serving

    await crashing.app.stop(1.0)
    assert await settled(pool, before, 0) == set()


def upload_with_deadline(
    target: str, metadata: tuple[tuple[str, str], ...], session_id: str, data: bytes, timeout: float
) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
        messages = _messages(header(session_id, filename="clip.mp4"), data, 256 * 1024)
        stub.UploadVideo(messages, metadata=metadata, timeout=timeout)


async def test_a_saturated_pool_answers_unavailable_with_retry_info_within_the_deadline(
    start_server: StartServer, videos: dict[str, bytes]
) -> None:
    running = await start_server(
        media_workers=1, media_fault_injection=f"hang@{MARK}", media_timeout_seconds=120
    )
    clip = videos["mp4"]
    client = running.client()
    # Holds the only worker; an aio call, so that the test can cancel it.
    holding = (await client.new_session()).session_id
    holder = client.uploads.UploadVideo(
        _messages(header(holding, filename="clip.mp4"), hostile(clip), 256 * 1024),
        metadata=client.metadata,
    )
    refused: grpc.RpcError | None = None
    try:
        # A second upload may win the worker before the hanging one; then it simply
        # succeeds and the next one tries again.
        for _ in range(20):
            session = await client.new_session()
            try:
                await asyncio.to_thread(
                    upload_with_deadline,
                    running.target,
                    client.metadata,
                    session.session_id,
                    unique(clip),
                    5.0,
                )
            except grpc.RpcError as error:
                refused = error
                break
        assert refused is not None
        info = details(refused)
        assert (refused.code(), info.reason) == (grpc.StatusCode.UNAVAILABLE, "MEDIA_WORKERS_BUSY")
        status = rpc_status.from_call(refused)
        assert status is not None
        hints = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert len(hints) == 1
        retry = error_details_pb2.RetryInfo()
        hints[0].Unpack(retry)
        assert retry.retry_delay.ToTimedelta().total_seconds() > 0
    finally:
        holder.cancel()  # the client leaves: its job's worker is killed and replaced
        with pytest.raises(asyncio.CancelledError):
            await holder
    assert await settled_pool(running, 1)
    assert (await client.upload(unique(clip))).video_id  # a fresh worker serves again


async def test_a_pool_that_cannot_start_keeps_the_server_from_starting(
    real_settings: Settings,
) -> None:
    """Readiness cannot lie about the pool: too small an address space for PyAV to
    import means no worker reaches READY, and build_app fails instead of serving."""
    before = media_workers()
    starved = real_settings.model_copy(
        update={"media_workers": 2, "media_memory_limit_bytes": 32 * 1024 * 1024}
    )
    with pytest.raises(WorkerStartError, match="did not start"):
        await build_app(starved)
    assert media_workers() - before == set()
