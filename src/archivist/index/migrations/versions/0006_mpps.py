"""Modality Performed Procedure Steps.

Revision ID: 0006
Revises: 0005

- ``mpps``: one row per Modality Performed Procedure Step SOP Instance (PS3.4 Annex F) created by
  a modality's N-CREATE and updated by its N-SETs: the whole attribute set, and a few of its
  values as columns for listing (status, study, accession, station, dates, counts).
- ``mpps_scheduled``: the (study, scheduled step) pairs each step names, for the worklist.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mpps",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("study_instance_uid", sa.String(64)),
        sa.Column("accession_number", sa.String(64)),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("modality", sa.String(16)),
        sa.Column("performed_station_ae_title", sa.String(16)),
        sa.Column("performed_procedure_step_id", sa.String(64)),
        sa.Column("start_date", sa.String(8)),
        sa.Column("start_time", sa.String(16)),
        sa.Column("end_date", sa.String(8)),
        sa.Column("end_time", sa.String(16)),
        sa.Column("calling_ae_title", sa.String(16)),
        sa.Column("series_count", sa.Integer(), nullable=False),
        sa.Column("image_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dataset", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_mpps_study", "mpps", ["study_instance_uid"])
    op.create_index("ix_mpps_updated_at", "mpps", ["updated_at"])
    op.create_table(
        "mpps_scheduled",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("mpps_pk", sa.Integer(), sa.ForeignKey("mpps.pk", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("scheduled_procedure_step_id", sa.String(64)),
    )
    op.create_index("ix_mpps_scheduled_study", "mpps_scheduled", ["study_instance_uid"])


def downgrade() -> None:
    op.drop_index("ix_mpps_scheduled_study", "mpps_scheduled")
    op.drop_table("mpps_scheduled")
    op.drop_index("ix_mpps_updated_at", "mpps")
    op.drop_index("ix_mpps_study", "mpps")
    op.drop_table("mpps")
