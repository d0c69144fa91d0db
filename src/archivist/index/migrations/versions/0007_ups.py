"""Unified Procedure Steps.

Revision ID: 0007
Revises: 0006

- ``ups``: one row per UPS SOP Instance (PS3.4 Annex CC): its attribute set, state, the
  Transaction UID of its performer, and a few values as columns for listing.
- ``ups_subscription``: who watches which workitem (or all of them: global subscriptions).
- ``ups_event``: events waiting to be delivered to their subscriber.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ups",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("transaction_uid", sa.String(64)),
        sa.Column("priority", sa.String(16)),
        sa.Column("procedure_step_label", sa.String(64)),
        sa.Column("worklist_label", sa.String(64)),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("study_instance_uid", sa.String(64)),
        sa.Column("scheduled_start", sa.String(26)),
        sa.Column("calling_ae_title", sa.String(16)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dataset", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_ups_state", "ups", ["state"])
    op.create_index("ix_ups_updated_at", "ups", ["updated_at"])
    op.create_table(
        "ups_subscription",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("aet", sa.String(16), nullable=False),
        sa.Column("ups_uid", sa.String(64)),
        sa.Column("deletion_lock", sa.Boolean(), nullable=False),
        sa.Column("filter", sa.LargeBinary()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ups_subscription_aet", "ups_subscription", ["aet"])
    op.create_index("ix_ups_subscription_ups", "ups_subscription", ["ups_uid"])
    op.create_table(
        "ups_event",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("aet", sa.String(16), nullable=False),
        sa.Column("ups_uid", sa.String(64), nullable=False),
        sa.Column("event_type", sa.Integer(), nullable=False),
        sa.Column("info", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_ups_event_aet", "ups_event", ["aet", "pk"])


def downgrade() -> None:
    op.drop_index("ix_ups_event_aet", "ups_event")
    op.drop_table("ups_event")
    op.drop_index("ix_ups_subscription_ups", "ups_subscription")
    op.drop_index("ix_ups_subscription_aet", "ups_subscription")
    op.drop_table("ups_subscription")
    op.drop_index("ix_ups_updated_at", "ups")
    op.drop_index("ix_ups_state", "ups")
    op.drop_table("ups")
