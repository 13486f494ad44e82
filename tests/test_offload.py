"""The I/O-thread store decorator (VIDSCAN_S3_IO_THREAD): results, errors and
cancellation cross the thread with the meaning they have on one loop, and a real
upload into MinIO goes through it."""

from __future__ import annotations

import asyncio
import threading

import pytest
from conftest import StartServer

from server.errors import Reason, Unavailable
from server.storage.offload import IoLoop


async def test_a_call_runs_on_the_io_thread_and_returns_its_result() -> None:
    io = IoLoop("test-io")
    try:

        async def where() -> str:
            await asyncio.sleep(0)
            return threading.current_thread().name

        assert await io.call(where()) == "test-io"
    finally:
        io.close()


async def test_errors_cross_unchanged() -> None:
    io = IoLoop("test-io")
    try:

        async def fail() -> None:
            raise Unavailable(Reason.STORAGE_UNAVAILABLE, "down")

        with pytest.raises(Unavailable) as caught:
            await io.call(fail())
        assert caught.value.reason == Reason.STORAGE_UNAVAILABLE
    finally:
        io.close()


async def test_a_cancelled_caller_resumes_only_after_the_call_unwound() -> None:
    io = IoLoop("test-io")
    started = threading.Event()
    unwound = threading.Event()
    try:

        async def slow_part() -> None:
            started.set()
            try:
                await asyncio.sleep(60)
            finally:
                await asyncio.sleep(0.2)  # e.g. aiohttp closing the connection
                unwound.set()

        task = asyncio.create_task(io.call(slow_part()))
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert unwound.is_set(), "the caller went on while the call was still running"
    finally:
        io.close()


async def test_a_real_upload_through_the_io_thread(
    start_server: StartServer, big_video: bytes
) -> None:
    running = await start_server(s3_io_thread=True)
    client = running.client()
    result = await client.upload(big_video)  # several S3 parts
    assert result.file_size == len(big_video)
    video = await client.video(result.video_id)
    assert video.file_size == len(big_video)
