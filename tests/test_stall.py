"""The stalled-stream rules (server/upload/stall.py), on in-memory message streams."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from server.errors import Reason, StreamStalled
from server.upload.stall import StallPolicy, StallWatch, watched


async def paced(pieces: list[bytes], pause: float, then_hang: bool = False) -> AsyncIterator[bytes]:
    for piece in pieces:
        await asyncio.sleep(pause)
        yield piece
    if then_hang:
        await asyncio.Event().wait()


async def drain(messages: AsyncIterator[bytes]) -> int:
    return sum([len(m) async for m in messages])


def test_a_window_below_the_minimum_rate_is_a_stall() -> None:
    watch = StallWatch(StallPolicy(idle_seconds=10, min_bytes_per_second=100))
    watch.received(5.0, 600)  # the window is not over yet
    watch.received(5.0, 600)  # 1200 bytes in 10 s >= 100/s: a new window starts
    watch.received(9.0, 10)
    with pytest.raises(StreamStalled) as caught:
        watch.received(1.0, 10)  # 20 bytes in 10 s
    assert caught.value.reason == Reason.UPLOAD_STALLED
    assert "minimum" in caught.value.message


async def test_silence_is_cut_after_the_idle_time() -> None:
    policy = StallPolicy(idle_seconds=0.3, min_bytes_per_second=0)
    started = time.monotonic()
    with pytest.raises(StreamStalled):
        await drain(watched(paced([b"x"], 0.0, then_hang=True), policy, len))
    assert 0.25 < time.monotonic() - started < 2.0


async def test_steady_messages_pass_and_the_stream_ends_normally() -> None:
    policy = StallPolicy(idle_seconds=0.3, min_bytes_per_second=10)
    assert await drain(watched(paced([b"x" * 10] * 8, 0.1), policy, len)) == 80


async def test_under_pressure_idle_streams_are_cut_sooner() -> None:
    policy = StallPolicy(idle_seconds=30, min_bytes_per_second=0, pressured_idle_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(StreamStalled) as caught:
        await drain(watched(paced([], 0.0, then_hang=True), policy, len, pressure=lambda: True))
    assert time.monotonic() - started < 3.0
    assert "part budget" in caught.value.message
    # Without pressure the same stream is not cut that soon.
    calm = watched(paced([b"y"], 0.5), policy, len, pressure=lambda: False)
    assert await drain(calm) == 1


async def test_off_means_never_cut() -> None:
    policy = StallPolicy(idle_seconds=0, min_bytes_per_second=1_000_000)
    assert await drain(watched(paced([b"z"] * 3, 0.05), policy, len)) == 3
