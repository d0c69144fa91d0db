"""Alembic environment: runs migrations on the connection the index hands over.

An index that is not new and not at the head revision is being upgraded in place: that is logged
(WARNING, so that a command line's stderr shows it too) before the first revision runs, a line
per revision applied, and the result. Each revision runs in a transaction of its own (Alembic on
SQLite), so an upgrade cut short (kill -9, power) leaves the index at the last revision it
completed, and the next start carries on from there.

An index at a revision these migrations do not know was written by a newer Archivist: it is
refused before anything is written (:class:`archivist.index.migrations.IndexFromNewerVersion`).
So is an upgrade while another process holds the data directory (an older version still running:
:class:`archivist.index.migrations.DataDirectoryBusy`).
"""

import logging
import time
from pathlib import Path

from alembic import context
from alembic.script import ScriptDirectory

from archivist.index.migrations import (
    DataDirectoryBusy,
    IndexFromNewerVersion,
    busy_message,
    describe,
    lock_held,
    newer_index_message,
)
from archivist.index.schema import metadata

log = logging.getLogger("archivist.index.migrations")

connection = context.config.attributes["connection"]
script = ScriptDirectory.from_config(context.config)
head = script.get_current_head()


def _data_directory_free(database: str) -> bool:
    """True when no process holds the data directory's ``archivist.lock`` (every version holds
    it shared from the moment its archive is open, and opens it only after this migration), or
    when the index is not a file of a data directory."""
    return not database or not lock_held(Path(database).parent / "archivist.lock")


def _applied(*, ctx, step, heads, run_args):  # type: ignore[no-untyped-def]
    if not upgrading:  # a new index: nothing to report
        return
    for revision in step.up_revision_ids:
        log.warning("index revision %s applied: %s", revision, describe(script, revision))


# Alembic calls it with keyword arguments; its stub declares positional ones.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  on_version_apply=_applied)  # type: ignore[arg-type]
current = context.get_context().get_current_revision()
database = connection.engine.url.database if connection.dialect.name == "sqlite" else ""
where = database or str(connection.engine.url)
if current is not None and current not in {r.revision for r in script.walk_revisions()}:
    raise IndexFromNewerVersion(newer_index_message(where, current, head))
upgrading = current is not None and current != head
if upgrading and not _data_directory_free(database or ""):
    raise DataDirectoryBusy(busy_message(where, current or "", head))
started = time.monotonic()
if upgrading:
    log.warning("index at revision %s, this version uses %s: upgrading it in place "
                "(let it finish; if it is cut short, the next start carries on)", current, head)
with context.begin_transaction():
    context.run_migrations()
if upgrading:
    log.warning("index upgraded from revision %s to %s in %.1f s", current,
                context.get_context().get_current_revision(), time.monotonic() - started)
