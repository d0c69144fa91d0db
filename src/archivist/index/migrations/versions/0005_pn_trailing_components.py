"""Person names stored with trailing empty components matched as the same name.

Revision ID: 0005
Revises: 0004

``normalise_pn`` now drops trailing component delimiters (``SMITH^JOHN^^^`` folds to
``smith^john``), so a query for ``smith^john`` finds a name a sender padded. The folded columns of
names already stored with such delimiters are computed again.
"""

import sqlalchemy as sa
from alembic import op

from archivist.core.matching import normalise_pn

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = (("patient", "patient_name"), ("study", "referring_physician_name"))


def upgrade() -> None:
    conn = op.get_bind()
    for table, column in _COLUMNS:
        rows = conn.execute(sa.text(
            f"SELECT pk, {column} FROM {table} WHERE {column} LIKE '%^' OR {column} LIKE '%^='"
            f" OR {column} LIKE '%^=%' OR {column} LIKE '%='")).fetchall()
        for pk, value in rows:
            conn.execute(sa.text(f"UPDATE {table} SET {column}_norm = :norm WHERE pk = :pk"),
                         {"norm": normalise_pn(value), "pk": pk})


def downgrade() -> None:
    pass  # the folded values of the previous revision match a subset of what these match
