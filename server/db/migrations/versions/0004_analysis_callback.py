"""The upload's webhook, kept with its analysis.

``analyses.callback_url`` is the URL an upload named in ``header.callback_url``
(checked against VIDSCAN_CALLBACK_HOSTS when it arrived); the analyzer enqueues a
delivery of the final state to it (server/webhooks/). Empty for none, so existing rows
need no backfill.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "analyses",
        sa.Column("callback_url", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_column("analyses", "callback_url")
