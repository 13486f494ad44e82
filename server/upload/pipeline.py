"""The UploadVideo use case, start to end: resumable, deduplicated, and clean on failure.

Order of work for one stream:
  session check -> stream lock -> offset == committed -> duplicate of a declared hash?
  -> quota reservation (once per session) ->
  for each chunk: limits + sniff + MP4 box walk (StreamValidator), spool,
                  S3 part + SHA-256 (PartWriter; progress saved after every part),
                  early PyAV header probe once the header is in ->
  end: declared size/hash, duplicate of the final hash?, full PyAV validation,
       last part -> seal (finish.py: complete multipart -> one DB transaction for
       video + analysis rows + quota spent -> session COMPLETED, each step
       recoverable).

A stream that stops without finishing (client gone, no finish_write, a backing
service down) is *suspended*: parts in flight are awaited, the tail is kept, and
the next stream continues at the committed offset, on any replica; a sealed one is
finished by a stream that sends finish_write alone. Header fields that arrive on the
last message (``LateFields``, the proto's UploadTrailer) are applied when the video is
recorded, which is the first point that reads them. A refused file or a cancelled
session is *discarded*: the multipart upload is aborted, objects deleted, the quota
unit given back. No row is written before the final transaction, so none can be
left half.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from server.clock import Clock
from server.errors import (
    Cancelled,
    InvalidUpload,
    NotFound,
    OffsetMismatch,
    Reason,
    VidscanError,
)
from server.faults import FaultPoints, FinishStep, NoFaults
from server.media.isolation import MediaInspector
from server.media.sniff import Container
from server.records.model import AnalysisRecord, VideoRecord
from server.records.port import UploadRecords
from server.sessions.port import SessionLocker, SessionRecord, SessionState, SessionStore
from server.storage.port import ObjectStore
from server.upload.budget import PartBudget
from server.upload.cleanup import ActiveStream, UploadCleaner, finish_even_if_cancelled
from server.upload.finish import UploadFinisher
from server.upload.naming import object_key
from server.upload.progress import UploadProgress, tail_key
from server.upload.spool import SpoolFile
from server.upload.stream_lock import StreamWatch, hold_stream_lock, lock_lost_error
from server.upload.validation import StreamValidator
from server.upload.writer import ObjectName, PartWriter

log = logging.getLogger(__name__)

# For containers whose header sits at the front (MKV, WebM, AVI) the early probe
# runs once this much has arrived; MP4/MOV are probed when `moov` is complete, unless
# the samples (`mdat`) came before it: then the whole file is there to validate.
EARLY_PROBE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class UploadRules:
    max_bytes: int
    part_size: int
    parts_in_flight: int
    spool_dir: Path
    default_model: str
    # The stream lock expires this long after its holder stops refreshing it (a
    # process that died), so another stream may take the session over.
    lock_seconds: float = 30.0


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
    # The checked webhook of the final analysis (server/webhooks/policy.py); "" for none.
    callback_url: str = ""
    # time.monotonic() instant the client stops waiting (its RPC deadline), if any:
    # media jobs wait for a free worker only until shortly before it.
    deadline: float | None = None

    def completed_by(self, late: LateFields) -> UploadInput:
        """The input with the late fields applied: each one given replaces the header's."""
        return replace(
            self,
            filename=self.filename if late.filename is None else late.filename,
            content_type=self.content_type if late.content_type is None else late.content_type,
            metadata=self.metadata if late.metadata is None else late.metadata,
        )


@dataclass(frozen=True)
class LateFields:
    """Header fields sent on the stream's last message (UploadTrailer), already
    checked. None: not sent, the header's value stands. Only fields read when the
    video is recorded can arrive this late."""

    filename: str | None = None
    content_type: str | None = None
    metadata: dict[str, Any] | None = None


NO_LATE_FIELDS = LateFields()


@dataclass(frozen=True)
class StoredUpload:
    video: VideoRecord
    analysis: AnalysisRecord
    object_uri: str
    spool_path: Path | None
    deduplicated: bool = False


def session_not_found(session_id: str) -> NotFound:
    return NotFound(
        Reason.SESSION_NOT_FOUND,
        "upload session not found, expired, cancelled or already completed",
        metadata={"session_id": session_id},
    )


