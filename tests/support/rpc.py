"""Small helpers for talking to a running vidscan over gRPC in tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from vidscan.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    errors_pb2,
    upload_pb2,
    upload_pb2_grpc,
)

CHUNK = 256 * 1024


def header(session_id: str, **fields: Any) -> upload_pb2.UploadVideoRequest:
    metadata = fields.pop("metadata", None)
    message = upload_pb2.UploadHeader(session_id=session_id, **fields)
    if metadata is not None:
        message.metadata.CopyFrom(_struct(metadata))
    return upload_pb2.UploadVideoRequest(header=message)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


async def stream(
    first: upload_pb2.UploadVideoRequest, data: bytes | Iterable[bytes], chunk: int = CHUNK
) -> AsyncIterator[upload_pb2.UploadVideoRequest]:
    yield first
    pieces = (data[i : i + chunk] for i in range(0, len(data), chunk)) if isinstance(
        data, bytes
    ) else data
    for piece in pieces:
        yield upload_pb2.UploadVideoRequest(chunk=piece)


@dataclass
class ErrorDetails:
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    cleanup: errors_pb2.CleanupReport | None
    field_violations: list[str]
    quota_subjects: list[str]


def details(error: grpc.aio.AioRpcError) -> ErrorDetails:
    """Unpacks the google.rpc.Status details the server attaches to every error."""
    status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    reason, metadata, cleanup = "", {}, None
    violations: list[str] = []
    subjects: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(errors_pb2.CleanupReport.DESCRIPTOR):
            cleanup = errors_pb2.CleanupReport()
            detail.Unpack(cleanup)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [v.field for v in bad.field_violations]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            subjects = [v.subject for v in quota.violations]
    return ErrorDetails(
        error.code(), status.message, reason, metadata, cleanup, violations, subjects
    )


class Client:
    """One user's view of the service."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.uploads = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
        self.analyses = analysis_pb2_grpc.AnalysisServiceStub(channel)  # type: ignore[no-untyped-call]
        self.metadata = (("authorization", f"Bearer {token}"),)

    async def new_session(self, **fields: Any) -> upload_pb2.UploadSession:
        response = await self.uploads.CreateUploadSession(
            upload_pb2.CreateUploadSessionRequest(**fields), metadata=self.metadata
        )
        return response.session

    async def status(self, session_id: str) -> upload_pb2.GetUploadSessionResponse:
        return await self.uploads.GetUploadSession(
            upload_pb2.GetUploadSessionRequest(session_id=session_id), metadata=self.metadata
        )

    async def upload(
        self,
        data: bytes | Iterable[bytes],
        *,
        session_id: str | None = None,
        chunk: int = CHUNK,
        **header_fields: Any,
    ) -> upload_pb2.UploadResult:
        if session_id is None:
            session_id = (await self.new_session()).session_id
        header_fields.setdefault("filename", "clip.mp4")
        response = await self.uploads.UploadVideo(
            stream(header(session_id, **header_fields), data, chunk), metadata=self.metadata
        )
        return response.result

    async def video(self, video_id: str) -> analysis_pb2.Video:
        response = await self.analyses.GetVideo(
            analysis_pb2.GetVideoRequest(video_id=video_id), metadata=self.metadata
        )
        return response.video

    async def analysis(self, analysis_id: str) -> analysis_pb2.Analysis:
        response = await self.analyses.GetAnalysis(
            analysis_pb2.GetAnalysisRequest(analysis_id=analysis_id), metadata=self.metadata
        )
        return response.analysis
