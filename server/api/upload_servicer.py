"""UploadService: sessions and the UploadVideo stream."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from vidscan.v1 import upload_pb2, upload_pb2_grpc

from server.analysis.stage import AnalysisStage
from server.api import messages
from server.api.status import rpc_errors
from server.auth import TokenAuthority
from server.clock import Clock
from server.errors import (
    Cancelled,
    IncompleteUpload,
    InvalidUpload,
    Reason,
    invalid_field,
)
from server.lifecycle import Admission
from server.sessions.port import SessionRecord, SessionState, SessionStore
from server.upload.open_session import SessionOpener
from server.upload.pipeline import UploadInput, UploadPipeline, session_not_found

Context = grpc.aio.ServicerContext[Any, Any]
_HEX = set("0123456789abcdef")


class UploadServicer(upload_pb2_grpc.UploadServiceServicer):
    def __init__(
        self,
        *,
        auth: TokenAuthority,
        sessions: SessionStore,
        opener: SessionOpener,
        pipeline: UploadPipeline,
        analysis: AnalysisStage,
        admission: Admission,
        clock: Clock,
        max_metadata_bytes: int,
    ) -> None:
        self._auth = auth
        self._sessions = sessions
        self._opener = opener
        self._pipeline = pipeline
        self._analysis = analysis
        self._admission = admission
        self._clock = clock
        self._max_metadata = max_metadata_bytes

    async def _owned(self, session_id: str, user_id: str) -> SessionRecord:
        record = await self._sessions.get(session_id) if session_id else None
        if record is None or record.user_id != user_id:
            raise session_not_found(session_id)
        return record

    @rpc_errors
    async def CreateUploadSession(
        self, request: upload_pb2.CreateUploadSessionRequest, context: Context
    ) -> upload_pb2.CreateUploadSessionResponse:
        user_id = self._auth.user_from_metadata(context.invocation_metadata())
        self._admission.check_open()
        record = await self._opener.open(
            user_id=user_id,
            expected_size=request.expected_size if request.HasField("expected_size") else None,
        )
        return upload_pb2.CreateUploadSessionResponse(
            session=messages.upload_session(record, record.created_at)
        )

    @rpc_errors
    async def GetUploadSession(
        self, request: upload_pb2.GetUploadSessionRequest, context: Context
    ) -> upload_pb2.GetUploadSessionResponse:
        user_id = self._auth.user_from_metadata(context.invocation_metadata())
        record = await self._owned(request.session_id, user_id)
        return messages.session_status(record, self._clock())

    @rpc_errors
    async def CancelUploadSession(
        self, request: upload_pb2.CancelUploadSessionRequest, context: Context
    ) -> upload_pb2.CancelUploadSessionResponse:
        user_id = self._auth.user_from_metadata(context.invocation_metadata())
        record = await self._owned(request.session_id, user_id)
        if record.state is SessionState.COMPLETED:
            raise session_not_found(request.session_id)
        changed = await self._pipeline.cancel(record)
        return upload_pb2.CancelUploadSessionResponse(
            session_id=record.session_id, cleanup_performed=changed
        )

    @rpc_errors
    async def UploadVideo(
        self, request_iterator: AsyncIterator[upload_pb2.UploadVideoRequest], context: Context
    ) -> upload_pb2.UploadVideoResponse:
        user_id = self._auth.user_from_metadata(context.invocation_metadata())
        with self._admission.admit():
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("payload") != "header":
                raise InvalidUpload(
                    Reason.MISSING_HEADER, "the first message of UploadVideo must carry `header`"
                )
            upload = self._parse_header(first.header, user_id)
            stored = await self._pipeline.run(upload, _chunks(request_iterator, context))
            last_byte = time.monotonic()
            analysis_row = await self._analysis.after_upload(stored)
            return upload_pb2.UploadVideoResponse(
                result=messages.upload_result(
                    video_row=stored.video,
                    analysis_row=analysis_row,
                    uri=stored.object_uri,
                    processing_time=round(time.monotonic() - last_byte, 3),
                    deduplicated=stored.deduplicated,
                )
            )

    def _parse_header(self, header: upload_pb2.UploadHeader, user_id: str) -> UploadInput:
        if not header.session_id:
            raise invalid_field("header.session_id", "required")
        sha = header.declared_sha256.lower()
        if sha and (len(sha) != 64 or not set(sha) <= _HEX):
            raise invalid_field("header.declared_sha256", "must be 64 hexadecimal characters")
        if header.HasField("declared_size") and header.declared_size < 0:
            raise invalid_field("header.declared_size", "must not be negative")
        if header.write_offset < 0:
            raise invalid_field("header.write_offset", "must not be negative")
        metadata = messages.struct_to_dict(header.metadata)
        encoded = len(json.dumps(metadata, separators=(",", ":")).encode())
        if encoded > self._max_metadata:
            raise InvalidUpload(
                Reason.METADATA_TOO_LARGE,
                f"metadata is {encoded} bytes; the limit is {self._max_metadata}",
                metadata={"max_metadata_bytes": str(self._max_metadata)},
            )
        if len(header.filename) > 1024:
            raise invalid_field("header.filename", "longer than 1024 characters")
        model = self._analysis.check_model(header.model)
        return UploadInput(
            user_id=user_id,
            session_id=header.session_id,
            filename=header.filename,
            content_type=header.content_type[:255],
            declared_size=header.declared_size if header.HasField("declared_size") else None,
            declared_sha256=sha,
            metadata=metadata,
            write_offset=header.write_offset,
            model=model,
        )


async def _chunks(
    requests: AsyncIterator[upload_pb2.UploadVideoRequest], context: Context
) -> AsyncIterator[bytes]:
    """The data chunks after the header, up to the message with finish_write.

    grpc.aio ends the request iterator the same way for a half-close and for a
    client that went away, so completeness is decided by finish_write alone."""
    async for message in requests:
        kind = message.WhichOneof("payload")
        if kind == "header":
            raise invalid_field("header", "only the first message may carry a header")
        if message.chunk:
            yield message.chunk
        if message.finish_write:
            if await anext(aiter(requests), None) is not None:
                raise invalid_field("finish_write", "no message may follow finish_write")
            return
    if context.cancelled():
        raise Cancelled(Reason.UPLOAD_CANCELLED, "the client cancelled the upload")
    raise IncompleteUpload(
        Reason.UPLOAD_INCOMPLETE,
        "the stream ended without finish_write; the upload was discarded and the "
        "session can be written again",
    )
