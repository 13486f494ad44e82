"""The UploadVideo use case, start to end, and its cleanup.

Order of work for one stream:
  session check -> stream lock -> offset check -> quota reservation ->
  for each chunk: limits + SHA-256 + sniff (StreamValidator), spool, S3 part,
                  early PyAV header probe once the header is in ->
  end: declared size/hash, full PyAV validation, last part, complete multipart ->
  one DB transaction (video + analysis rows, quota spent) -> session COMPLETED.

Any failure (or client cancellation) on the way runs ``_cleanup``: abort the
multipart upload or delete the object, give the quota unit back, release the
session. No row is written before the final transaction, so none can be left half.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.clock import Clock
from server.db.models import AnalysisRow, VideoRow
from server.db.repository import Repository
from server.errors import (
    Cancelled,
    Cleanup,
    InvalidUpload,
    NotFound,
    OffsetMismatch,
    Reason,
    SessionBusy,
    VidscanError,
)
from server.media.isolation import MediaInspector
from server.media.sniff import Container
from server.sessions.port import SessionRecord, SessionState, SessionStore
from server.storage.port import ObjectStore
from server.upload.naming import display_filename, object_key
from server.upload.parts import PartUploader
from server.upload.spool import SpoolFile
from server.upload.validation import StreamValidator

log = logging.getLogger(__name__)

LOCK_TTL_SECONDS = 30.0
# How often a running stream looks for CancelUploadSession on its session.
WATCH_INTERVAL_SECONDS = 1.0
# For containers whose header sits at the front (MKV, WebM, AVI) the early probe
# runs once this much has arrived; MP4/MOV are probed when `moov` is complete.
EARLY_PROBE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class UploadRules:
    max_bytes: int
    part_size: int
    parts_in_flight: int
    spool_dir: Path
    default_model: str


@dataclass(frozen=True)
class UploadInput:
    """The first message of an UploadVideo stream, already type-checked."""

    user_id: str
    session_id: str
    filename: str
    content_type: str
    declared_size: int | None
    declared_sha256: str
    metadata: dict[str, Any]
    write_offset: int
    model: str


@dataclass(frozen=True)
class StoredUpload:
    video: VideoRow
    analysis: AnalysisRow
    object_uri: str
    spool_path: Path


def session_not_found(session_id: str) -> NotFound:
    return NotFound(
        Reason.SESSION_NOT_FOUND,
        "upload session not found, expired, cancelled or already completed",
        metadata={"session_id": session_id},
    )


@dataclass
class _Watch:
    """Lets the lock keeper interrupt a stream whose session was cancelled."""

    task: asyncio.Task[Any] | None
    cancelled: bool = False


@dataclass
class _Progress:
    """What one stream has created so far, for cleanup."""

    quota_reserved: bool = False
    parts: PartUploader | None = None
    completed_key: str = ""
    recorded: bool = False
    record_attempted: bool = False
    spool: SpoolFile | None = None
    probe: asyncio.Task[dict[str, Any]] | None = None


class UploadPipeline:
    def __init__(
        self,
        *,
        sessions: SessionStore,
        store: ObjectStore,
        repository: Repository,
        media: MediaInspector,
        rules: UploadRules,
        clock: Clock,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._repo = repository
        self._media = media
        self._rules = rules
        self._clock = clock
        self._new_id = new_id

    async def run(self, request: UploadInput, chunks: AsyncIterator[bytes]) -> StoredUpload:
        session = await self._sessions.get(request.session_id)
        now = self._clock()
        if (
            session is None
            or session.user_id != request.user_id
            or session.effective_state(now) is not SessionState.ACTIVE
        ):
            raise session_not_found(request.session_id)
        owner = self._new_id()
        if not await self._sessions.acquire_lock(
            session.session_id, owner=owner, ttl_seconds=LOCK_TTL_SECONDS
        ):
            raise SessionBusy(
                Reason.SESSION_BUSY,
                "another stream is already writing this session",
                metadata={"session_id": session.session_id},
            )
        watch = _Watch(task=asyncio.current_task())
        keeper = asyncio.create_task(self._keep_lock(session.session_id, owner, watch))
        try:
            return await self._run_locked(request, session, chunks, watch)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(VidscanError):
                await asyncio.shield(self._sessions.release_lock(session.session_id, owner=owner))

    async def _keep_lock(self, session_id: str, owner: str, watch: _Watch) -> None:
        """Keeps the stream lock alive and notices CancelUploadSession on the session
        (from any replica), interrupting the stream when it happens."""
        last_refresh = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            with contextlib.suppress(VidscanError):
                now = asyncio.get_running_loop().time()
                if now - last_refresh >= LOCK_TTL_SECONDS / 3:
                    await self._sessions.refresh_lock(
                        session_id, owner=owner, ttl_seconds=LOCK_TTL_SECONDS
                    )
                    last_refresh = now
                record = await self._sessions.get(session_id)
                if record is not None and record.state is SessionState.CANCELLED:
                    watch.cancelled = True
                    if watch.task is not None:
                        watch.task.cancel()
                    return

    async def _run_locked(
        self,
        request: UploadInput,
        session: SessionRecord,
        chunks: AsyncIterator[bytes],
        watch: _Watch,
    ) -> StoredUpload:
        if request.write_offset != session.committed_bytes:
            raise OffsetMismatch(
                Reason.INVALID_OFFSET,
                f"write_offset {request.write_offset} does not match the committed "
                f"offset {session.committed_bytes}",
                metadata={"expected_offset": str(session.committed_bytes)},
            )
        validator = StreamValidator(
            max_bytes=min(self._rules.max_bytes, session.max_bytes),
            declared_size=request.declared_size,
            declared_sha256=request.declared_sha256,
        )
        progress = _Progress()
        try:
            await self._repo.reserve_quota(user_id=request.user_id, session_id=session.session_id)
            progress.quota_reserved = True
            return await self._receive_and_store(request, session, chunks, validator, progress)
        except BaseException as exc:
            cleanup = await asyncio.shield(self._cleanup(session, progress, exc))
            if isinstance(exc, asyncio.CancelledError) and watch.cancelled:
                if watch.task is not None:
                    watch.task.uncancel()
                cancelled = Cancelled(
                    Reason.UPLOAD_CANCELLED,
                    "the upload session was cancelled while the upload was in flight",
                    metadata={"session_id": session.session_id},
                )
                cancelled.cleanup = cleanup
                raise cancelled from None
            if isinstance(exc, VidscanError):
                exc.cleanup = cleanup
            raise
        finally:
            if progress.spool is not None and not progress.recorded:
                progress.spool.remove()

    async def _receive_and_store(
        self,
        request: UploadInput,
        session: SessionRecord,
        chunks: AsyncIterator[bytes],
        validator: StreamValidator,
        progress: _Progress,
    ) -> StoredUpload:
        video_id = self._new_id()

        async def start_multipart() -> tuple[str, str]:
            container = validator.container
            assert container is not None, "parts are cut only after sniffing"
            key = object_key(user_id=request.user_id, video_id=video_id, extension=container)
            upload_id = await self._store.create_multipart(key, content_type=container.content_type)
            return key, upload_id

        spool = progress.spool = SpoolFile(directory=self._rules.spool_dir)
        parts = progress.parts = PartUploader(
            store=self._store,
            part_size=self._rules.part_size,
            window=self._rules.parts_in_flight,
            start=start_multipart,
        )
        async for chunk in chunks:
            validator.feed(chunk)
            spool.write(chunk)
            await parts.add(chunk)
            self._maybe_probe_early(validator, spool, progress)
        file_hash = validator.finish()
        spool.close()
        if progress.probe is not None:
            await progress.probe
        info = await self._media.validate(spool.path)
        uploaded = await parts.flush()
        await self._store.complete_multipart(parts.key, upload_id=parts.upload_id, parts=uploaded)
        progress.completed_key = parts.key
        container = validator.container
        assert container is not None
        stored = self._rows(
            request=request,
            video_id=video_id,
            key=parts.key,
            container=container,
            size=validator.received,
            file_hash=file_hash,
            info=info,
        )
        progress.record_attempted = True
        await self._repo.record_upload(video=stored.video, analysis=stored.analysis)
        progress.recorded = True
        await self._sessions.set_committed(session.session_id, validator.received)
        await self._sessions.transition(
            session.session_id,
            expected=SessionState.ACTIVE,
            new=SessionState.COMPLETED,
            video_id=video_id,
        )
        return StoredUpload(
            video=stored.video,
            analysis=stored.analysis,
            object_uri=self._store.object_uri(parts.key),
            spool_path=spool.path,
        )

    def _maybe_probe_early(
        self, validator: StreamValidator, spool: SpoolFile, progress: _Progress
    ) -> None:
        if progress.probe is None:
            ready = validator.header_complete or (
                validator.container in (Container.MKV, Container.WEBM, Container.AVI)
                and validator.received >= EARLY_PROBE_BYTES
            )
            if ready:
                progress.probe = asyncio.create_task(self._media.probe_header(spool.path))
        elif progress.probe.done() and progress.probe.exception() is not None:
            progress.probe.result()  # raises the refusal now, mid-stream

    def _rows(
        self,
        *,
        request: UploadInput,
        video_id: str,
        key: str,
        container: Container,
        size: int,
        file_hash: str,
        info: dict[str, Any],
    ) -> StoredUpload:
        now = self._clock()
        video = VideoRow(
            id=video_id,
            user_id=request.user_id,
            session_id=request.session_id,
            filename=display_filename(request.filename, fallback=f"upload.{container}"),
            file_size=size,
            file_hash=file_hash,
            format=container.value,
            codec=str(info["codec"]),
            duration_seconds=float(info["duration_seconds"]),
            width=int(info["width"]),
            height=int(info["height"]),
            fps=float(info["fps"]),
            bucket=self._store.bucket,
            s3_key=key,
            content_type=request.content_type or container.content_type,
            status="stored",
            client_metadata=request.metadata,
            created_at=now,
            uploaded_at=now,
        )
        analysis = AnalysisRow(
            id=self._new_id(),
            video_id=video_id,
            user_id=request.user_id,
            status="pending",
            model_name=request.model or self._rules.default_model,
            result=None,
            failure_reason="",
            failure_message="",
            attempts=0,
            estimated_seconds=0,
            created_at=now,
        )
        return StoredUpload(video=video, analysis=analysis, object_uri="", spool_path=Path())

    async def _cleanup(
        self, session: SessionRecord, progress: _Progress, exc: BaseException
    ) -> Cleanup:
        """Releases everything this stream created. Runs shielded from cancellation;
        each step is attempted even if an earlier one fails."""
        cleanup = Cleanup()
        if progress.probe is not None and not progress.probe.done():
            progress.probe.cancel()
        if progress.probe is not None:
            with contextlib.suppress(BaseException):
                await progress.probe
        parts = progress.parts
        try:
            if parts is not None:
                await parts.discard()
                if progress.completed_key and not progress.recorded:
                    await self._store.delete_object(progress.completed_key)
                    cleanup.s3_cleanup = True
                elif parts.started and not progress.completed_key:
                    await self._store.abort_multipart(parts.key, upload_id=parts.upload_id)
                    cleanup.s3_cleanup = True
        except VidscanError:
            log.exception("could not clean up object storage; the janitor will retry")
        if progress.quota_reserved and not progress.recorded:
            try:
                cleanup.quota_released = await self._repo.release_quota(
                    session_id=session.session_id
                )
            except VidscanError:
                log.exception("could not release quota; the janitor will retry")
        cleanup.database_cleanup = progress.record_attempted and not progress.recorded
        try:
            if isinstance(exc, InvalidUpload):
                # The content was refused: this session is spent.
                await self._sessions.transition(
                    session.session_id,
                    expected=SessionState.ACTIVE,
                    new=SessionState.CANCELLED,
                )
            else:
                # Cancelled or failed on our side: the client may try again.
                await self._sessions.set_committed(session.session_id, 0)
            cleanup.session_cleanup = True
        except VidscanError:
            log.exception("could not update session %s", session.session_id)
        return cleanup
