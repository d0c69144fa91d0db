"""Validation findings per instance, and coded concepts for query by code.

Revision ID: 0002
Revises: 0001

- ``instance.validation_errors`` / ``validation_warnings``: counts from the validation on ingest
  (NULL: not validated).
- ``validation_finding``: the findings themselves (issue 7, "On ingest").
- ``instance_code``: the normalised (scheme, value) of the coded concepts an instance carries
  (issue 6, "Query by code"). Objects stored before this revision have no rows here.
"""

import logging

import sqlalchemy as sa
from alembic import op

log = logging.getLogger("archivist.index.migrations")

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("instance", sa.Column("validation_errors", sa.Integer()))
    op.add_column("instance", sa.Column("validation_warnings", sa.Integer()))

    op.create_table(
        "validation_finding",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("instance_pk", sa.Integer(),
                  sa.ForeignKey("instance.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("module", sa.String(128), nullable=False),
        sa.Column("iod", sa.String(128), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
    )
    op.create_index("ix_validation_finding_instance", "validation_finding", ["instance_pk"])

    op.create_table(
        "instance_code",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("instance_pk", sa.Integer(),
                  sa.ForeignKey("instance.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("series_pk", sa.Integer(), sa.ForeignKey("series.pk"), nullable=False),
        sa.Column("study_pk", sa.Integer(), sa.ForeignKey("study.pk"), nullable=False),
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(64), nullable=False),
        sa.Column("scheme", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("original_scheme", sa.String(64), nullable=False),
        sa.Column("original_value", sa.Text(), nullable=False),
        sa.Column("meaning", sa.Text()),
    )
    op.create_index("ix_instance_code_key", "instance_code", ["scheme", "value", "attribute"])
    op.create_index("ix_instance_code_instance", "instance_code", ["instance_pk"])
    op.create_index("ix_instance_code_series", "instance_code", ["series_pk"])
    op.create_index("ix_instance_code_study", "instance_code", ["study_pk"])

    stored = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM instance")).scalar()
    if stored:
        log.warning("the %d objects stored before index revision 0002 have no coded concepts "
                    "indexed: query by code finds them once `archivist reindex --codes` has "
                    "run (it may run beside the archive); they are listed as not validated "
                    "(stored before the validation on ingest)", stored)


def downgrade() -> None:
    op.drop_table("instance_code")
    op.drop_table("validation_finding")
    with op.batch_alter_table("instance") as batch:
        batch.drop_column("validation_warnings")
        batch.drop_column("validation_errors")
