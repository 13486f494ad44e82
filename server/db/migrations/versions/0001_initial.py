"""Videos, analyses, user quotas and quota reservations.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")
_ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "videos",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False, index=True),
        sa.Column("session_id", sa.String(36), nullable=False, unique=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("file_size", sa.BigInteger, nullable=False),
        sa.Column("file_hash", sa.String(64), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("codec", sa.String(64), nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("fps", sa.Float, nullable=False),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("s3_key", sa.String(1024), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("metadata", _json, nullable=False),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("uploaded_at", _ts, nullable=False),
    )
    op.create_index("ix_videos_user_hash", "videos", ["user_id", "file_hash"])
    op.create_table(
        "analyses",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "video_id",
            sa.String(36),
            sa.ForeignKey("videos.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("user_id", sa.String(255), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("result", _json, nullable=True),
        sa.Column("failure_reason", sa.String(64), nullable=False, server_default=""),
        sa.Column("failure_message", sa.Text, nullable=False, server_default=""),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("estimated_seconds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("started_at", _ts, nullable=True),
        sa.Column("completed_at", _ts, nullable=True),
    )
    op.create_table(
        "user_quotas",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("remaining", sa.Integer, nullable=False),
        sa.Column("updated_at", _ts, nullable=False),
        sa.CheckConstraint("remaining >= 0", name="ck_user_quotas_remaining"),
    )
    op.create_table(
        "quota_reservations",
        sa.Column("session_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False, index=True),
        sa.Column("created_at", _ts, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quota_reservations")
    op.drop_table("user_quotas")
    op.drop_table("analyses")
    op.drop_index("ix_videos_user_hash", table_name="videos")
    op.drop_table("videos")
