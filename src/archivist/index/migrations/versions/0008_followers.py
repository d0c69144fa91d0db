"""Where the change log's followers have got to.

Revision ID: 0008
Revises: 0007

- ``follower``: one row per follower of the change log that several nodes share (forwarding
  to a destination, Instance Availability Notifications to one): its place in the log and
  what it still has to send, as JSON. Used when the index is PostgreSQL (several nodes); on
  SQLite the followers keep their files under ``<data>/forward/`` and ``<data>/ian/``.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "follower",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("follower")
