"""Indexes for the listings: a user's videos and a video's analyses, newest first.

ListVideos and ListAnalyses page by keyset, (created_at, id) descending, so each
page is one range scan of these indexes. The analyses one also serves the "latest
analysis of a video" lookups.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_videos_user_created",
        "videos",
        ["user_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_analyses_video_created",
        "analyses",
        ["video_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )


def downgrade() -> None:
    op.drop_index("ix_analyses_video_created", table_name="analyses")
    op.drop_index("ix_videos_user_created", table_name="videos")
