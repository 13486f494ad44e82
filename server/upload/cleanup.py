"""What happens to an upload stream that does not finish: suspend or discard.

Refused content, a cancelled session, or a failure after the object was assembled
*discard* the upload (abort the multipart upload or delete the object, delete the
tail, give the quota unit back, cancel the session). Any other interruption
*suspends* it: parts in flight are awaited and the tail is kept, so that the next
stream resumes at the committed offset on any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from server.db.repository import Repository
from server.errors import Cleanup, InvalidUpload, VidscanError
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
    spool_complete: bool  # False after a resume: the first bytes are on another host
    probe: asyncio.Task[dict[str, Any]] | None = None
    completed_key: str = ""
    record_attempted: bool = False
    recorded: bool = False


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
        self, *, sessions: SessionStore, store: ObjectStore, repository: Repository
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._repo = repository

    async def after_failure(
        self, session: SessionRecord, stream: ActiveStream, exc: BaseException, *, cancelled: bool
    ) -> Cleanup:
        """Refused content, a cancelled session or a failure after the object was
        assembled discard everything; any other interruption suspends the upload so
        that the next stream resumes it. Runs shielded from cancellation."""
        if stream.probe is not None:
            stream.probe.cancel()
            with contextlib.suppress(BaseException):
                await stream.probe
        refused = isinstance(exc, InvalidUpload)
        if refused or cancelled or stream.completed_key:
            return await self.discard(session, stream, cancel_session=True)
        cleanup = Cleanup(session_cleanup=True)
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
        return cleanup

    async def discard(
        self, session: SessionRecord, stream: ActiveStream, *, cancel_session: bool
    ) -> Cleanup:
        cleanup = Cleanup()
        writer = stream.writer
        await writer.discard()
        try:
            if stream.completed_key and not stream.recorded:
                await self._store.delete_object(stream.completed_key)
                cleanup.s3_cleanup = True
            elif writer.started and not stream.completed_key:
                await self._store.abort_multipart(writer.key, upload_id=writer.upload_id)
                cleanup.s3_cleanup = True
            if writer.started:
                await self._store.delete_object(tail_key(writer.key))
        except VidscanError:
            log.exception("could not clean up object storage; the janitor will retry")
        if not stream.recorded:
            try:
                cleanup.quota_released = await self._repo.release_quota(
                    session_id=session.session_id
                )
            except VidscanError:
                log.exception("could not release quota; the janitor will retry")
        cleanup.database_cleanup = stream.record_attempted and not stream.recorded
        if cancel_session:
            try:
                await self._sessions.transition(
                    session.session_id, expected=SessionState.ACTIVE, new=SessionState.CANCELLED
                )
                cleanup.session_cleanup = True
            except VidscanError:
                log.exception("could not update session %s", session.session_id)
        return cleanup

    async def discard_saved(
        self, session: SessionRecord, progress: UploadProgress | None
    ) -> Cleanup:
        """Discards what earlier streams of a session stored (cancel, early dedup)."""
        cleanup = Cleanup()
        if progress is not None:
            try:
                await self._store.abort_multipart(progress.key, upload_id=progress.upload_id)
                await self._store.delete_object(tail_key(progress.key))
                cleanup.s3_cleanup = True
            except VidscanError:
                log.exception("could not clean up object storage; the janitor will retry")
        try:
            cleanup.quota_released = await self._repo.release_quota(session_id=session.session_id)
        except VidscanError:
            log.exception("could not release quota; the janitor will retry")
        return cleanup
