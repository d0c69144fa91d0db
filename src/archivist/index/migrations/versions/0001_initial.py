"""Initial index schema: patient, study, series, instance, change.

Revision ID: 0001
Revises:

Frozen: this revision spells out the tables, columns and indexes as ``index/schema.py`` defined
them at version 0.1 (it used to call ``metadata.create_all`` on the live metadata, which would
have made it create later columns too). Every later change is a revision of its own.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patient",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(64), nullable=False),
        sa.Column("patient_name", sa.String(324)),
        sa.Column("patient_name_norm", sa.String(324)),
        sa.Column("patient_birth_date", sa.String(8)),
        sa.Column("patient_birth_time", sa.String(16)),
        sa.Column("patient_sex", sa.String(16)),
        sa.Column("number_of_patient_related_studies", sa.Integer(), nullable=False),
        sa.Column("number_of_patient_related_series", sa.Integer(), nullable=False),
        sa.Column("number_of_patient_related_instances", sa.Integer(), nullable=False),
        sa.Column("attrs", sa.Text()),
        sa.UniqueConstraint("patient_id", "issuer_of_patient_id", name="uq_patient_id_issuer"),
    )
    op.create_index("ix_patient_name_norm", "patient", ["patient_name_norm"])
    op.create_index("ix_patient_name", "patient", ["patient_name"])

    op.create_table(
        "study",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("patient_pk", sa.Integer(), sa.ForeignKey("patient.pk"), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("study_date", sa.String(8)),
        sa.Column("study_time", sa.String(16)),
        sa.Column("accession_number", sa.String(64)),
        sa.Column("study_id", sa.String(16)),
        sa.Column("referring_physician_name", sa.String(324)),
        sa.Column("referring_physician_name_norm", sa.String(324)),
        sa.Column("study_description", sa.String(64)),
        sa.Column("patient_age", sa.String(4)),
        sa.Column("patient_size", sa.String(16)),
        sa.Column("patient_weight", sa.String(16)),
        sa.Column("institution_name", sa.String(64)),
        sa.Column("modalities_in_study", sa.String(512), nullable=False),
        sa.Column("sop_classes_in_study", sa.Text(), nullable=False),
        sa.Column("number_of_study_related_series", sa.Integer(), nullable=False),
        sa.Column("number_of_study_related_instances", sa.Integer(), nullable=False),
        sa.Column("attrs", sa.Text()),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_study_patient", "study", ["patient_pk"])
    op.create_index("ix_study_date", "study", ["study_date"])
    op.create_index("ix_study_accession", "study", ["accession_number"])

    op.create_table(
        "series",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("study_pk", sa.Integer(), sa.ForeignKey("study.pk"), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("modality", sa.String(16)),
        sa.Column("series_number", sa.Integer()),
        sa.Column("series_description", sa.String(64)),
        sa.Column("series_date", sa.String(8)),
        sa.Column("series_time", sa.String(16)),
        sa.Column("body_part_examined", sa.String(16)),
        sa.Column("protocol_name", sa.String(64)),
        sa.Column("station_name", sa.String(16)),
        sa.Column("performed_procedure_step_start_date", sa.String(8)),
        sa.Column("performed_procedure_step_start_time", sa.String(16)),
        sa.Column("number_of_series_related_instances", sa.Integer(), nullable=False),
        sa.Column("attrs", sa.Text()),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_series_study", "series", ["study_pk"])
    op.create_index("ix_series_modality", "series", ["modality"])

    op.create_table(
        "instance",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("series_pk", sa.Integer(), sa.ForeignKey("series.pk"), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("instance_number", sa.Integer()),
        sa.Column("content_date", sa.String(8)),
        sa.Column("content_time", sa.String(16)),
        sa.Column("acquisition_number", sa.Integer()),
        sa.Column("number_of_frames", sa.Integer()),
        sa.Column("rows", sa.Integer()),
        sa.Column("columns", sa.Integer()),
        sa.Column("bits_allocated", sa.Integer()),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(64), nullable=False, unique=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_aet", sa.String(16)),
        sa.Column("source_address", sa.String(64)),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("attrs", sa.Text()),
    )
    op.create_index("ix_instance_series", "instance", ["series_pk"])
    op.create_index("ix_instance_change_seq", "instance", ["change_seq"])

    op.create_table(
        "change",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("study_instance_uid", sa.String(64)),
        sa.Column("series_instance_uid", sa.String(64)),
        sa.Column("sop_instance_uid", sa.String(64)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_change_study", "change", ["study_instance_uid"])


def downgrade() -> None:
    for table in ("change", "instance", "series", "study", "patient"):
        op.drop_table(table)
