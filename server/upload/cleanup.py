"""What happens to an upload stream that does not finish: suspend or discard.

Refused content, a full server disk or a cancelled session *discard* the upload (abort the multipart
upload, delete the tail, give the quota unit back, cancel the session; an object
already assembled is deleted only when no video row points at it, and kept for the
janitor when the database cannot tell). Any other interruption -- a client gone, a
backing service down -- *suspends* it: parts in flight are awaited and the tail is
kept, so that the next stream resumes at the committed offset on any replica; a
sealed upload (every byte stored, see ``finish.py``) keeps everything as it is. A
stream that lost its session lock touches nothing: another stream may own it now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from server.errors import Cleanup, InvalidUpload, StorageFull, VidscanError
from server.media.messages import HeaderInfo
from server.records.port import UploadRecords
from server.sessions.port import SessionRecord, SessionState, SessionStore
from server.storage.port import ObjectStore
from server.upload.progress import UploadProgress, tail_key
from server.upload.spool import SpoolFile
from server.upload.validation import StreamValidator
from server.upload.writer import PartWriter

log = logging.getLogger(__name__)


@dataclass
class ActiveStream:
    """What one stream has set in motion, for finishing, suspending or discarding."""

    validator: StreamValidator
    writer: PartWriter
    spool: SpoolFile
    # The spool holds the whole file (False after a resume until it is downloaded).
    spool_complete: bool
    probe: asyncio.Task[HeaderInfo] | None = None
    probe_taken: asyncio.Event | None = None  # set once a worker runs the probe
    sealed: UploadProgress | None = None  # set once the seal is saved in the session
    completed_key: str = ""
    record_attempted: bool = False
    recorded: bool = False
    # Opened from the session's saved progress (an earlier stream's parts and tail).
    resumed: bool = False


async def finish_even_if_cancelled(work: Coroutine[Any, Any, Cleanup]) -> Cleanup:
    """Runs cleanup to the end even when the handler is cancelled again meanwhile:
    the stream lock must not be released before the session's state is settled."""
    task = asyncio.ensure_future(work)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    return task.result()


class UploadCleaner:
    def __init__(
        self, *, sessions: SessionStore, store: ObjectStore, repository: UploadRecords
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._repo = repository

    async def after_failure(
        self,
        session: SessionRecord,
        stream: ActiveStream,
        exc: BaseException,
        *,
        cancelled: bool,
        lock_lost: bool = False,
    ) -> Cleanup:
        """Refused content or a cancelled session discard everything; any other
        interruption suspends the upload so that the next stream resumes it. Runs
        shielded from cancellation."""
        if stream.probe is not None:
            stream.probe.cancel()
            with contextlib.suppress(BaseException):
                await stream.probe
        if lock_lost:  # another stream may be writing the session: leave it alone
            await stream.writer.discard()
            return Cleanup()
        if stream.recorded:  # the video stands; nothing to undo
            return Cleanup()
        # A full disk discards too: keeping the parts would only fill it further.
        if isinstance(exc, InvalidUpload | StorageFull) or cancelled:
            return await self.discard(session, stream, cancel_session=True)
        if stream.sealed is not None:
            log.info(
                "sealed upload on session %s kept for resumption (%s)",
                session.session_id,
                type(exc).__name__,
            )
            return Cleanup()
        try:
            kept = await stream.writer.suspend()
            log.info(
                "upload on session %s suspended (%s) at %s bytes",
                session.session_id,
                type(exc).__name__,
                kept.committed if kept else 0,
            )
        except VidscanError:
            log.exception("could not save the tail of session %s", session.session_id)
        return Cleanup()

    async def _has_row(self, session_id: str) -> bool | None:
        """Whether the session's video is recorded; None when the database cannot say."""
        try:
            return await self._repo.recorded_upload(session_id=session_id) is not None
        except VidscanError:
            log.exception("cannot tell whether session %s was recorded", session_id)
            return None

    async def discard(
        self, session: SessionRecord, stream: ActiveStream, *, cancel_session: bool
    ) -> Cleanup:
        cleanup = Cleanup()
        writer = stream.writer
        await writer.discard()
        assembled = bool(stream.sealed or stream.completed_key)
        keep_object = False
        if assembled:
            has_row = await self._has_row(session.session_id)
            if has_row:  # recorded after all (a lost acknowledgement): keep it
                return cleanup
            keep_object = has_row is None  # the janitor deletes it if no row appears
        try:
            if writer.whole and not keep_object:  # stored in one request, no parts
                await self._store.delete_object(writer.key)
                cleanup.s3_cleanup = True
            if writer.started and not keep_object:
                await self._store.abort_multipart(writer.key, upload_id=writer.upload_id)
                if assembled:
                    await self._store.delete_object(writer.key)
                cleanup.s3_cleanup = True
            if writer.started:
                await self._store.delete_object(tail_key(writer.key))
        except VidscanError:
            log.exception("could not clean up object storage; the janitor will retry")
        cleanup.quota_released = await self._release_quota(session.session_id)
        cleanup.database_cleanup = stream.record_attempted
        if cancel_session:
            try:
                await self._sessions.transition(
                    session.session_id, expected=SessionState.ACTIVE, new=SessionState.CANCELLED
                )
                cleanup.session_cleanup = True
            except VidscanError:
                log.exception("could not update session %s", session.session_id)
        return cleanup

    async def _release_quota(self, session_id: str) -> bool:
        """Safe whatever happened: a unit spent by a recorded video has no
        reservation left to release."""
        try:
            return await self._repo.release_quota(session_id=session_id)
        except VidscanError:
            log.exception("could not release quota; the janitor will retry")
            return False

    async def discard_saved(
        self, session: SessionRecord, progress: UploadProgress | None
    ) -> Cleanup:
        """Discards what earlier streams of a session stored (cancel, early dedup)."""
        cleanup = Cleanup()
        if progress is not None:
            if progress.sealed:
                has_row = await self._has_row(session.session_id)
                if has_row is not False:  # recorded, or unknown: keep the object
                    cleanup.quota_released = await self._release_quota(session.session_id)
                    return cleanup
            try:
                if not progress.whole:
                    await self._store.abort_multipart(progress.key, upload_id=progress.upload_id)
                if progress.sealed or progress.whole:
                    await self._store.delete_object(progress.key)
                await self._store.delete_object(tail_key(progress.key))
                cleanup.s3_cleanup = True
            except VidscanError:
                log.exception("could not clean up object storage; the janitor will retry")
        cleanup.quota_released = await self._release_quota(session.session_id)
        return cleanup
