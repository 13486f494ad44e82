"""Tables. The same models serve PostgreSQL (production) and SQLite (embedded)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JsonDocument = JSON().with_variant(JSONB(), "postgresql")
Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    pass


class VideoRow(Base):
    __tablename__ = "videos"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    session_id: Mapped[str] = mapped_column(String(36), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    file_size: Mapped[int] = mapped_column(BigInteger)
    file_hash: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    codec: Mapped[str] = mapped_column(String(64))
    duration_seconds: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    fps: Mapped[float] = mapped_column(Float)
    bucket: Mapped[str] = mapped_column(String(255))
    s3_key: Mapped[str] = mapped_column(String(1024))
    content_type: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    client_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JsonDocument)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    uploaded_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_videos_user_hash", "user_id", "file_hash"),)


class AnalysisRow(Base):
    __tablename__ = "analyses"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument, nullable=True)
    failure_reason: Mapped[str] = mapped_column(String(64), default="")
    failure_message: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    estimated_seconds: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    # While RUNNING: the claim expires at lease_until, so a job whose process died is
    # picked up again by another worker.
    lease_until: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The upload's webhook, called once the analysis is final; "" for none.
    callback_url: Mapped[str] = mapped_column(Text, default="", server_default="")


class UserQuotaRow(Base):
    """Uploads a user may still make. Decremented when an upload reserves a unit."""

    __tablename__ = "user_quotas"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    remaining: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class QuotaReservationRow(Base):
    """One unit of quota held by an upload in flight.

    Deleted on success (the unit is spent) or on failure (the unit is given back).
    A reservation that outlives its session belongs to a crashed process; the
    janitor gives it back.
    """

    __tablename__ = "quota_reservations"

    session_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
