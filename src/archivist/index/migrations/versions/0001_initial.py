"""Initial index schema: patient, study, series, instance, change.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The first revision builds the schema as index/schema.py defined it at version 0.1.
    # Later changes get their own revisions (op.add_column, ...); this one is then frozen.
    from archivist.index.schema import metadata

    metadata.create_all(op.get_bind())


def downgrade() -> None:
    from archivist.index.schema import metadata

    metadata.drop_all(op.get_bind())
