"""The vidscan_client library (sync and asyncio) and `vidscan` CLI against the real
server, from the dev venv's editable install (tests/test_client_wheel.py runs the
built wheel in a venv of its own).

The sync client blocks, so async tests call it through asyncio.to_thread: the
in-process server runs on the test's event loop. The asyncio client runs on it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import Running, StartServer
from support.process import ServerProcess
from support.tcpproxy import TcpProxy
from support.triton import TritonServer
from support.videos import SPECS, make_video
from vidscan_client import AsyncVidscanClient, is_final, settle
from vidscan_client.client import VidscanClient, VidscanError
from vidscan_client.protos import analysis_pb2, upload_pb2

from server.config import Settings
from server.main import token_authority
from server.storage.s3 import S3ObjectStore


def new_user(tag: str) -> str:
    return f"client-{tag}-{uuid.uuid4().hex[:10]}"


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@dataclass
class Cli:
    code: int
    stdout: str
    stderr: str


async def run_cli(*args: str, target: str, token: str) -> Cli:
    """`python -m vidscan_client.cli ...` as a real subprocess (not a blocking call:
    the in-process server shares this event loop)."""
    env = {**os.environ, "VIDSCAN_TARGET": target, "VIDSCAN_TOKEN": token}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vidscan_client.cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Cli(process.returncode, stdout.decode(), stderr.decode())


# -- library -------------------------------------------------------------------------


@pytest.mark.parametrize("dedup", [False, True], ids=["plain", "dedup"])
async def test_upload_reports_increasing_progress_and_returns_the_result(
    dedup: bool, server: Running, videos: dict[str, bytes], tmp_path: Path, s3: S3ObjectStore
) -> None:
    data = videos["mp4"]
    path = write(tmp_path, "clip.mp4", data)
    token = token_authority(server.settings).mint(new_user("progress"))
    progress: list[tuple[int, int]] = []
    chunk = 4096

    def call() -> tuple[upload_pb2.UploadResult, analysis_pb2.Video, analysis_pb2.Analysis]:
        with VidscanClient(server.target, token) as client:
            result = client.upload(
                path,
                dedup=dedup,
                metadata={"source": "library", "n": 3},
                chunk_size=chunk,
                on_progress=lambda sent, total: progress.append((sent, total)),
            )
            return result, client.video(result.video_id), client.analysis(result.analysis_id)

    result, video, analysis = await asyncio.to_thread(call)

    assert result.file_hash == hashlib.sha256(data).hexdigest()
    assert result.file_size == len(data)
    assert result.filename == "clip.mp4"
    assert result.format == "mp4"
    assert dict(result.metadata) == {"source": "library", "n": 3.0}
    assert await s3.read_range(result.s3_key, start=0, length=len(data)) == data
    assert (video.video_id, video.file_hash) == (result.video_id, result.file_hash)
    assert (analysis.analysis_id, analysis.video_id) == (result.analysis_id, result.video_id)

    sent = [s for s, _ in progress]
    assert {t for _, t in progress} == {len(data)}
    assert sent[0] == 0 and sent[-1] == len(data)
    assert all(a < b for a, b in itertools.pairwise(sent)), sent
    assert len(progress) == -(-len(data) // chunk) + 1


async def test_session_calls_and_cancel(server: Running) -> None:
    token = token_authority(server.settings).mint(new_user("session"))

    def call() -> tuple[str, str, bool, str]:
        with VidscanClient(server.target, token) as client:
            session = client.create_session()
            before = client.session_status(session.session_id).status
            cancelled = client.cancel(session.session_id).cleanup_performed
            after = client.session_status(session.session_id)
            assert after.session.session_id == session.session_id
            return session.session_id, before, cancelled, after.status

    _, before, cancelled, after = await asyncio.to_thread(call)
    assert (before, cancelled, after) == ("active", True, "cancelled")

    def missing() -> VidscanError:
        with VidscanClient(server.target, token) as client:
            with pytest.raises(VidscanError) as caught:
                client.video(str(uuid.uuid4()))
            return caught.value

    error = await asyncio.to_thread(missing)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "VIDEO_NOT_FOUND")
    assert not error.transient


async def test_refused_upload_raises_a_typed_error_with_cleanup(
    server: Running, tmp_path: Path
) -> None:
    path = write(tmp_path, "noise.mp4", os.urandom(3 * 1024 * 1024))
    token = token_authority(server.settings).mint(new_user("refused"))
    retries: list[VidscanError] = []

    def call() -> tuple[VidscanError, str]:
        with VidscanClient(server.target, token) as client:
            session = client.create_session()
            with pytest.raises(VidscanError) as caught:
                client.upload(
                    path,
                    session_id=session.session_id,
                    on_retry=lambda _n, error, _d: retries.append(error),
                )
            return caught.value, client.session_status(session.session_id).status

    error, status = await asyncio.to_thread(call)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "UNSUPPORTED_FORMAT"
    assert error.message
    assert not error.transient
    assert error.cleanup is not None and error.cleanup.session_cleanup
    assert error.cleanup.quota_released
    assert retries == []  # a refusal is final: no retry
    assert status == "cancelled"


async def test_too_large_is_refused_before_any_byte_is_sent(
    start_server: StartServer, big_video: bytes, tmp_path: Path
) -> None:
    server = await start_server(max_upload_bytes=1024 * 1024)
    path = write(tmp_path, "big.mp4", big_video)
    token = token_authority(server.settings).mint(new_user("large"))
    progress: list[int] = []

    def call() -> VidscanError:
        with VidscanClient(server.target, token) as client:
            with pytest.raises(VidscanError) as caught:
                client.upload(path, on_progress=lambda sent, _t: progress.append(sent))
            return caught.value

    error = await asyncio.to_thread(call)
    assert error.reason == "FILE_TOO_LARGE"
    assert error.metadata["max_bytes"] == str(1024 * 1024)
    assert progress == []


# -- asyncio client ------------------------------------------------------------------


async def test_async_client_uploads_reads_back_and_reports_refusals(
    server: Running, videos: dict[str, bytes], tmp_path: Path
) -> None:
    data = videos["mp4"]
    path = write(tmp_path, "clip.mp4", data)
    noise = write(tmp_path, "noise.mp4", os.urandom(1024 * 1024))
    token = token_authority(server.settings).mint(new_user("aio"))
    progress: list[int] = []

    async with AsyncVidscanClient(server.target, token) as client:
        result = await client.upload(
            path, metadata={"source": "aio"}, on_progress=lambda sent, _t: progress.append(sent)
        )
        video = await client.video(result.video_id)
        analysis = await client.analysis(result.analysis_id)

        session = await client.create_session()
        before = (await client.session_status(session.session_id)).status
        cancelled = (await client.cancel(session.session_id)).cleanup_performed
        after = (await client.session_status(session.session_id)).status

        with pytest.raises(VidscanError) as missing:
            await client.analysis(str(uuid.uuid4()))
        with pytest.raises(VidscanError) as refused:
            await client.upload(noise)

    assert result.file_hash == hashlib.sha256(data).hexdigest()
    assert dict(result.metadata) == {"source": "aio"}
    assert progress[0] == 0 and progress[-1] == len(data)
    assert (video.video_id, analysis.video_id) == (result.video_id, result.video_id)
    assert (before, cancelled, after) == ("active", True, "cancelled")
    assert (missing.value.code, missing.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "ANALYSIS_NOT_FOUND",
    )
    assert not missing.value.transient
    assert refused.value.reason == "UNSUPPORTED_FORMAT"
    assert refused.value.cleanup is not None and refused.value.cleanup.quota_released


async def test_cancelled_async_upload_stops_and_the_session_resumes(
    server: Running, big_video: bytes, tmp_path: Path
) -> None:
    """Cancelling the task that awaits an upload cancels its stream and stops the
    retries; the session keeps what it committed, and a later upload finishes it."""
    path = write(tmp_path, "big.mp4", big_video)
    token = token_authority(server.settings).mint(new_user("aio-cancel"))
    loop = asyncio.get_running_loop()
    reached, release = asyncio.Event(), threading.Event()
    retries: list[VidscanError] = []

    def on_progress(sent: int, total: int) -> None:
        # Held on gRPC's request thread until the test has cancelled: the stream
        # cannot finish first.
        if sent >= total // 3 and not release.is_set():
            loop.call_soon_threadsafe(reached.set)
            release.wait(30)

    async with AsyncVidscanClient(server.target, token) as client:
        session = await client.create_session()
        task = asyncio.create_task(
            client.upload(
                path,
                session_id=session.session_id,
                on_progress=on_progress,
                on_retry=lambda _n, error, _d: retries.append(error),
            )
        )
        await asyncio.wait_for(reached.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        status = await client.session_status(session.session_id)
        result = await client.upload(path, session_id=session.session_id)

    assert retries == []
    assert status.status == "active"
    assert status.session.committed_bytes < len(big_video)
    assert result.file_hash == hashlib.sha256(big_video).hexdigest()
    assert result.file_size == len(big_video)


# -- waiting for an analysis ---------------------------------------------------------


async def test_wait_for_analysis_until_the_background_verdict(
    start_server: StartServer, triton: TritonServer, tmp_path: Path
) -> None:
    """The server answers PROCESSING at once (no inline wait); the sync and asyncio
    clients poll until the worker's verdict, and settle() folds it into the result."""
    running = await start_server(triton_url=triton.grpc_url, analysis_wait_seconds=0)
    path = make_video(tmp_path / "clip.mp4", spec=SPECS["mp4"], seconds=2, fps=10)
    token = token_authority(running.settings).mint(new_user("wait"))

    async with AsyncVidscanClient(running.target, token) as client:
        result = await client.upload(path)
        waited = await client.wait_for_analysis(result.analysis_id, timeout=90)

    def sync_wait() -> analysis_pb2.Analysis:
        with VidscanClient(running.target, token) as client:
            return client.wait_for_analysis(result.analysis_id, timeout=90)

    again = await asyncio.to_thread(sync_wait)
    assert result.upload_status == upload_pb2.UPLOAD_STATUS_PROCESSING
    assert waited.status == analysis_pb2.ANALYSIS_STATUS_ANALYZED
    assert is_final(waited) and again.status == waited.status
    settled = settle(result, waited)
    assert settled.upload_status == upload_pb2.UPLOAD_STATUS_ANALYZED
    assert settled.detection_result == waited.detection
    assert settled.is_fake == waited.detection.is_fake
    assert settled.video_id == result.video_id

    # Another user: the same file would be deduplicated against this user's video.
    token = token_authority(running.settings).mint(new_user("wait-cli"))
    run = await run_cli("upload", str(path), "--wait", target=running.target, token=token)
    assert run.code == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["upload_status"] == "UPLOAD_STATUS_ANALYZED"
    assert printed["detection_result"]["reference_model"] is True
    assert "is processing; waiting up to" in run.stderr

    shown = await run_cli(
        "result", printed["analysis_id"], "--wait", target=running.target, token=token
    )
    assert shown.code == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "ANALYSIS_STATUS_ANALYZED"


