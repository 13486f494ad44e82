"""Small helpers for talking to a running vidscan over gRPC in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
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


def _messages(
    first: upload_pb2.UploadVideoRequest, data: bytes | Iterable[bytes], chunk: int
) -> Iterator[upload_pb2.UploadVideoRequest]:
    yield first
    pieces = (
        (data[i : i + chunk] for i in range(0, len(data), chunk))
        if isinstance(data, bytes)
        else data
    )
    for piece in pieces:
        yield upload_pb2.UploadVideoRequest(chunk=piece)
    yield upload_pb2.UploadVideoRequest(finish_write=True)


async def send_upload(
    target: str,
    metadata: tuple[tuple[str, str], ...],
    first: upload_pb2.UploadVideoRequest,
    data: bytes | Iterable[bytes],
    chunk: int = CHUNK,
    deadline_seconds: float | None = None,
) -> upload_pb2.UploadResult:
    """Streams an upload with the synchronous gRPC API in a thread.

    grpc.aio's client reports INTERNAL instead of the server's status when a write
    races with the server ending the call early (grpc/grpc#36066, still open), which
    is exactly what a refusal mid-stream does; the sync API reports the real status.
    """

    def call() -> upload_pb2.UploadResult:
        with grpc.insecure_channel(target) as channel:
            stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
            response = stub.UploadVideo(
                _messages(first, data, chunk), metadata=metadata, timeout=deadline_seconds
            )
            return response.result  # type: ignore[no-any-return]

    return await asyncio.to_thread(call)


@dataclass
class ErrorDetails:
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    cleanup: errors_pb2.CleanupReport | None
    field_violations: list[str]
    quota_subjects: list[str]
    retry_after_seconds: float | None = None  # google.rpc.RetryInfo


def details(error: grpc.RpcError) -> ErrorDetails:
    """Unpacks the google.rpc.Status details the server attaches to every error."""
    status: status_pb2.Status | None = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    reason, metadata, cleanup = "", {}, None
    violations: list[str] = []
    subjects: list[str] = []
    retry_after: float | None = None
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
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    return ErrorDetails(
        error.code(), status.message, reason, metadata, cleanup, violations, subjects, retry_after
    )


class Client:
    """One user's view of the service."""

    def __init__(self, channel: grpc.aio.Channel, token: str, target: str) -> None:
        self.target = target
        self.uploads = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
        self.analyses = analysis_pb2_grpc.AnalysisServiceStub(channel)  # type: ignore[no-untyped-call]
        self.metadata = (("authorization", f"Bearer {token}"),)

    async def new_session(self, **fields: Any) -> upload_pb2.UploadSession:
        response: upload_pb2.CreateUploadSessionResponse = await self.uploads.CreateUploadSession(
            upload_pb2.CreateUploadSessionRequest(**fields), metadata=self.metadata
        )
        return response.session

    async def status(self, session_id: str) -> upload_pb2.GetUploadSessionResponse:
        response: upload_pb2.GetUploadSessionResponse = await self.uploads.GetUploadSession(
            upload_pb2.GetUploadSessionRequest(session_id=session_id), metadata=self.metadata
        )
        return response

    async def upload(
        self,
        data: bytes | Iterable[bytes],
        *,
        session_id: str | None = None,
        chunk: int = CHUNK,
        deadline_seconds: float | None = None,
        **header_fields: Any,
    ) -> upload_pb2.UploadResult:
        if session_id is None:
            session_id = (await self.new_session()).session_id
        header_fields.setdefault("filename", "clip.mp4")
        return await send_upload(
            self.target,
            self.metadata,
            header(session_id, **header_fields),
            data,
            chunk,
            deadline_seconds,
        )

    async def video(self, video_id: str) -> analysis_pb2.Video:
        response: analysis_pb2.GetVideoResponse = await self.analyses.GetVideo(
            analysis_pb2.GetVideoRequest(video_id=video_id), metadata=self.metadata
        )
        return response.video

    async def analysis(self, analysis_id: str) -> analysis_pb2.Analysis:
        response: analysis_pb2.GetAnalysisResponse = await self.analyses.GetAnalysis(
            analysis_pb2.GetAnalysisRequest(analysis_id=analysis_id), metadata=self.metadata
        )
        return response.analysis
