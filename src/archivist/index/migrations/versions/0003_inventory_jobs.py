"""Supplement 223 Inventory Creation jobs.

Revision ID: 0003
Revises: 0002

- ``inventory_job``: one row per Inventory Creation transaction (state, scope, progress, lease),
  so a job survives a restart (issue 8).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Indexes created before this revision by the service itself (CREATE TABLE IF NOT EXISTS)
    # already have the table, with the same columns.
    if "inventory_job" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "inventory_job",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("transaction_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text()),
        sa.Column("requester_aet", sa.String(16)),
        sa.Column("status_interval", sa.Integer(), nullable=False),
        sa.Column("studies_per_instance", sa.Integer(), nullable=False),
        sa.Column("snapshot_pk", sa.BigInteger(), nullable=False),
        sa.Column("studies_total", sa.Integer(), nullable=False),
        sa.Column("studies_done", sa.Integer(), nullable=False),
        sa.Column("leaves", sa.Text(), nullable=False),
        sa.Column("container_study", sa.String(64), nullable=False),
        sa.Column("container_series", sa.String(64), nullable=False),
        sa.Column("root_uid", sa.String(64)),
        sa.Column("retain", sa.String(3)),
        sa.Column("comment", sa.Text()),
        sa.Column("owner", sa.String(64)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("inventory_job")