async def test_cli_wait_gives_up_with_exit_4(
    start_server: StartServer, videos: dict[str, bytes], tmp_path: Path
) -> None:
    """No analysis worker: the analysis stays pending, --wait runs out."""
    running = await start_server(analysis_wait_seconds=0, analysis_workers=0)
    path = write(tmp_path, "clip.mp4", videos["mp4"])
    token = token_authority(running.settings).mint(new_user("wait-out"))

    run = await run_cli(
        "upload", str(path), "--wait", "--wait-timeout", "1", target=running.target, token=token
    )
    assert run.code == 4, run.stderr
    result = json.loads(run.stdout)
    assert result["upload_status"] == "UPLOAD_STATUS_PROCESSING"
    assert "still processing after 1 s" in run.stderr

    shown = await run_cli(
        "result",
        result["analysis_id"],
        "--wait",
        "--wait-timeout",
        "0.5",
        target=running.target,
        token=token,
    )
    assert shown.code == 4, shown.stderr
    assert json.loads(shown.stdout)["status"] == "ANALYSIS_STATUS_PENDING"


# -- CLI -----------------------------------------------------------------------------


async def test_cli_upload_prints_the_result_as_json(
    server: Running, videos: dict[str, bytes], tmp_path: Path
) -> None:
    data = videos["webm"]
    path = write(tmp_path, "clip.webm", data)
    token = token_authority(server.settings).mint(new_user("cli"))

    run = await run_cli(
        "upload",
        str(path),
        "--metadata",
        '{"source": "cli"}',
        target=server.target,
        token=token,
    )
    assert run.code == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["video_id"] and result["analysis_id"]
    assert result["file_hash"] == hashlib.sha256(data).hexdigest()
    assert result["file_size"] == str(len(data))  # proto3 JSON writes int64 as a string
    assert result["upload_status"] == "UPLOAD_STATUS_PROCESSING"
    assert result["metadata"] == {"source": "cli"}
    # stderr is not a terminal: no redrawn bar, only the final line.
    assert "\r" not in run.stderr
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith("clip.webm: sent ")

    video = await run_cli("video", result["video_id"], target=server.target, token=token)
    assert video.code == 0, video.stderr
    assert json.loads(video.stdout)["file_hash"] == result["file_hash"]

    analysis = await run_cli("result", result["analysis_id"], target=server.target, token=token)
    assert analysis.code == 0, analysis.stderr
    assert json.loads(analysis.stdout)["video_id"] == result["video_id"]

    def new_session() -> str:
        with VidscanClient(server.target, token) as client:
            return client.create_session().session_id

    session_id = await asyncio.to_thread(new_session)
    status = await run_cli("status", session_id, target=server.target, token=token)
    assert status.code == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "active"


