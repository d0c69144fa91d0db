"""Tombstones of removed records (Supplement 223, Removed from Operational Use).

Revision ID: 0004
Revises: 0003

- ``tombstone``: one row per study, series or instance deleted from the archive, kept until
  purged, so Repository Query and inventories report the record as removed (issue 8).
- Triggers: storing a study, series or instance whose UID has a tombstone clears that tombstone
  in the same transaction (a UID is either in operational use or removed, never both). They live
  in the database so that every writer (the ingest, present and future) honours the rule.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: (trigger, table, tombstone level, UID column).
_TRIGGERS = (
    ("tr_study_clears_tombstone", "study", "STUDY", "study_instance_uid"),
    ("tr_series_clears_tombstone", "series", "SERIES", "series_instance_uid"),
    ("tr_instance_clears_tombstone", "instance", "IMAGE", "sop_instance_uid"),
)


def upgrade() -> None:
    op.create_table(
        "tombstone",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("record_pk", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64)),
        sa.Column("sop_instance_uid", sa.String(64)),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason_value", sa.String(16), nullable=False),
        sa.Column("reason_scheme", sa.String(16), nullable=False),
        sa.Column("reason_meaning", sa.String(64), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("row", sa.Text(), nullable=False),
    )
    op.create_index("ix_tombstone_record", "tombstone", ["level", "record_pk"])
    op.create_index("ix_tombstone_study", "tombstone", ["study_instance_uid"])
    op.create_index("ix_tombstone_series", "tombstone", ["series_instance_uid"])
    op.create_index("ix_tombstone_sop", "tombstone", ["sop_instance_uid"])
    op.create_index("ix_tombstone_removed_at", "tombstone", ["removed_at"])
    dialect = op.get_bind().dialect.name
    for name, table, level, column in _TRIGGERS:
        uid_col = {"STUDY": "study_instance_uid", "SERIES": "series_instance_uid",
                   "IMAGE": "sop_instance_uid"}[level]
        if dialect == "sqlite":
            op.execute(
                f"CREATE TRIGGER {name} AFTER INSERT ON {table} BEGIN "
                f"DELETE FROM tombstone WHERE level = '{level}' "
                f"AND {uid_col} = NEW.{column}; END"
            )
        elif dialect == "postgresql":
            op.execute(
                f"CREATE FUNCTION {name}_fn() RETURNS trigger AS $$ BEGIN "
                f"DELETE FROM tombstone WHERE level = '{level}' AND {uid_col} = NEW.{column}; "
                f"RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            op.execute(f"CREATE TRIGGER {name} AFTER INSERT ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION {name}_fn()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, table, _level, _column in _TRIGGERS:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        elif dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {name}_fn()")
    op.drop_table("tombstone")
