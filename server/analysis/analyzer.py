"""Runs one analysis: claim -> get the file -> sample frames (isolated worker) ->
Triton -> aggregate -> record. Used inline by UploadVideo and by queue workers.

Frames go from the media worker to Triton through a shared-memory region when the
detector offers one (the server never holds them), else through an ``.npy`` spool
file read back here and sent inside the inference request."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from vidscan.v1 import detection_pb2

from server import metrics, tracing
from server.analysis.queue import Job, JobQueue, retry_delay
from server.detection.aggregate import aggregate
from server.detection.contract import ModelContract
from server.detection.faces import faces_in_source
from server.detection.inference import Inference
from server.detection.result import to_document
from server.detection.shm import FrameRegion
from server.errors import (
    Internal,
    InvalidUpload,
    Reason,
    Unavailable,
    VidscanError,
    reason_name,
)
from server.media.isolation import MediaInspector
from server.media.messages import SampledFrames, SampleRequest
from server.records.model import AnalysisRecord, VideoRecord
from server.records.port import AnalysisRepository
from server.storage.port import ObjectStore

log = logging.getLogger(__name__)

DOWNLOAD_CHUNK = 8 * 1024 * 1024


class Detector(Protocol):
    def contract(self, model: str) -> ModelContract: ...

    async def infer(self, model: str, frames: np.ndarray) -> Inference: ...


@runtime_checkable
class SharedMemoryDetector(Detector, Protocol):
    """An optional ability: frames read from a region the media worker writes."""

    @property
    def shared_memory(self) -> bool: ...

    def frame_region(self, byte_size: int) -> AbstractAsyncContextManager[FrameRegion | None]: ...

    async def infer_region(self, model: str, region: FrameRegion, *, frames: int) -> Inference: ...


class FinalStateHook(Protocol):
    """Told just before an analysis' final state (ANALYZED or FAILED) is written
    (the webhook announcer enqueues its delivery there). Must be quick; an error
    gives the analysis back to be run again, so nothing final goes unannounced."""

    async def before_final(self, analysis: AnalysisRecord) -> None: ...


@dataclass(frozen=True)
class AnalysisRules:
    frames: int
    threshold: float
    strategy: str
    lease: timedelta
    max_attempts: int
    spool_dir: Path
    frame_policy: str = "cheapest"
    decode_threads: int = 1


class Analyzer:
    def __init__(
        self,
        *,
        analyses: AnalysisRepository,
        store: ObjectStore,
        media: MediaInspector,
        detector: Detector,
        rules: AnalysisRules,
        on_final: FinalStateHook | None = None,
    ) -> None:
        self._analyses = analyses
        self._store = store
        self._media = media
        self._detector = detector
        self._rules = rules
        self._on_final = on_final

    async def run(
        self, analysis_id: str, *, local_path: Path | None = None
    ) -> AnalysisRecord | None:
        """Runs the analysis if nobody else holds it; returns its row afterwards.

        Undecodable videos end FAILED; transient trouble (Triton or storage down)
        gives the analysis back as PENDING and raises Unavailable for the caller to
        retry later."""
        current = await self._analyses.get(analysis_id)
        if current is None or current.status.terminal:
            return current
        # Raises Unavailable while Triton's contracts are not loaded, before the claim,
        # so that waiting for Triton does not use up the job's attempts.
        self._detector.contract(current.model_name)
        row = await self._analyses.claim(analysis_id, lease=self._rules.lease)
        if row is None:
            return await self._analyses.get(analysis_id)
        started = time.perf_counter()
        try:
            result = await self._analyse(row, local_path)
        except InvalidUpload as exc:
            await self._fail(row, exc)
        except Unavailable as exc:
            await self._analyses.release(
                analysis_id, reason=reason_name(exc.reason), message=exc.message
            )
            raise
        except VidscanError as exc:
            if row.attempts >= self._rules.max_attempts:
                await self._fail(row, exc)
            else:
                await self._analyses.release(
                    analysis_id, reason=reason_name(exc.reason), message=exc.message
                )
                raise Unavailable(exc.reason, exc.message) from exc
        else:
            duration_ms = (time.perf_counter() - started) * 1000
            await self._announce(row)
            await self._analyses.complete(analysis_id, result=result, duration_ms=duration_ms)
            metrics.ANALYSES.labels("analyzed").inc()
            metrics.ANALYSIS_SECONDS.labels("total").observe(duration_ms / 1000)
        return await self._analyses.get(analysis_id)

    async def _fail(self, row: AnalysisRecord, exc: VidscanError) -> None:
        await self._announce(row)
        await self._analyses.fail(row.id, reason=reason_name(exc.reason), message=exc.message)
        metrics.ANALYSES.labels("failed").inc()

    async def _announce(self, row: AnalysisRecord) -> None:
        """The final-state hook, before the final write; when it fails the analysis
        is given back (PENDING) and runs again later, so its event is not lost."""
        if self._on_final is None:
            return
        try:
            await self._on_final.before_final(row)
        except VidscanError as exc:
            await self._analyses.release(
                row.id, reason=reason_name(exc.reason), message=exc.message
            )
            raise Unavailable(
                Reason.QUEUE_UNAVAILABLE,
                f"analysis {row.id}: its final state could not be announced: {exc.message}",
            ) from exc

    async def _analyse(self, row: AnalysisRecord, local_path: Path | None) -> dict[str, Any]:
        video = await self._analyses.video(row.video_id)
        if video is None:
            raise Internal(
                Reason.DATABASE_ERROR, f"video {row.video_id} of the analysis is missing"
            )
        contract = self._detector.contract(row.model_name)
        request = SampleRequest(
            path="",
            count=self._rules.frames,
            duration=video.duration_seconds,
            size=contract.size,
            mean=tuple(contract.mean),
            std=tuple(contract.std),
            layout=contract.layout,
            datatype=contract.datatype,
            policy=self._rules.frame_policy,
            max_packets=_index_bound(video.duration_seconds, video.fps),
            min_frames=_minimum_frames(self._rules.frames, video.duration_seconds, video.fps),
            out="",
            resize=contract.resize,
            threads=self._rules.decode_threads,
        )
        async with self._video_file(video.s3_key, local_path) as path:
            request = dataclasses.replace(request, path=str(path))
            sampled, inference, inference_ms = await self._frames_and_scores(
                row.model_name, contract, request
            )
        metrics.ANALYSIS_SECONDS.labels("decode").observe(sampled.decode_ms / 1000)
        metrics.ANALYSIS_SECONDS.labels("inference").observe(inference_ms / 1000)
        detection = detection_pb2.Detection(
            threshold=self._rules.threshold,
            model_name=contract.name,
            model_version=contract.version,
            reference_model=contract.reference_model,
            disclaimer=contract.disclaimer,
            frame_times=list(sampled.times),
            frame_policy=sampled.plan,
            aggregation=self._rules.strategy,
            decode_ms=sampled.decode_ms,
            inference_ms=round(inference_ms, 1),
            outcome=detection_pb2.DETECTION_OUTCOME_JUDGED,
        )
        scores = inference.scores
        if contract.faces:
            scores = self._judge_faces(detection, contract, inference, video, sampled)
            if not scores:
                return to_document(detection)
        confidence = aggregate(scores, strategy=self._rules.strategy)
        detection.is_fake = confidence >= self._rules.threshold
        detection.confidence = round(confidence, 6)
        detection.frames_analyzed = sampled.frames
        detection.frame_scores.extend(round(s, 6) for s in scores)
        return to_document(detection)

    def _judge_faces(
        self,
        detection: detection_pb2.Detection,
        contract: ModelContract,
        inference: Inference,
        video: VideoRecord,
        sampled: SampledFrames,
    ) -> list[float]:
        """Fills the face fields; the scores to aggregate are the faces' (none: the
        outcome is NO_FACE_DETECTED and nothing is judged)."""
        if inference.faces is None:
            raise Internal(Reason.DETECTOR_ERROR, f"{contract.name} answered no faces")
        found = faces_in_source(
            inference.faces,
            input_size=contract.size,
            width=video.width,
            height=video.height,
            times=sampled.times,
        )
        detection.face_detector = contract.face_detector
        detection.face_margin = contract.face_margin
        detection.faces.extend(found.frames)
        detection.frames_with_faces = found.frames_with_faces
        detection.faces_analyzed = len(found.probabilities)
        detection.face_detection_ms = round(inference.faces.detection_ms, 1)
        detection.face_classification_ms = round(inference.faces.classification_ms, 1)
        detection.frames_analyzed = sampled.frames
        if not found.probabilities:
            detection.outcome = detection_pb2.DETECTION_OUTCOME_NO_FACE_DETECTED
            detection.outcome_reason = (
                f"no face was found in any of the {sampled.frames} analysed frames "
                f"(face detector {contract.face_detector}): nothing was judged"
            )
        return found.probabilities

    async def _frames_and_scores(
        self, model: str, contract: ModelContract, request: SampleRequest
    ) -> tuple[SampledFrames, Inference, float]:
        """Sampled frames (media worker) and their scores (Triton), with the
        inference time in ms."""
        detector = self._detector
        if isinstance(detector, SharedMemoryDetector) and detector.shared_memory:
            async with detector.frame_region(request.count * contract.frame_bytes) as region:
                if region is not None:
                    sampled = await self._media.sample_frames(
                        dataclasses.replace(
                            request, shm_key=region.name, shm_bytes=region.byte_size
                        )
                    )
                    started = time.perf_counter()
                    scores = await detector.infer_region(model, region, frames=sampled.frames)
                    return sampled, scores, (time.perf_counter() - started) * 1000
        out = Path(tempfile.mktemp(suffix=".npy", dir=self._rules.spool_dir))
        try:
            sampled = await self._media.sample_frames(dataclasses.replace(request, out=str(out)))
            frames = np.load(out, allow_pickle=False)
        finally:
            out.unlink(missing_ok=True)
        started = time.perf_counter()
        scores = await detector.infer(model, frames)
        return sampled, scores, (time.perf_counter() - started) * 1000

    @contextlib.asynccontextmanager
    async def _video_file(self, key: str, local_path: Path | None) -> AsyncIterator[Path]:
        """The video as a local file: the upload's spool file when this process still
        has it, else a download from object storage in bounded chunks."""
        if local_path is not None and local_path.exists():
            yield local_path
            return
        size = await self._store.object_size(key)
        if size is None:
            raise Internal(Reason.STORAGE_ERROR, f"stored video {key} is missing")
        handle, name = tempfile.mkstemp(suffix=".download", dir=self._rules.spool_dir)
        path = Path(name)
        try:
            with open(handle, "wb") as out:
                for start in range(0, size, DOWNLOAD_CHUNK):
                    out.write(
                        await self._store.read_range(
                            key, start=start, length=min(DOWNLOAD_CHUNK, size - start)
                        )
                    )
            yield path
        finally:
            path.unlink(missing_ok=True)


# ~120 MB of index in the worker at most (about 4.6 h at 60 fps).
MAX_INDEX_PACKETS = 1_000_000


def _index_bound(duration: float, fps: float) -> int:
    """Packets the planner may read: twice what the validated duration and frame rate
    promise (VFR and rounding), at least 10,000, at most ``MAX_INDEX_PACKETS``; past it
    the worker samples by seeking, whose work is bounded by the frames asked for."""
    return min(MAX_INDEX_PACKETS, max(10_000, int(2 * duration * max(fps, 1.0))))


def _minimum_frames(requested: int, duration: float, fps: float) -> int:
    """Below this many decodable frames a video counts as undecodable: a quarter of
    what it could give (a clip shorter than the sample count gives fewer)."""
    available = max(1, int(duration * fps)) if fps > 0 else requested
    return max(1, min(requested, available) // 4)


class AnalysisWorker:
    """Consumes the job queue until cancelled. Several may run, in one process or many."""

    def __init__(
        self, *, queue: JobQueue, analyzer: Analyzer, analyses: AnalysisRepository, name: str
    ) -> None:
        self._queue = queue
        self._analyzer = analyzer
        self._analyses = analyses
        self._name = name

    async def run_forever(self, *, stop: asyncio.Event, retry_delay_seconds: float = 5.0) -> None:
        """Runs until ``stop`` is set; a job in hand is finished first. (Cancelling a
        worker blocked in a queue read would drop that connection mid-command.)

        A job that cannot run now (Triton unavailable, or another worker holds the
        analysis) comes back after ``retry_delay_seconds``, doubling per retry."""
        while not stop.is_set():
            try:
                job = await self._queue.receive(consumer=self._name, wait_seconds=1.0)
                if job is not None:
                    # A queued job is its own trace (the upload's ended with its RPC).
                    with tracing.span("analysis job", {"vidscan.analysis_id": job.analysis_id}):
                        await self._handle(job, retry_delay_seconds=retry_delay_seconds)
            except VidscanError:
                log.exception("analysis worker %s: queue trouble; retrying", self._name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_delay_seconds)

    async def _handle(self, job: Job, *, retry_delay_seconds: float) -> None:
        current = await self._analyses.get(job.analysis_id)
        if current is None or current.status.terminal:
            await self._queue.ack(job)
            return
        delay = retry_delay(job.retries, base_seconds=retry_delay_seconds)
        try:
            row = await self._analyzer.run(job.analysis_id)
        except Unavailable as exc:
            log.warning(
                "analysis %s postponed %.1fs (retry %d): %s",
                job.analysis_id,
                delay,
                job.retries + 1,
                exc.message,
            )
            await self._queue.retry_later(job, delay_seconds=delay)
            return
        if row is not None and row.status.terminal:
            await self._queue.ack(job)
        else:  # held by another worker: look again later
            await self._queue.retry_later(job, delay_seconds=delay)
