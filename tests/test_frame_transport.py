"""Frames to Triton through system shared memory, and nothing left behind.

The server creates one region per analysis and registers it with Triton; the media
worker writes the frames into it. Every way out — a verdict, a failed sampling, a
cancelled analysis, an error inside — must unregister it from Triton and unlink it
from /dev/shm.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tritonclient.grpc as tritongrpc
from conftest import StartServer
from support.triton import TritonServer
from support.videos import SPECS, make_video
from vidscan.v1 import upload_pb2

from server.detection import shm
from server.detection.triton import TritonDetector, TritonOptions
from server.errors import Internal

SHM = Path("/dev/shm")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    return make_video(path, spec=SPECS["mp4"], seconds=4, fps=10).read_bytes()


def registered(triton: TritonServer) -> set[str]:
    with tritongrpc.InferenceServerClient(triton.grpc_url) as client:
        status = client.get_system_shared_memory_status(as_json=True)
    return {str(region["name"]) for region in status.get("regions", {}).values()}


def on_disk() -> set[str]:
    return {p.name for p in SHM.glob(f"{shm.PREFIX}*")}


@contextlib.asynccontextmanager
async def regions_seen(triton: TritonServer) -> AsyncIterator[set[str]]:
    """Names of the regions registered with Triton while the block runs."""
    seen: set[str] = set()

    async def watch() -> None:
        while True:
            seen.update(await asyncio.to_thread(registered, triton))
            await asyncio.sleep(0.02)

    task = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_triton_on_this_host_is_detected() -> None:
    for url in ("localhost:8001", "127.0.0.1:8001", "[::1]:8001", "unix:/run/triton.sock"):
        assert shm.is_local(url), url
    for url in ("triton:8001", "10.0.0.7:8001", "[2001:db8::1]:8001"):
        assert not shm.is_local(url), url
    assert shm.wanted("auto", "127.0.0.1:8001") and not shm.wanted("auto", "triton:8001")
    assert shm.wanted("on", "triton:8001") and not shm.wanted("off", "127.0.0.1:8001")


async def test_verdicts_through_shared_memory_leave_nothing_behind(
    start_server: StartServer, triton: TritonServer, clip: bytes
) -> None:
    before = on_disk()
    inline = await start_server(triton_url=triton.grpc_url, analysis_workers=0, triton_shm="off")
    async with regions_seen(triton) as seen:
        plain = await inline.client().upload(clip)
    assert not seen, "triton_shm=off sends frames inside the request"

    shared = await start_server(triton_url=triton.grpc_url, analysis_workers=0)  # auto
    async with regions_seen(triton) as seen:
        result = await shared.client().upload(clip)
    assert result.upload_status == upload_pb2.UPLOAD_STATUS_ANALYZED
    assert seen and all(name.startswith(shm.PREFIX) for name in seen)
    # Same pixels either way: the same scores.
    assert list(result.detection_result.frame_scores) == list(plain.detection_result.frame_scores)
    times = list(result.detection_result.frame_times)
    assert len(times) == 32 and times == sorted(set(times))
    assert result.detection_result.frame_policy == "exact"  # a 4 s clip: exact is cheap
    assert not (seen & registered(triton))
    assert not (seen & on_disk())
    assert not (on_disk() - before) & seen


async def test_a_failing_analysis_leaves_nothing_behind(
    start_server: StartServer, triton: TritonServer, clip: bytes
) -> None:
    faulty = await start_server(
        triton_url=triton.grpc_url,
        analysis_workers=0,
        media_fault_injection="hang:sample_frames",
        media_timeout_seconds=3,
    )
    async with regions_seen(triton) as seen:
        upload = asyncio.create_task(faulty.client().upload(clip))
        for _ in range(400):  # the worker hangs holding the region
            if seen & on_disk():
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("no frame region appeared while the worker sampled")
        result = await upload
    assert result.upload_status == upload_pb2.UPLOAD_STATUS_ANALYSIS_FAILED
    assert not (seen & registered(triton))
    assert not (seen & on_disk())


@pytest.mark.parametrize("ending", ["cancelled", "error"])
async def test_a_region_is_removed_however_the_block_ends(
    triton: TritonServer, ending: str
) -> None:
    detector = TritonDetector(
        options=TritonOptions(url=triton.grpc_url, shared_memory="on"), models=()
    )
    entered, release = asyncio.Event(), asyncio.Event()
    names: list[str] = []

    async def hold() -> None:
        async with detector.frame_region(4096) as region:
            assert region is not None
            names.append(region.name)
            entered.set()
            await asyncio.wait_for(release.wait(), 60)
            raise RuntimeError("inference failed")

    task = asyncio.create_task(hold())
    try:
        await asyncio.wait_for(entered.wait(), 30)
        assert names[0] in registered(triton) and names[0] in on_disk()
        if ending == "cancelled":
            task.cancel()
        else:
            release.set()
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            await task
        assert names[0] not in registered(triton)
        assert names[0] not in on_disk()
    finally:
        await detector.close()


@pytest.mark.parametrize("mode", ["auto", "on"])
async def test_a_region_triton_cannot_map(
    triton: TritonServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """auto: frames go in the request from then on; on: the analysis fails loudly."""
    create = shm.create

    def unmappable(byte_size: int) -> tuple[shm.FrameRegion, object]:
        region, handle = create(byte_size)
        (SHM / region.name).unlink()  # Triton's shm_open fails, as on another host
        return region, handle

    monkeypatch.setattr(shm, "create", unmappable)
    detector = TritonDetector(
        options=TritonOptions(url=triton.grpc_url, shared_memory=mode), models=()
    )
    try:
        assert detector.shared_memory
        if mode == "auto":
            async with detector.frame_region(4096) as region:
                assert region is None
            assert not detector.shared_memory
        else:
            with pytest.raises(Internal, match="registering a frame region"):
                async with detector.frame_region(4096):
                    pass
        assert not {n for n in registered(triton) if n.startswith(shm.PREFIX)} & on_disk()
    finally:
        await detector.close()


async def test_regions_of_a_killed_process_are_forgotten_on_load(triton: TritonServer) -> None:
    # What a SIGKILLed server leaves: Triton still has the region, /dev/shm does not
    # (the dead process's resource tracker unlinked it).
    region, handle = shm.create(4096)
    with tritongrpc.InferenceServerClient(triton.grpc_url) as client:
        client.register_system_shared_memory(region.name, region.key, 4096)
    shm.destroy(handle)
    assert region.name in registered(triton)
    detector = TritonDetector(
        options=TritonOptions(url=triton.grpc_url, shared_memory="auto"), models=()
    )
    try:
        await detector.load()
    finally:
        await detector.close()
    assert region.name not in registered(triton)


async def test_no_room_in_dev_shm_sends_frames_inline(
    triton: TritonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    before = on_disk()
    monkeypatch.setattr(os, "posix_fallocate", full)
    detector = TritonDetector(
        options=TritonOptions(url=triton.grpc_url, shared_memory="on"), models=()
    )
    try:
        async with detector.frame_region(4096) as region:
            assert region is None
        assert detector.shared_memory  # only this analysis goes inline
    finally:
        await detector.close()
    assert not (on_disk() - before)
