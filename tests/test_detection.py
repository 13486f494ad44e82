"""Detection through a real tritonserver: verdicts, batching, model choice, and
analyses that survive Triton outages and dying workers."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as tritongrpc
from conftest import Database, Running, StartServer
from support.process import settings_env
from support.rpc import details
from support.triton import TritonServer
from support.videos import SPECS, make_damaged_after_first_second, make_video
from vidscan.v1 import analysis_pb2, upload_pb2

from server.config import Settings

ANALYZED = analysis_pb2.ANALYSIS_STATUS_ANALYZED


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """4 s at 10 fps: 40 frames, more than the 32 sampled."""
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    return make_video(path, spec=SPECS["mp4"], seconds=4, fps=10).read_bytes()


async def wait_for_status(  # type: ignore[no-untyped-def]
    client, analysis_id: str, status: int, within: float = 60
) -> analysis_pb2.Analysis:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        analysis = await client.analysis(analysis_id)
        if analysis.status == status:
            return analysis  # type: ignore[no-any-return]
        assert loop.time() < deadline, f"analysis stuck in {analysis.status}"
        await asyncio.sleep(0.25)


async def test_upload_returns_a_verdict_with_every_field(
    detecting_server: Running, clip: bytes
) -> None:
    client = detecting_server.client()
    # Whole-frame scores (the default face model finds no face in a gradient: see
    # test_faces.py for faces and NO_FACE_DETECTED).
    result = await client.upload(clip, model="frame_ensemble")
    assert result.upload_status == upload_pb2.UPLOAD_STATUS_ANALYZED
    detection = result.detection_result
    assert detection.model_name == "frame_ensemble"
    assert detection.model_version == "1"
    assert detection.reference_model is True
    assert "no meaning" in detection.disclaimer
    assert detection.frames_analyzed == 32
    assert len(detection.frame_scores) == 32
    assert all(0.0 <= s <= 1.0 for s in detection.frame_scores)
    assert 0.0 <= detection.confidence <= 1.0
    assert detection.threshold == 0.5
    assert detection.is_fake == (detection.confidence >= detection.threshold)
    assert detection.aggregation == "confident"
    assert detection.decode_ms > 0 and detection.inference_ms > 0
    assert result.confidence_score == pytest.approx(detection.confidence)
    assert result.is_fake == detection.is_fake
    assert result.HasField("processing_time") and result.processing_time > 0
    assert result.estimated_processing_time == 0
    analysis = await client.analysis(result.analysis_id)
    assert analysis.status == ANALYZED
    assert list(analysis.detection.frame_scores) == list(detection.frame_scores)
    # Same bytes, same reference model: the verdict is deterministic.
    again = await client.upload(clip)
    assert again.detection_result.confidence == pytest.approx(detection.confidence)


def infer_calls(triton: TritonServer, model: str) -> tuple[int, int]:
    """(successful requests, frames inferred) from Triton's own statistics."""
    with tritongrpc.InferenceServerClient(triton.grpc_url) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats["inference_stats"]["success"].get("count", 0)), int(
        stats.get("inference_count", 0)
    )


@pytest.mark.parametrize("model", ["frame_resnet", "frame_cnn", "frame_ensemble"])
async def test_frames_go_in_one_batch_and_the_model_can_be_chosen(
    model: str, start_server: StartServer, triton: TritonServer, clip: bytes
) -> None:
    # No queue workers here: jobs other tests left in the shared queue would also
    # call the models and blur the counts. Only the inline analysis runs.
    running = await start_server(triton_url=triton.grpc_url, analysis_workers=0)
    before = infer_calls(triton, model)
    result = await running.client().upload(clip, model=model)
    after = infer_calls(triton, model)
    assert result.detection_result.model_name == model
    max_batch = 32
    assert after[0] - before[0] <= math.ceil(32 / max_batch)
    assert after[1] - before[1] == 32


