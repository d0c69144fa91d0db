"""Modality Performed Procedure Steps.

Revision ID: 0006
Revises: 0005

- ``mpps``: one row per Modality Performed Procedure Step SOP Instance (PS3.4 Annex F) created by
  a modality's N-CREATE and updated by its N-SETs: the whole attribute set, and a few of its
  values as columns for listing (status, study, accession, station, dates).
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
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dataset", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_mpps_study", "mpps", ["study_instance_uid"])
    op.create_index("ix_mpps_updated_at", "mpps", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_mpps_updated_at", "mpps")
    op.drop_index("ix_mpps_study", "mpps")
    op.drop_table("mpps")
