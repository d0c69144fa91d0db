"""The index's Alembic migrations (``versions/``), and what the archive needs to know of them
before it opens an index: which revisions this version knows, and how to say that an index was
written by a newer one."""

from __future__ import annotations

import fcntl
import functools
import re
from pathlib import Path
from typing import Any

from archivist.errors import IndexLost


class UpgradeRefused(IndexLost):
    """The index cannot be brought to this version's revision now; nothing was changed (a
    command stops with the message, as for a lost index)."""


class IndexFromNewerVersion(UpgradeRefused):
    """The index is at a revision this version's migrations do not know: a newer Archivist wrote
    it. It is refused, and left as it was (an older version cannot tell what the newer one's
    columns mean, nor undo them)."""


class DataDirectoryBusy(UpgradeRefused):
    """The index needs an upgrade while another process uses the data directory: that process
    opened it without upgrading it, so it runs an older version, which would go on writing rows
    the old way into the new schema (names folded the old way, no codes...)."""


_VERSIONS = Path(__file__).parent / "versions"
_ASSIGNMENT = re.compile(r"""^(revision|down_revision)\s*=\s*(?:["']([^"']+)["']|None)""", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def _chain() -> tuple[frozenset[str], str | None]:
    """(every revision identifier of this version's migrations, the head), read from the
    revision files' ``revision = ...`` / ``down_revision = ...`` lines: without importing Alembic
    and the revisions (what they import costs more than a second), for a check made before every
    command opens the archive."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in _VERSIONS.glob("*.py"):
        for name, value in _ASSIGNMENT.findall(path.read_text(encoding="utf-8")):
            if value:
                (revisions if name == "revision" else parents).add(value)
    heads = revisions - parents
    return frozenset(revisions), (min(heads) if len(heads) == 1 else None)


def lock_held(lock: Path) -> bool:
    """True when another process holds the lock file `lock` (flock, shared or exclusive); False
    when nobody does or it does not exist."""
    try:
        with open(lock) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        pass
    return False


def known_revisions() -> frozenset[str]:
    """The revision identifiers of this version's migrations."""
    return _chain()[0]


def head_revision() -> str | None:
    """The revision this version brings every index to."""
    return _chain()[1]


def describe(script: Any, revision: str) -> str:
    """The first line of a revision's description."""
    doc = (script.get_revision(revision).doc or "").strip()
    return doc.splitlines()[0] if doc else revision


def busy_message(where: str, revision: str, head: str | None) -> str:
    """Why an index that needs an upgrade is not upgraded while another process uses it."""
    return (f"the index {where} is at revision {revision} and this version upgrades it to "
            f"{head}, but another process uses the data directory (an older Archivist still "
            "running?). Nothing was changed. Stop it, then start this version")


def newer_index_message(where: str, revision: str, head: str | None) -> str:
    """Why an index at `revision`, unknown to this version (whose newest is `head`), is refused."""
    return (f"the index {where} is at revision {revision}, which this version of Archivist does "
            f"not know (its newest is {head}): it was written by a newer version. Nothing was "
            "changed. Run that newer version (or later) on this data directory, or restore a "
            "backup made with this version")