async def test_triton_down_then_back(
    start_server: StartServer,
    real_settings: Settings,
    triton: TritonServer,
    clip: bytes,
    own_database: Database,
) -> None:
    """Triton dies in the middle of an analysis: the upload still succeeds as
    PROCESSING, and the analysis completes once Triton is back."""
    db = own_database  # no other test's analyses for the recovery sweep to queue here
    running = await start_server(
        database_url=db.url,
        redis_url=real_settings.redis_url.rsplit("/", 1)[0] + "/6",  # a queue of its own
        triton_url=triton.grpc_url,
        analysis_retry_seconds=1,
        analysis_reclaim_seconds=2,
        analysis_wait_seconds=8,
    )
    client = running.client()
    upload = asyncio.create_task(client.upload(clip))

    async def kill_when_running() -> None:
        for _ in range(600):
            status = await db.scalar(
                "select status from analyses where user_id in "
                "(select user_id from videos where session_id is not null) "
                "and status = 'running' limit 1"
            )
            if status == "running":
                triton.kill()
                return
            await asyncio.sleep(0.01)
        triton.kill()

    try:
        await kill_when_running()
        result = await upload
        assert result.upload_status == upload_pb2.UPLOAD_STATUS_PROCESSING
        assert result.estimated_processing_time > 0
        assert not result.HasField("confidence_score")
        pending = await client.analysis(result.analysis_id)
        assert pending.status in (
            analysis_pb2.ANALYSIS_STATUS_PENDING,
            analysis_pb2.ANALYSIS_STATUS_RUNNING,
        )
    finally:
        await asyncio.to_thread(triton.restart)
    analysis = await wait_for_status(client, result.analysis_id, ANALYZED, within=90)
    assert analysis.detection.frames_analyzed == 32
    assert analysis.attempts >= 2


async def test_undecodable_video_ends_failed_and_server_is_unharmed(
    detecting_server: Running, tmp_path: Path, clip: bytes
) -> None:
    damaged = make_damaged_after_first_second(tmp_path / "damaged.mp4").read_bytes()
    client = detecting_server.client()
    result = await client.upload(damaged)
    assert result.upload_status == upload_pb2.UPLOAD_STATUS_ANALYSIS_FAILED
    analysis = await client.analysis(result.analysis_id)
    assert analysis.status == analysis_pb2.ANALYSIS_STATUS_FAILED
    assert analysis.failure_reason == "VIDEO_UNDECODABLE"
    assert "frames could be decoded" in analysis.failure_message
    healthy = await client.upload(clip)
    assert healthy.upload_status == upload_pb2.UPLOAD_STATUS_ANALYZED


async def test_worker_killed_mid_job_is_finished_by_another(
    start_server: StartServer,
    real_settings: Settings,
    triton: TritonServer,
    clip: bytes,
    own_database: Database,
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    fast = {
        # A Redis database and a PostgreSQL database of its own: jobs other tests left
        # in the shared queue, or their unfinished analyses that the recovery sweep
        # queues again, would otherwise be what the stuck worker picks first.
        "redis_url": real_settings.redis_url.rsplit("/", 1)[0] + "/5",
        "database_url": own_database.url,
        "triton_url": triton.grpc_url,
        "analysis_lease_seconds": 3,
        "analysis_reclaim_seconds": 2,
        "analysis_retry_seconds": 1,
    }
    # The API server only enqueues (no inline analysis, no in-process workers).
    running = await start_server(analysis_wait_seconds=0, analysis_workers=0, **fast)
    stuck_settings = real_settings.model_copy(
        update={**fast, "media_fault_injection": "hang:sample_frames", "media_timeout_seconds": 300}
    )
    log = (tmp_path / "worker.log").open("w")
    stuck = subprocess.Popen(  # noqa: ASYNC220 - a real worker process, started once
        [sys.executable, "-m", "server.cli", "worker"],
        env=settings_env(stuck_settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    healthy = None
    try:
        client = running.client()
        result = await client.upload(clip)
        assert result.upload_status == upload_pb2.UPLOAD_STATUS_PROCESSING

        async def attempts() -> int:
            value = await own_database.scalar(
                "select attempts from analyses where id = :a and status = 'running'",
                a=result.analysis_id,
            )
            return int(value or 0)

        for _ in range(300):
            if await attempts() >= 1:
                break
            await asyncio.sleep(0.1)
        else:
            log_text = (tmp_path / "worker.log").read_text()
            pytest.fail(f"the first worker never took the job: {log_text}")
        stuck.kill()
        stuck.wait(10)
        healthy = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "server.cli", "worker"],
            env=settings_env(real_settings.model_copy(update=fast)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        analysis = await wait_for_status(client, result.analysis_id, ANALYZED, within=90)
        assert analysis.attempts >= 2  # the dead worker's attempt, then the new one
    finally:
        for proc in (stuck, healthy):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        log.close()


async def test_refused_model_name(detecting_server: Running, clip: bytes) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        await detecting_server.client().upload(clip, model="resnet50-imagenet")
    info = details(caught.value)
    assert info.reason == "MODEL_NOT_ALLOWED"
    assert info.metadata["allowed_models"] == "face_ensemble,frame_ensemble,frame_resnet,frame_cnn"