async def test_cli_reminds_that_bundled_models_are_reference_models(
    detecting_server: Running, tmp_path: Path
) -> None:
    path = make_video(tmp_path / "clip.mp4", spec=SPECS["mp4"], seconds=2, fps=10)
    token = token_authority(detecting_server.settings).mint(new_user("cli-verdict"))
    target = detecting_server.target

    run = await run_cli("upload", str(path), target=target, token=token)
    assert run.code == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["upload_status"] == "UPLOAD_STATUS_ANALYZED"
    assert result["detection_result"]["reference_model"] is True
    reminder = [line for line in run.stderr.splitlines() if "reference model" in line]
    assert len(reminder) == 1, run.stderr

    analysis = await run_cli("result", result["analysis_id"], target=target, token=token)
    assert analysis.code == 0, analysis.stderr
    assert json.loads(analysis.stdout)["status"] == "ANALYSIS_STATUS_ANALYZED"
    assert "reference model" in analysis.stderr


async def test_cli_refused_upload_exits_3_with_the_reason(server: Running, tmp_path: Path) -> None:
    path = write(tmp_path, "noise.mov", os.urandom(2 * 1024 * 1024))
    token = token_authority(server.settings).mint(new_user("cli-refused"))

    run = await run_cli("upload", str(path), target=server.target, token=token)
    assert run.code == 3, run.stderr
    assert run.stdout == ""
    error = json.loads(run.stderr.strip().splitlines()[-1])
    assert error["reason"] == "UNSUPPORTED_FORMAT"
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["message"]
    assert error["cleanup"]["session_cleanup"] is True


