"""UploadService: sessions and the UploadVideo stream."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc
from google.protobuf import struct_pb2
from vidscan.v1 import upload_pb2, upload_pb2_grpc

from server import logs, metrics
from server.analysis.stage import AnalysisStage
from server.api import messages
from server.api.status import rpc_errors
from server.auth import Authenticator
from server.clock import Clock
from server.errors import (
    Cancelled,
    IncompleteUpload,
    Internal,
    InvalidUpload,
    NotCompleted,
    Reason,
    StorageFull,
    StreamStalled,
    Unavailable,
    VidscanError,
    invalid_field,
    reason_name,
)
from server.lifecycle import Admission
from server.limits.policy import UserLimits
from server.records.port import VideoRepository
from server.sessions.port import SessionRecord, SessionState, SessionStore, UploadIntent
from server.storage.links import PlaybackLinks
from server.upload.open_session import SessionOpener
from server.upload.pipeline import (
    NO_LATE_FIELDS,
    LateFields,
    UploadInput,
    UploadPipeline,
    session_not_found,
)
from server.upload.stall import StallPolicy, watched
from server.webhooks.policy import CallbackPolicy

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]
_HEX = set("0123456789abcdef")
MAX_FILENAME_CHARS = 1024
MAX_CONTENT_TYPE_CHARS = 255


class UploadServicer(upload_pb2_grpc.UploadServiceServicer):
    def __init__(
        self,
        *,
        auth: Authenticator,
        sessions: SessionStore,
        videos: VideoRepository,
        opener: SessionOpener,
        pipeline: UploadPipeline,
        analysis: AnalysisStage,
        admission: Admission,
        limits: UserLimits,
        links: PlaybackLinks,
        stall: StallPolicy,
        clock: Clock,
        pressure: Callable[[], bool] = lambda: False,
        max_metadata_bytes: int,
        callbacks: CallbackPolicy,
    ) -> None:
        self._auth = auth
        self._sessions = sessions
        self._videos = videos
        self._opener = opener
        self._pipeline = pipeline
        self._analysis = analysis
        self._admission = admission
        self._limits = limits
        self._links = links
        self._stall = stall
        self._pressure = pressure
        self._clock = clock
        self._max_metadata = max_metadata_bytes
        self._callbacks = callbacks

    async def _owned(self, session_id: str, user_id: str) -> SessionRecord:
        record = await self._sessions.get(session_id) if session_id else None
        if record is None or record.user_id != user_id:
            raise session_not_found(session_id)
        return record

    @rpc_errors
    async def CreateUploadSession(
        self, request: upload_pb2.CreateUploadSessionRequest, context: Context
    ) -> upload_pb2.CreateUploadSessionResponse:
        user_id = await self._auth.user_from_metadata(context.invocation_metadata())
        await self._limits.check_rate(user_id, "create")
        self._admission.check_open()
        intent = self._parse_intent(request.intent) if request.HasField("intent") else None
        record = await self._opener.open(
            user_id=user_id,
            expected_size=request.expected_size if request.HasField("expected_size") else None,
            intent=intent,
        )
        return upload_pb2.CreateUploadSessionResponse(
            session=messages.upload_session(record, record.created_at)
        )

    @rpc_errors
    async def GetUploadResult(
        self, request: upload_pb2.GetUploadResultRequest, context: Context
    ) -> upload_pb2.GetUploadResultResponse:
        user_id = await self._auth.user_from_metadata(context.invocation_metadata())
        await self._limits.check_rate(user_id, "unary")
        record = await self._owned(request.session_id, user_id)
        if record.state is not SessionState.COMPLETED or not record.video_id:
            state = record.effective_state(self._clock())
            raise NotCompleted(
                Reason.UPLOAD_NOT_COMPLETED,
                f"the session is {state.value}: no video was recorded through it",
                metadata={"session_state": state.value},
            )
        video = await self._videos.get_video(user_id=user_id, video_id=record.video_id)
        analysis = await self._videos.latest_analysis(video_id=record.video_id) if video else None
        if video is None or analysis is None:  # the video was deleted since
            raise session_not_found(request.session_id)
        return upload_pb2.GetUploadResultResponse(
            result=messages.upload_result(
                video_row=video,
                analysis_row=analysis,
                uri=self._links.playback_url(video),
                processing_time=None,
            )
        )

    @rpc_errors
    async def GetUploadSession(
        self, request: upload_pb2.GetUploadSessionRequest, context: Context
    ) -> upload_pb2.GetUploadSessionResponse:
        user_id = await self._auth.user_from_metadata(context.invocation_metadata())
        await self._limits.check_rate(user_id, "unary")
        record = await self._owned(request.session_id, user_id)
        return messages.session_status(record, self._clock())

    @rpc_errors
    async def CancelUploadSession(
        self, request: upload_pb2.CancelUploadSessionRequest, context: Context
    ) -> upload_pb2.CancelUploadSessionResponse:
        user_id = await self._auth.user_from_metadata(context.invocation_metadata())
        await self._limits.check_rate(user_id, "unary")
        record = await self._owned(request.session_id, user_id)
        if record.state is SessionState.COMPLETED:
            raise session_not_found(request.session_id)
        changed = await self._pipeline.cancel(record)
        await self._limits.release_session(user_id, record.session_id)
        return upload_pb2.CancelUploadSessionResponse(
            session_id=record.session_id, cleanup_performed=changed
        )

    @rpc_errors
    async def UploadVideo(
        self, request_iterator: AsyncIterator[upload_pb2.UploadVideoRequest], context: Context
    ) -> upload_pb2.UploadVideoResponse:
        started = time.monotonic()
        try:
            response = await self._upload(request_iterator, context)
        except VidscanError as error:
            metrics.UPLOADS.labels(upload_outcome(error), reason_name(error.reason)).inc()
            raise
        except Exception:
            metrics.UPLOADS.labels("failed", "INTERNAL").inc()
            raise
        result = response.result
        elapsed = time.monotonic() - started
        metrics.UPLOADS.labels("deduplicated" if result.deduplicated else "stored", "").inc()
        metrics.UPLOAD_SECONDS.observe(elapsed)
        if not result.deduplicated and elapsed > 0:
            metrics.UPLOAD_THROUGHPUT.observe(result.file_size / elapsed)
        return response

    async def _upload(
        self, request_iterator: AsyncIterator[upload_pb2.UploadVideoRequest], context: Context
    ) -> upload_pb2.UploadVideoResponse:
        user_id = await self._auth.user_from_metadata(context.invocation_metadata())
        with self._admission.admit():
            async with self._limits.stream(user_id):
                return await self._stream(user_id, request_iterator, context)

    async def _stream(
        self,
        user_id: str,
        request_iterator: AsyncIterator[upload_pb2.UploadVideoRequest],
        context: Context,
    ) -> upload_pb2.UploadVideoResponse:
        requests = watched(request_iterator, self._stall, _chunk_size, pressure=self._pressure)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidUpload(
                Reason.MISSING_HEADER, "the first message of UploadVideo must carry `header`"
            )
        header = first.header
        if not header.session_id:
            raise invalid_field("header.session_id", "required")
        # The session's intent fills the header fields this stream left empty (a tus
        # client states them once, at creation). An unknown or foreign session is
        # the pipeline's to refuse.
        session = await self._sessions.get(header.session_id)
        if session is not None and session.user_id == user_id and session.intent is not None:
            header = _with_intent(header, session.intent)
        upload = self._parse_header(header, user_id, _deadline(context))
        logs.bind(session_id=upload.session_id)
        if upload.write_offset > 0:
            metrics.UPLOADS_RESUMED.inc()
        trailer = _Trailer()
        chunks = _chunks(requests, context, trailer, self._parse_trailer)
        try:
            stored = await self._pipeline.run(upload, chunks, late=trailer.get, known=session)
        except VidscanError as error:
            if not isinstance(error, Unavailable | StreamStalled | IncompleteUpload):
                await self._release_if_ended(user_id, upload.session_id)
            raise
        last_byte = time.monotonic()
        await self._limits.release_session(user_id, upload.session_id)
        logs.bind(video_id=stored.video.id, analysis_id=stored.analysis.id)
        # The inline analysis wait never outlives the client's deadline: a verdict
        # the client has stopped waiting for is wasted (None: no deadline).
        analysis_row = await self._analysis.after_upload(stored, time_left=context.time_remaining())
        return upload_pb2.UploadVideoResponse(
            result=messages.upload_result(
                video_row=stored.video,
                analysis_row=analysis_row,
                uri=self._links.playback_url(stored.video),
                processing_time=round(time.monotonic() - last_byte, 3),
                deduplicated=stored.deduplicated,
            )
        )

    async def _release_if_ended(self, user_id: str, session_id: str) -> None:
        """A refused file cancels its session: its slot is free again."""
        try:
            record = await self._sessions.get(session_id)
            if record is not None and record.state is not SessionState.ACTIVE:
                await self._limits.release_session(user_id, session_id)
        except VidscanError:  # the slot expires with the session anyway
            log.warning("could not free the session slot of %s", session_id, exc_info=True)

    def _parse_header(
        self, header: upload_pb2.UploadHeader, user_id: str, deadline: float | None
    ) -> UploadInput:
        if not header.session_id:
            raise invalid_field("header.session_id", "required")
        if header.write_offset < 0:
            raise invalid_field("header.write_offset", "must not be negative")
        fields = self._check_fields(
            "header",
            filename=header.filename,
            content_type=header.content_type,
            metadata=header.metadata,
            declared_sha256=header.declared_sha256,
            declared_size=header.declared_size if header.HasField("declared_size") else None,
            callback_url=header.callback_url,
        )
        return UploadInput(
            user_id=user_id,
            session_id=header.session_id,
            filename=fields.filename,
            content_type=fields.content_type,
            declared_size=fields.declared_size,
            declared_sha256=fields.declared_sha256,
            metadata=fields.metadata,
            write_offset=header.write_offset,
            model=self._analysis.check_model(header.model),
            callback_url=fields.callback_url,
            deadline=deadline,
        )

    def _parse_intent(self, intent: upload_pb2.UploadIntent) -> UploadIntent:
        """The header's checks, at creation: a refusal comes before any byte is sent."""
        fields = self._check_fields(
            "intent",
            filename=intent.filename,
            content_type=intent.content_type,
            metadata=intent.metadata,
            declared_sha256=intent.declared_sha256,
            declared_size=intent.declared_size if intent.HasField("declared_size") else None,
            callback_url=intent.callback_url,
        )
        if intent.model:
            self._analysis.check_model(intent.model)
        return replace(fields, model=intent.model)

    def _check_fields(
        self,
        where: str,
        *,
        filename: str,
        content_type: str,
        metadata: struct_pb2.Struct,
        declared_sha256: str,
        declared_size: int | None,
        callback_url: str,
    ) -> UploadIntent:
        """The checks a header and an intent share, with ``where`` naming the field."""
        sha = declared_sha256.lower()
        if sha and (len(sha) != 64 or not set(sha) <= _HEX):
            raise invalid_field(f"{where}.declared_sha256", "must be 64 hexadecimal characters")
        if declared_size is not None and declared_size < 0:
            raise invalid_field(f"{where}.declared_size", "must not be negative")
        checked = self._checked_metadata(metadata)
        if len(filename) > MAX_FILENAME_CHARS:
            raise invalid_field(f"{where}.filename", f"longer than {MAX_FILENAME_CHARS} characters")
        return UploadIntent(
            filename=filename,
            content_type=content_type[:MAX_CONTENT_TYPE_CHARS],
            metadata=checked,
            declared_sha256=sha,
            declared_size=declared_size,
            # Checked here, before the pipeline takes a lock or stores a byte.
            callback_url=self._callbacks.check(callback_url),
        )

    def _parse_trailer(self, trailer: upload_pb2.UploadTrailer) -> LateFields:
        """The header's checks, on the fields the last message may still set."""
        if len(trailer.filename) > MAX_FILENAME_CHARS:
            raise invalid_field("trailer.filename", f"longer than {MAX_FILENAME_CHARS} characters")
        return LateFields(
            filename=trailer.filename if trailer.HasField("filename") else None,
            content_type=(
                trailer.content_type[:MAX_CONTENT_TYPE_CHARS]
                if trailer.HasField("content_type")
                else None
            ),
            metadata=(
                self._checked_metadata(trailer.metadata) if trailer.HasField("metadata") else None
            ),
        )

    def _checked_metadata(self, struct: struct_pb2.Struct) -> dict[str, Any]:
        metadata = messages.struct_to_dict(struct)
        encoded = len(json.dumps(metadata, separators=(",", ":")).encode())
        if encoded > self._max_metadata:
            raise InvalidUpload(
                Reason.METADATA_TOO_LARGE,
                f"metadata is {encoded} bytes; the limit is {self._max_metadata}",
                metadata={"max_metadata_bytes": str(self._max_metadata)},
            )
        return metadata