class UploadPipeline:
    def __init__(
        self,
        *,
        sessions: SessionStore,
        locker: SessionLocker,
        store: ObjectStore,
        repository: UploadRecords,
        media: MediaInspector,
        rules: UploadRules,
        clock: Clock,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        faults: FaultPoints | None = None,
        budget: PartBudget | None = None,
    ) -> None:
        """``budget``: the process-wide limit on bytes held in parts (None: only
        each upload's own window bounds it)."""
        self._sessions = sessions
        self._budget = budget
        self._locker = locker
        self._store = store
        self._repo = repository
        self._media = media
        self._rules = rules
        self._clock = clock
        self._new_id = new_id
        self._faults = faults or NoFaults()
        self._cleaner = UploadCleaner(sessions=sessions, store=store, repository=repository)
        self._finisher = UploadFinisher(
            sessions=sessions,
            store=store,
            repository=repository,
            media=media,
            faults=self._faults,
            clock=clock,
            new_id=new_id,
            download_step=rules.part_size,
        )

    async def run(
        self,
        request: UploadInput,
        chunks: AsyncIterator[bytes],
        *,
        late: Callable[[], LateFields] = lambda: NO_LATE_FIELDS,
        known: SessionRecord | None = None,
    ) -> StoredUpload:
        """``late``: the fields of the last message, asked for once ``chunks`` ended.
        ``known``: the session as the caller just read it (saves a read; the session
        is read again under the stream lock either way)."""
        session = known if known is not None else await self._sessions.get(request.session_id)
        now = self._clock()
        if (
            session is None
            or session.user_id != request.user_id
            or session.effective_state(now) is not SessionState.ACTIVE
        ):
            raise session_not_found(request.session_id)
        async with hold_stream_lock(
            self._sessions,
            self._locker,
            session.session_id,
            lock_seconds=self._rules.lock_seconds,
        ) as watch:
            # Re-read under the lock: a stream that just ended may have saved progress.
            current = await self._sessions.get(session.session_id)
            if current is None or current.effective_state(now) is not SessionState.ACTIVE:
                raise session_not_found(request.session_id)
            return await self._run_locked(request, current, chunks, watch, late)

    async def _run_locked(
        self,
        request: UploadInput,
        session: SessionRecord,
        chunks: AsyncIterator[bytes],
        watch: StreamWatch,
        late: Callable[[], LateFields],
    ) -> StoredUpload:
        progress = UploadProgress.from_json(session.progress)
        committed = progress.committed if progress else 0
        if request.write_offset != committed:
            raise OffsetMismatch(
                Reason.INVALID_OFFSET,
                f"write_offset {request.write_offset} does not match the committed "
                f"offset {committed}",
                metadata={"expected_offset": str(committed)},
            )
        # A sealed session is only finished: it may have recorded its own video already.
        sealed = progress is not None and progress.sealed
        if request.declared_sha256 and request.declared_size is not None and not sealed:
            existing = await self._repo.find_video(
                user_id=request.user_id,
                file_hash=request.declared_sha256,
                size=request.declared_size,
                other_than_session=session.session_id,
            )
            if existing is not None:  # ByteStream-style early return: no bytes needed
                await self._cleaner.discard_saved(session, progress)
                return await self._deduplicated(session, existing)
        max_bytes = min(self._rules.max_bytes, session.max_bytes)
        if request.declared_size is not None and request.declared_size > max_bytes:
            raise InvalidUpload(
                Reason.FILE_TOO_LARGE,
                f"declared_size exceeds the limit of {max_bytes} bytes",
                metadata={"max_bytes": str(max_bytes)},
            )
        await self._repo.reserve_quota(user_id=request.user_id, session_id=session.session_id)
        stream = await self._open_stream(request, session, progress)
        try:
            return await self._receive(request, session, chunks, stream, late)
        except BaseException as exc:
            cleanup = await finish_even_if_cancelled(
                self._cleaner.after_failure(
                    session, stream, exc, cancelled=watch.cancelled, lock_lost=watch.lock_lost
                )
            )
            if isinstance(exc, asyncio.CancelledError) and (watch.cancelled or watch.lock_lost):
                if watch.task is not None:
                    watch.task.uncancel()
                interrupted: VidscanError = (
                    lock_lost_error(session.session_id)
                    if watch.lock_lost
                    else Cancelled(
                        Reason.UPLOAD_CANCELLED,
                        "the upload session was cancelled while the upload was in flight",
                        metadata={"session_id": session.session_id},
                    )
                )
                interrupted.cleanup = cleanup
                raise interrupted from None
            if isinstance(exc, VidscanError):
                exc.cleanup = cleanup
            raise
        finally:
            stream.writer.release_reservation()
            if not (stream.recorded and stream.spool_complete):
                stream.spool.remove()  # else the analysis stage reads it, then removes it

    async def _open_stream(
        self, request: UploadInput, session: SessionRecord, progress: UploadProgress | None
    ) -> ActiveStream:
        max_bytes = min(self._rules.max_bytes, session.max_bytes)

        async def save(update: UploadProgress) -> None:
            await self._save_progress(session, update)

        if progress is None:
            validator = StreamValidator(
                max_bytes=max_bytes,
                declared_size=request.declared_size,
                declared_sha256=request.declared_sha256,
            )

            def name() -> ObjectName:
                container = validator.container
                if container is None:
                    raise LookupError("the container is not sniffed yet")
                key = object_key(
                    user_id=request.user_id, video_id=writer.video_id, extension=container
                )
                return ObjectName(
                    key=key, container=container.value, content_type=container.content_type
                )

            async def start() -> tuple[str, str, str]:
                named = name()
                upload_id = await self._store.create_multipart(
                    named.key, content_type=named.content_type
                )
                return named.key, upload_id, named.container

            writer = PartWriter(
                store=self._store,
                part_size=self._rules.part_size,
                window=self._rules.parts_in_flight,
                video_id=self._new_id(),
                start=start,
                on_progress=save,
                budget=self._budget,
                expected_size=request.declared_size,
                name=name,
            )
            spool = SpoolFile(directory=self._rules.spool_dir)
            return ActiveStream(
                validator=validator, writer=writer, spool=spool, spool_complete=True
            )

        tail = b""
        if progress.tail_size:
            tail = await self._store.read_range(
                progress.tail_key, start=0, length=progress.tail_size
            )

        spool = SpoolFile(directory=self._rules.spool_dir)

        async def never() -> tuple[str, str, str]:
            raise AssertionError("a resumed upload already has its multipart upload")

        return ActiveStream(
            validator=StreamValidator.resumed(
                max_bytes=max_bytes,
                declared_size=request.declared_size,
                declared_sha256=request.declared_sha256,
                received=progress.committed,
                container=Container(progress.container),
            ),
            writer=PartWriter(
                store=self._store,
                part_size=self._rules.part_size,
                window=self._rules.parts_in_flight,
                video_id=progress.video_id,
                start=never,
                on_progress=save,
                resume=progress,
                tail=tail,
                budget=self._budget,
                expected_size=request.declared_size,
            ),
            spool=spool,
            spool_complete=False,
            sealed=progress if progress.sealed else None,
            resumed=True,
        )

    async def _save_progress(self, session: SessionRecord, update: UploadProgress) -> None:
        saved = await self._sessions.save_progress(
            session.session_id, committed_bytes=update.committed, progress=update.to_json()
        )
        log.debug("session %s committed %d bytes (%s)", session.session_id, update.committed, saved)

    async def _receive(
        self,
        request: UploadInput,
        session: SessionRecord,
        chunks: AsyncIterator[bytes],
        stream: ActiveStream,
        late: Callable[[], LateFields],
    ) -> StoredUpload:
        validator, writer, spool = stream.validator, stream.writer, stream.spool
        if stream.sealed is not None:  # every byte is stored: only finish_write is due
            async for chunk in chunks:
                if chunk:
                    raise OffsetMismatch(
                        Reason.INVALID_OFFSET,
                        f"the upload already holds all its {validator.received} bytes; "
                        "resume with finish_write and no data",
                        metadata={"expected_offset": str(validator.received)},
                    )
            validator.finish(stream.sealed.file_hash)
            return await self._finish(request.completed_by(late()), session, stream, resumed=True)
        async for chunk in chunks:
            validator.feed(chunk)
            await spool.append(chunk)
            await writer.add(chunk)
            if stream.spool_complete:
                await self._maybe_probe_early(stream, deadline=request.deadline)
        file_hash = await writer.digest()
        validator.finish(file_hash)
        await spool.drain()
        spool.close()
        await self._settle_probe(stream)
        existing = await self._repo.find_video(
            user_id=request.user_id,
            file_hash=file_hash,
            size=validator.received,
            other_than_session=session.session_id,
        )
        if existing is not None:  # the same bytes again: keep the first copy only
            await self._cleaner.discard(session, stream, cancel_session=False)
            return await self._deduplicated(session, existing)
        # Validated here when this host has every byte; a resumed upload is validated
        # once it is assembled (finish.py), before any row is written.
        info = (
            await self._media.validate(spool.path, deadline=request.deadline)
            if stream.spool_complete
            else None
        )
        await writer.flush()
        sealed = writer.committed_progress().seal(file_hash=file_hash, info=info)
        await self._save_progress(session, sealed)
        stream.sealed = sealed
        await self._faults.reached(FinishStep.SEALED)
        return await self._finish(request.completed_by(late()), session, stream, resumed=False)

    async def _finish(
        self, request: UploadInput, session: SessionRecord, stream: ActiveStream, *, resumed: bool
    ) -> StoredUpload:
        video, analysis = await self._finisher.finish(
            session=session,
            stream=stream,
            resumed=resumed,
            filename=request.filename,
            content_type=request.content_type,
            metadata=request.metadata,
            model=request.model or self._rules.default_model,
            callback_url=request.callback_url,
            deadline=request.deadline,
        )
        if stream.resumed:
            # Only a stream that continued saved progress can find a tail under this
            # key (a fresh stream names a new object). A leftover is the janitor's.
            with contextlib.suppress(VidscanError):
                await self._store.delete_object(tail_key(video.s3_key))
        return StoredUpload(
            video=video,
            analysis=analysis,
            object_uri=self._store.object_uri(video.s3_key),
            spool_path=stream.spool.path if stream.spool_complete else None,
        )

    async def _deduplicated(self, session: SessionRecord, existing: VideoRecord) -> StoredUpload:
        """Answers with the user's existing copy: nothing stored, no quota spent."""
        analysis = await self._repo.latest_analysis(video_id=existing.id)
        assert analysis is not None, "every video has an analysis"
        with contextlib.suppress(VidscanError):
            await self._repo.release_quota(session_id=session.session_id)
        await self._sessions.complete(
            session.session_id, video_id=existing.id, committed_bytes=existing.file_size
        )
        return StoredUpload(
            video=existing,
            analysis=analysis,
            object_uri=self._store.object_uri(existing.s3_key),
            spool_path=None,
            deduplicated=True,
        )

    async def _maybe_probe_early(self, stream: ActiveStream, *, deadline: float | None) -> None:
        validator = stream.validator
        if stream.probe is None:
            # A header that came last (`mdat` before `moov`, as most encoders write
            # MP4) is probed by the whole-file validation that follows at once.
            ready = (validator.header_complete and not validator.media_before_header) or (
                validator.container in (Container.MKV, Container.WEBM, Container.AVI)
                and validator.received >= EARLY_PROBE_BYTES
            )
            if ready:
                await stream.spool.drain()  # the worker must see every byte so far
                stream.probe_taken = asyncio.Event()
                stream.probe = asyncio.create_task(
                    self._media.probe_header(
                        stream.spool.path, deadline=deadline, taken=stream.probe_taken
                    )
                )
        elif stream.probe.done() and stream.probe.exception() is not None:
            stream.probe.result()  # raises the refusal now, mid-stream

    @staticmethod
    async def _settle_probe(stream: ActiveStream) -> None:
        """At the end of the bytes: the early probe's refusal is raised; a probe still
        waiting for a worker is withdrawn, since validating the whole file checks
        everything it would (a small file sent at once never needs two jobs)."""
        probe = stream.probe
        if probe is None:
            return
        taken = stream.probe_taken
        if not probe.done() and taken is not None and not taken.is_set():
            probe.cancel()
            await asyncio.wait({probe})  # our own cancellation still propagates
            if probe.cancelled():
                stream.probe = None
                return
        await probe  # interrupted here, the cleanup still waits for the probe
        stream.probe = None

    async def cancel(self, session: SessionRecord) -> bool:
        """CancelUploadSession: marks the session cancelled; a stream in flight on it
        notices and cleans up itself, otherwise what earlier streams stored is
        discarded here. True if the session was active."""
        changed = await self._sessions.transition(
            session.session_id, expected=SessionState.ACTIVE, new=SessionState.CANCELLED
        )
        owner = self._new_id()
        if await self._locker.acquire_lock(
            session.session_id, owner=owner, ttl_seconds=self._rules.lock_seconds
        ):
            try:
                current = await self._sessions.get(session.session_id)
                if current is not None and current.state is SessionState.CANCELLED:
                    await self._cleaner.discard_saved(
                        current, UploadProgress.from_json(current.progress)
                    )
            finally:
                await self._locker.release_lock(session.session_id, owner=owner)
        return changed