async def test_cli_other_failures_exit_1(server: Running, tmp_path: Path) -> None:
    bad_token = await run_cli("status", "nope", target=server.target, token="not-a-token")
    assert bad_token.code == 1
    assert json.loads(bad_token.stderr.strip())["reason"] == "UNAUTHENTICATED"

    token = token_authority(server.settings).mint(new_user("cli-fail"))
    missing = await run_cli(
        "upload", str(tmp_path / "absent.mp4"), target=server.target, token=token
    )
    assert missing.code == 1
    assert "absent.mp4" in missing.stderr

    unknown = await run_cli("cancel", str(uuid.uuid4()), target=server.target, token=token)
    assert unknown.code == 1
    assert json.loads(unknown.stderr.strip())["reason"] == "SESSION_NOT_FOUND"


async def test_cli_usage_errors_exit_2(server: Running, tmp_path: Path) -> None:
    """Exit code 2 means the command line was wrong, and nothing reached the server."""
    token = token_authority(server.settings).mint(new_user("cli-usage"))
    bad_metadata = await run_cli(
        "upload", str(tmp_path), "--metadata", "[1]", target=server.target, token=token
    )
    assert bad_metadata.code == 2
    assert "JSON object" in bad_metadata.stderr

    no_file = await run_cli("upload", target=server.target, token=token)
    assert no_file.code == 2
    assert "FILE" in no_file.stderr

    no_token = await run_cli("status", "x", target=server.target, token="")
    assert no_token.code == 2
    assert "VIDSCAN_TOKEN" in no_token.stderr
    assert no_token.stdout == ""


