"""Domain records: frozen values that cross module boundaries instead of ORM rows.

A record is a snapshot. Changing what is stored goes through a repository method;
changing a value in hand is ``dataclasses.replace``. ``result`` is the analysis'
detection document (``server/detection/result.py`` reads and writes it strictly).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class AnalysisStatus(StrEnum):
    """The lifecycle of an analysis; the values are what the database stores."""

    PENDING = "pending"
    RUNNING = "running"
    ANALYZED = "analyzed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """Done for good: no worker will run it again."""
        return self in (AnalysisStatus.ANALYZED, AnalysisStatus.FAILED)


class VideoStatus(StrEnum):
    """Whether a recorded video's object is where its row says."""

    STORED = "stored"
    # The janitor found no object behind the row (someone deleted it out of band).
    OBJECT_MISSING = "object_missing"


@dataclass(frozen=True, kw_only=True)
class VideoRecord:
    id: str
    user_id: str
    session_id: str
    filename: str
    file_size: int
    file_hash: str
    format: str
    codec: str
    duration_seconds: float
    width: int
    height: int
    fps: float
    bucket: str
    s3_key: str
    content_type: str
    status: VideoStatus
    client_metadata: Mapping[str, Any]
    created_at: datetime
    uploaded_at: datetime


@dataclass(frozen=True, kw_only=True)
class AnalysisRecord:
    id: str
    video_id: str
    user_id: str
    status: AnalysisStatus
    model_name: str
    created_at: datetime
    result: Mapping[str, Any] | None = None
    failure_reason: str = ""
    failure_message: str = ""
    attempts: int = 0
    estimated_seconds: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    lease_until: datetime | None = None
    duration_ms: float | None = None
    # Where the final state is announced (server/webhooks/); "" for none.
    callback_url: str = ""