@dataclass
class _Trailer:
    """The checked trailer of the finish_write message, once it has arrived."""

    late: LateFields = NO_LATE_FIELDS

    def get(self) -> LateFields:
        return self.late


def _with_intent(header: upload_pb2.UploadHeader, intent: UploadIntent) -> upload_pb2.UploadHeader:
    """``header`` with each empty field taken from the session's intent."""
    merged = upload_pb2.UploadHeader()
    merged.CopyFrom(header)
    merged.filename = header.filename or intent.filename
    merged.content_type = header.content_type or intent.content_type
    merged.model = header.model or intent.model
    merged.declared_sha256 = header.declared_sha256 or intent.declared_sha256
    merged.callback_url = header.callback_url or intent.callback_url
    if not header.HasField("declared_size") and intent.declared_size is not None:
        merged.declared_size = intent.declared_size
    if not header.metadata.fields and intent.metadata:
        merged.metadata.update(intent.metadata)
    return merged


def _deadline(context: Context) -> float | None:
    """The call's deadline as a ``time.monotonic()`` instant (None: it has none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _chunk_size(message: upload_pb2.UploadVideoRequest) -> int:
    return len(message.chunk)


async def _chunks(
    requests: AsyncIterator[upload_pb2.UploadVideoRequest],
    context: Context,
    trailer: _Trailer,
    parse_trailer: Callable[[upload_pb2.UploadTrailer], LateFields],
) -> AsyncIterator[bytes]:
    """The data chunks after the header, up to the message with finish_write, whose
    trailer (checked before its chunk is taken) is left in ``trailer``.

    grpc.aio ends the request iterator the same way for a half-close and for a
    client that went away, so completeness is decided by finish_write alone."""
    async for message in requests:
        kind = message.WhichOneof("payload")
        if kind == "header":
            raise invalid_field("header", "only the first message may carry a header")
        if message.HasField("trailer"):
            if not message.finish_write:
                raise invalid_field(
                    "trailer", "only the message with finish_write may carry a trailer"
                )
            trailer.late = parse_trailer(message.trailer)
        if message.chunk:
            metrics.UPLOAD_BYTES.inc(len(message.chunk))
            yield message.chunk
        if message.finish_write:
            if await anext(aiter(requests), None) is not None:
                raise invalid_field("finish_write", "no message may follow finish_write")
            return
    if context.cancelled():
        raise Cancelled(Reason.UPLOAD_CANCELLED, "the client cancelled the upload")
    raise IncompleteUpload(
        Reason.UPLOAD_INCOMPLETE,
        "the stream ended without finish_write: what arrived is kept; resume at the "
        "session's committed offset",
    )


def upload_outcome(error: VidscanError) -> str:
    """How an UploadVideo that failed is counted: ``refused`` (the client's request,
    final), ``interrupted`` (resumable: cut, cancelled, a backend down) or ``failed``
    (our fault)."""
    if isinstance(error, IncompleteUpload | Cancelled | Unavailable | StreamStalled):
        return "interrupted"
    if isinstance(error, Internal | StorageFull):
        return "failed"
    return "refused"