# -- resumption ----------------------------------------------------------------------


@pytest.mark.parametrize("cut_at", [0.5, 0.8], ids=["half", "four-fifths"])
async def test_upload_recovers_from_a_dropped_connection(
    cut_at: float, real_settings: Settings, big_video: bytes, tmp_path: Path, s3: S3ObjectStore
) -> None:
    """A real server process behind a TCP proxy; at ``cut_at`` of the bytes the proxy
    drops every connection once. The client must ask for the committed offset, resume
    from it and deliver a byte-identical file. (Past the first 8 MiB part a server
    that keeps partial uploads has committed something, so the second case resumes
    from the middle there.)"""
    path = write(tmp_path, "big.mp4", big_video)
    user = new_user("resume")
    token = token_authority(real_settings).mint(user)
    proc = await asyncio.to_thread(ServerProcess, real_settings, log_path=tmp_path / "server.log")
    try:
        with TcpProxy(proc.target) as proxy:
            attempts: list[list[int]] = [[]]  # the progress of each stream attempt
            cut: list[int] = []
            retries: list[VidscanError] = []

            def on_progress(sent: int, total: int) -> None:
                attempts[-1].append(sent)
                if not cut and sent >= total * cut_at:
                    cut.append(proxy.cut())

            def on_retry(_attempt: int, error: VidscanError, _delay: float) -> None:
                retries.append(error)
                attempts.append([])

            def call() -> tuple[upload_pb2.UploadResult, upload_pb2.GetUploadSessionResponse]:
                with VidscanClient(proxy.target, token) as client:
                    session = client.create_session()
                    result = client.upload(
                        path,
                        session_id=session.session_id,
                        on_progress=on_progress,
                        on_retry=on_retry,
                    )
                    return result, client.session_status(session.session_id)

            result, status = await asyncio.to_thread(call)
            accepted = proxy.accepted
    finally:
        proc.close()

    size = len(big_video)
    assert cut and cut[0] >= 1, "the proxy had no connection to cut"
    assert retries and all(error.transient for error in retries), retries
    assert accepted >= 2  # the client reconnected
    # Each attempt starts at the offset the server reported as committed and only
    # moves forward; the last one runs to the end. The server keeps what it received
    # (parts plus the tail), so the resumed stream starts well past the beginning.
    streams = [a for a in attempts if a]
    assert len(streams) >= 2, attempts
    interrupted, final = streams[0], streams[-1]
    assert all(a == sorted(a) for a in streams), attempts
    assert interrupted[0] == 0 and interrupted[-1] >= size * cut_at
    assert 0 < final[0] <= interrupted[-1], [(a[0], a[-1]) for a in streams]
    assert final[-1] == size

    assert result.file_hash == hashlib.sha256(big_video).hexdigest()
    assert result.file_size == size
    assert await s3.object_size(result.s3_key) == size
    assert await s3.read_range(result.s3_key, start=0, length=size) == big_video
    # Nothing is left: no multipart upload, no temporary tail object.
    assert await s3.list_multipart(prefix=f"dashboard-uploads/{user}/") == []
    assert await s3.list_keys(prefix=f"dashboard-uploads/{user}/") == [result.s3_key]
    assert status.status == "completed"
    assert status.session.committed_bytes == size


