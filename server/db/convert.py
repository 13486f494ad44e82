"""Rows to records and back: the only place the table classes meet the domain.

Every method of the SQL adapter returns records made here, so no ORM row (lazy,
mutable, bound to a session) leaves ``server/db``. An unknown status in a row is
an error, not a silent default: it means the schema and the code disagree.
Timestamps come out zone-aware (SQLite gives them back naive; they were written
in UTC), so callers compare them with the clock without a second thought.
"""

from __future__ import annotations

from datetime import UTC, datetime

from server.db.models import AnalysisRow, VideoRow
from server.records.model import AnalysisRecord, AnalysisStatus, VideoRecord, VideoStatus


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _aware_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else _aware(moment)


def video_record(row: VideoRow) -> VideoRecord:
    return VideoRecord(
        id=row.id,
        user_id=row.user_id,
        session_id=row.session_id,
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
        content_type=row.content_type,
        status=VideoStatus(row.status),
        client_metadata=dict(row.client_metadata or {}),
        created_at=_aware(row.created_at),
        uploaded_at=_aware(row.uploaded_at),
    )


def video_values(record: VideoRecord) -> dict[str, object]:
    """Column values for an INSERT of this video."""
    return {
        "id": record.id,
        "user_id": record.user_id,
        "session_id": record.session_id,
        "filename": record.filename,
        "file_size": record.file_size,
        "file_hash": record.file_hash,
        "format": record.format,
        "codec": record.codec,
        "duration_seconds": record.duration_seconds,
        "width": record.width,
        "height": record.height,
        "fps": record.fps,
        "bucket": record.bucket,
        "s3_key": record.s3_key,
        "content_type": record.content_type,
        "status": record.status.value,
        "client_metadata": dict(record.client_metadata),
        "created_at": record.created_at,
        "uploaded_at": record.uploaded_at,
    }


def analysis_record(row: AnalysisRow) -> AnalysisRecord:
    return AnalysisRecord(
        id=row.id,
        video_id=row.video_id,
        user_id=row.user_id,
        status=AnalysisStatus(row.status),
        model_name=row.model_name,
        created_at=_aware(row.created_at),
        result=None if row.result is None else dict(row.result),
        failure_reason=row.failure_reason or "",
        failure_message=row.failure_message or "",
        attempts=row.attempts or 0,
        estimated_seconds=row.estimated_seconds or 0,
        started_at=_aware_or_none(row.started_at),
        completed_at=_aware_or_none(row.completed_at),
        lease_until=_aware_or_none(row.lease_until),
        duration_ms=row.duration_ms,
        callback_url=row.callback_url or "",
    )


def analysis_row(record: AnalysisRecord) -> AnalysisRow:
    return AnalysisRow(
        id=record.id,
        video_id=record.video_id,
        user_id=record.user_id,
        status=record.status.value,
        model_name=record.model_name,
        result=None if record.result is None else dict(record.result),
        failure_reason=record.failure_reason,
        failure_message=record.failure_message,
        attempts=record.attempts,
        estimated_seconds=record.estimated_seconds,
        created_at=record.created_at,
        started_at=record.started_at,
        completed_at=record.completed_at,
        lease_until=record.lease_until,
        duration_ms=record.duration_ms,
        callback_url=record.callback_url,
    )
