"""The records an accepted upload writes: one video and its first (pending) analysis."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from server.media.messages import VideoInfo
from server.media.sniff import Container
from server.records.model import AnalysisRecord, AnalysisStatus, VideoRecord, VideoStatus
from server.upload.naming import display_filename


def new_video(
    *,
    video_id: str,
    user_id: str,
    session_id: str,
    filename: str,
    content_type: str,
    metadata: dict[str, Any],
    container: Container,
    size: int,
    file_hash: str,
    info: VideoInfo,
    bucket: str,
    key: str,
    now: datetime,
) -> VideoRecord:
    return VideoRecord(
        id=video_id,
        user_id=user_id,
        session_id=session_id,
        filename=display_filename(filename, fallback=f"upload.{container}"),
        file_size=size,
        file_hash=file_hash,
        format=container.value,
        codec=info.codec,
        duration_seconds=info.duration_seconds,
        width=info.width,
        height=info.height,
        fps=info.fps,
        bucket=bucket,
        s3_key=key,
        content_type=content_type or container.content_type,
        status=VideoStatus.STORED,
        client_metadata=metadata,
        created_at=now,
        uploaded_at=now,
    )


def pending_analysis(
    *,
    analysis_id: str,
    video_id: str,
    user_id: str,
    model: str,
    now: datetime,
    callback_url: str = "",
) -> AnalysisRecord:
    return AnalysisRecord(
        id=analysis_id,
        video_id=video_id,
        user_id=user_id,
        status=AnalysisStatus.PENDING,
        model_name=model,
        created_at=now,
        callback_url=callback_url,
    )