async def test_upload_recovers_from_a_server_crash(
    real_settings: Settings, big_video: bytes, tmp_path: Path, s3: S3ObjectStore
) -> None:
    """At ~90 % of the bytes the server process is SIGKILLed and a second replica
    (sharing PostgreSQL, Redis and MinIO) is started behind the same proxy address.
    The dead stream's session lock expires by itself (3 s here), the client rides out
    SESSION_BUSY with its backoff, then resumes from the last part the first replica
    committed: the object is byte-identical and its SHA-256 right."""
    real_settings = real_settings.model_copy(update={"stream_lock_seconds": 3})
    path = write(tmp_path, "big.mp4", big_video)
    user = new_user("crash")
    token = token_authority(real_settings).mint(user)
    first = await asyncio.to_thread(ServerProcess, real_settings, log_path=tmp_path / "one.log")
    servers = [first]
    try:
        with TcpProxy(first.target) as proxy:
            killed = asyncio.Event()
            kills: list[int] = []  # written on the gRPC thread
            loop = asyncio.get_running_loop()
            retries: list[VidscanError] = []

            attempts: list[list[int]] = [[]]

            def on_progress(sent: int, total: int) -> None:
                attempts[-1].append(sent)
                # A loopback upload finishes faster than S3 confirms its first parts;
                # pace it like a real network so parts are committed before the kill.
                time.sleep(0.05)
                if not kills and sent >= total * 9 // 10:
                    kills.append(sent)
                    first.kill()
                    proxy.cut()
                    loop.call_soon_threadsafe(killed.set)

            def on_retry(_attempt: int, error: VidscanError, _delay: float) -> None:
                retries.append(error)
                attempts.append([])

            def call() -> upload_pb2.UploadResult:
                with VidscanClient(proxy.target, token) as client:
                    return client.upload(
                        path,
                        on_progress=on_progress,
                        on_retry=on_retry,
                    )

            upload = asyncio.create_task(asyncio.to_thread(call))
            await asyncio.wait_for(killed.wait(), 60)
            second = await asyncio.to_thread(
                ServerProcess, real_settings, log_path=tmp_path / "two.log"
            )
            servers.append(second)
            proxy.retarget(second.target)
            result = await asyncio.wait_for(upload, 100)
    finally:
        for proc in servers:
            proc.close()

    assert retries and all(error.transient for error in retries), retries
    assert result.file_hash == hashlib.sha256(big_video).hexdigest()
    assert await s3.read_range(result.s3_key, start=0, length=len(big_video)) == big_video
    # The second replica continued from what the first had committed (whole parts),
    # not from zero.
    final = [a for a in attempts if a][-1]
    assert final[0] >= 8 * 1024 * 1024, [(a[0], a[-1]) for a in attempts if a]
    assert await s3.list_multipart(prefix=f"dashboard-uploads/{user}/") == []
