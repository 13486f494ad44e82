"""The finish line of an upload: a sequence in which every crash point is recoverable.

Once every byte is in the multipart upload's parts, the pipeline *seals* the session
(its saved progress records the final size, SHA-256 and parts, and the media verdict
when the whole file was validated locally). From then on the upload is finished by
any stream on any replica that resumes at the committed offset with finish_write
and no bytes, however often a step fails:

    sealed -> complete the multipart upload (idempotent: an object already assembled
              from these parts counts as done; an object stored whole, a file smaller
              than a part, is only checked for its size on a resume)
           -> resumed here? download it (SHA-256 checked against the seal) and
              validate it, saving the verdict in the seal
           -> record video + analysis and spend the quota unit in one transaction
              (idempotent per session: a lost COMMIT acknowledgement is resolved by
              running it again, which finds the row)
           -> complete the session (one atomic change in the session store)

A failing backing service leaves the session sealed and resumable; nothing is
deleted for it. Only refused content or a cancelled session discards the upload,
and then the object only when no row points at it (``cleanup.py``). Each step has a
fault point (``server/faults.py``) for the crash-recovery tests.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from server.clock import Clock
from server.errors import Internal, Reason, Unavailable
from server.faults import FaultPoints, FinishStep
from server.media.isolation import MediaInspector
from server.media.sniff import Container
from server.records.model import AnalysisRecord, VideoRecord
from server.records.port import VideoRepository
from server.sessions.port import SessionRecord, SessionStore
from server.storage.port import ObjectStore
from server.upload.cleanup import ActiveStream
from server.upload.new_records import new_video, pending_analysis
from server.upload.progress import UploadProgress
from server.upload.spool import SpoolFile

log = logging.getLogger(__name__)


class UploadFinisher:
    def __init__(
        self,
        *,
        sessions: SessionStore,
        store: ObjectStore,
        repository: VideoRepository,
        media: MediaInspector,
        faults: FaultPoints,
        clock: Clock,
        new_id: Callable[[], str],
        download_step: int,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._repo = repository
        self._media = media
        self._faults = faults
        self._clock = clock
        self._new_id = new_id
        self._step = download_step

    async def finish(
        self,
        *,
        session: SessionRecord,
        stream: ActiveStream,
        resumed: bool,
        filename: str,
        content_type: str,
        metadata: dict[str, Any],
        model: str,
        callback_url: str = "",
        deadline: float | None = None,
    ) -> tuple[VideoRecord, AnalysisRecord]:
        """Takes a sealed upload to a recorded video and a completed session.
        ``resumed``: the session was sealed by an earlier stream, which may have got
        as far as recording its video (a stream that sealed it just now cannot have).
        ``deadline``: the caller's (``UploadInput.deadline``), for the media pool.
        ``callback_url``: the checked webhook, kept with the analysis ("" for none)."""
        sealed = stream.sealed
        assert sealed is not None, "only a sealed upload can be finished"
        recorded = (
            await self._repo.recorded_upload(session_id=session.session_id) if resumed else None
        )
        if recorded is None:
            await self._assemble(sealed, resumed=resumed)
            stream.completed_key = sealed.key
            await self._faults.reached(FinishStep.ASSEMBLED)
            if sealed.info is None:  # the first bytes were received on another host
                await self._faults.reached(FinishStep.BEFORE_DOWNLOAD)
                await self._download(sealed, stream.spool)
                stream.spool_complete = True
                sealed = sealed.validated(
                    await self._media.validate(stream.spool.path, deadline=deadline)
                )
                await self._sessions.save_progress(
                    session.session_id, committed_bytes=sealed.committed, progress=sealed.to_json()
                )
                stream.sealed = sealed
            assert sealed.info is not None
            now = self._clock()
            video = new_video(
                video_id=sealed.video_id,
                user_id=session.user_id,
                session_id=session.session_id,
                filename=filename,
                content_type=content_type,
                metadata=metadata,
                container=Container(sealed.container),
                size=sealed.committed,
                file_hash=sealed.file_hash,
                info=sealed.info,
                bucket=self._store.bucket,
                key=sealed.key,
                now=now,
            )
            await self._faults.reached(FinishStep.BEFORE_RECORD)
            stream.record_attempted = True
            recorded = await self._record(video, model=model, callback_url=callback_url, now=now)
            await self._faults.reached(FinishStep.RECORDED)
        stream.recorded = True
        video, analysis = recorded
        if not await self._sessions.complete(
            session.session_id, video_id=video.id, committed_bytes=video.file_size
        ):
            log.info(
                "session %s was no longer active when video %s was recorded",
                session.session_id,
                video.id,
            )
        await self._faults.reached(FinishStep.COMPLETED)
        return video, analysis

    async def _record(
        self, video: VideoRecord, *, model: str, callback_url: str, now: datetime
    ) -> tuple[VideoRecord, AnalysisRecord]:
        analysis = pending_analysis(
            analysis_id=self._new_id(),
            video_id=video.id,
            user_id=video.user_id,
            model=model,
            now=now,
            callback_url=callback_url,
        )
        try:
            return await self._repo.record_upload(video=video, analysis=analysis)
        except Unavailable:
            # The connection broke: before the COMMIT, or after it with the
            # acknowledgement lost. Running it once more tells which (idempotent).
            log.warning("recording session %s failed; trying once more", video.session_id)
            return await self._repo.record_upload(video=video, analysis=analysis)

    async def _assemble(self, sealed: UploadProgress, *, resumed: bool) -> None:
        """Completes the multipart upload. An object stored whole needs nothing, but a
        resumed one is checked: its size must be the sealed size."""
        if not sealed.whole:
            await self._store.complete_multipart(
                sealed.key, upload_id=sealed.upload_id, parts=list(sealed.parts)
            )
            return
        if resumed:
            size = await self._store.object_size(sealed.key)
            if size != sealed.committed:
                raise Internal(
                    Reason.STORAGE_ERROR,
                    f"the stored object has {size} bytes; {sealed.committed} were sealed",
                )

    async def _download(self, sealed: UploadProgress, spool: SpoolFile) -> None:
        """Brings the assembled object to the local spool in bounded pieces, checking
        that it holds exactly the bytes that were sealed."""
        size = await self._store.object_size(sealed.key)
        if size != sealed.committed:
            raise Internal(
                Reason.STORAGE_ERROR,
                f"the assembled object has {size} bytes; {sealed.committed} were sealed",
            )
        digest = hashlib.sha256()
        spool.reopen()
        for start in range(0, size, self._step):
            piece = await self._store.read_range(
                sealed.key, start=start, length=min(self._step, size - start)
            )
            digest.update(piece)
            spool.write(piece)
        spool.close()
        if digest.hexdigest() != sealed.file_hash:
            raise Internal(
                Reason.STORAGE_ERROR, "the assembled object differs from the sealed bytes"
            )
