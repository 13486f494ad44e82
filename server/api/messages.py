"""Conversions from domain records to protobuf messages (one direction)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from vidscan.v1 import analysis_pb2, detection_pb2, upload_pb2

from server.config import ALLOWED_FORMATS
from server.detection.result import from_document
from server.records.model import AnalysisRecord, AnalysisStatus, VideoRecord
from server.sessions.port import SessionRecord, SessionState, UploadIntent

_SESSION_STATES = {
    SessionState.ACTIVE: upload_pb2.UPLOAD_SESSION_STATE_ACTIVE,
    SessionState.EXPIRED: upload_pb2.UPLOAD_SESSION_STATE_EXPIRED,
    SessionState.CANCELLED: upload_pb2.UPLOAD_SESSION_STATE_CANCELLED,
    SessionState.COMPLETED: upload_pb2.UPLOAD_SESSION_STATE_COMPLETED,
}

_SESSION_MESSAGES = {
    SessionState.ACTIVE: "Session is active and accepts an upload",
    SessionState.EXPIRED: "Session expired before an upload completed",
    SessionState.CANCELLED: "Session was cancelled",
    SessionState.COMPLETED: "A video was uploaded through this session",
}

ANALYSIS_STATUSES = {
    AnalysisStatus.PENDING: analysis_pb2.ANALYSIS_STATUS_PENDING,
    AnalysisStatus.RUNNING: analysis_pb2.ANALYSIS_STATUS_RUNNING,
    AnalysisStatus.ANALYZED: analysis_pb2.ANALYSIS_STATUS_ANALYZED,
    AnalysisStatus.FAILED: analysis_pb2.ANALYSIS_STATUS_FAILED,
}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if value:
        message.update(value)
    return message


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message)
    return result


def upload_session(record: SessionRecord, now: datetime) -> upload_pb2.UploadSession:
    return upload_pb2.UploadSession(
        session_id=record.session_id,
        state=_SESSION_STATES[record.effective_state(now)],
        created_at=timestamp(record.created_at),
        expires_at=timestamp(record.expires_at),
        max_bytes=record.max_bytes,
        committed_bytes=record.committed_bytes,
        allowed_formats=list(ALLOWED_FORMATS),
        video_id=record.video_id if record.state is SessionState.COMPLETED else "",
        intent=upload_intent(record.intent) if record.intent else None,
    )


def upload_intent(intent: UploadIntent) -> upload_pb2.UploadIntent:
    message = upload_pb2.UploadIntent(
        filename=intent.filename,
        content_type=intent.content_type,
        metadata=struct(intent.metadata),
        model=intent.model,
        declared_sha256=intent.declared_sha256,
        callback_url=intent.callback_url,
    )
    if intent.declared_size is not None:
        message.declared_size = intent.declared_size
    return message


def session_status(record: SessionRecord, now: datetime) -> upload_pb2.GetUploadSessionResponse:
    state = record.effective_state(now)
    return upload_pb2.GetUploadSessionResponse(
        session_id=record.session_id,
        status=state.value,
        message=_SESSION_MESSAGES[state],
        session=upload_session(record, now),
    )


def detection(result: Mapping[str, Any] | None) -> detection_pb2.Detection | None:
    if not result:
        return None
    return from_document(dict(result))


def video(row: VideoRecord, *, uri: str, latest_analysis_id: str) -> analysis_pb2.Video:
    return analysis_pb2.Video(
        video_id=row.id,
        filename=row.filename,
        file_size=row.file_size,
        file_hash=row.file_hash,
        format=row.format,
        codec=row.codec,
        duration_seconds=row.duration_seconds,
        width=row.width,
        height=row.height,
        fps=row.fps,
        bucket=row.bucket,
        s3_key=row.s3_key,
        s3_url=uri,
        status=row.status.value,
        created_at=timestamp(row.created_at),
        uploaded_at=timestamp(row.uploaded_at),
        metadata=struct(row.client_metadata),
        latest_analysis_id=latest_analysis_id,
    )


def analysis(row: AnalysisRecord) -> analysis_pb2.Analysis:
    return analysis_pb2.Analysis(
        analysis_id=row.id,
        video_id=row.video_id,
        status=ANALYSIS_STATUSES[row.status],
        model_name=row.model_name,
        detection=detection(row.result),
        failure_reason=row.failure_reason,
        failure_message=row.failure_message,
        attempts=row.attempts,
        estimated_processing_time=row.estimated_seconds,
        created_at=timestamp(row.created_at),
        completed_at=timestamp(row.completed_at),
    )


def upload_result(
    *,
    video_row: VideoRecord,
    analysis_row: AnalysisRecord,
    uri: str,
    processing_time: float | None,
    deduplicated: bool = False,
) -> upload_pb2.UploadResult:
    found = detection(analysis_row.result)
    analyzed = analysis_row.status is AnalysisStatus.ANALYZED and found is not None
    failed = analysis_row.status is AnalysisStatus.FAILED
    status = (
        upload_pb2.UPLOAD_STATUS_ANALYZED
        if analyzed
        else upload_pb2.UPLOAD_STATUS_ANALYSIS_FAILED
        if failed
        else upload_pb2.UPLOAD_STATUS_PROCESSING
    )
    result = upload_pb2.UploadResult(
        video_id=video_row.id,
        analysis_id=analysis_row.id,
        upload_status=status,
        redirect_url=f"/dashboard/videos/{video_row.id}/results",
        estimated_processing_time=0 if analyzed or failed else analysis_row.estimated_seconds,
        filename=video_row.filename,
        file_size=video_row.file_size,
        file_hash=video_row.file_hash,
        format=video_row.format,
        s3_key=video_row.s3_key,
        s3_url=uri,
        created_at=timestamp(video_row.created_at),
        uploaded_at=timestamp(video_row.uploaded_at),
        metadata=struct(video_row.client_metadata),
        deduplicated=deduplicated,
    )
    if found is not None and analyzed:
        result.detection_result.CopyFrom(found)
        if found.outcome != detection_pb2.DETECTION_OUTCOME_NO_FACE_DETECTED:
            result.confidence_score = found.confidence  # else unset: nothing was judged
            result.is_fake = found.is_fake
        if processing_time is not None and not deduplicated:
            result.processing_time = processing_time
    return result
