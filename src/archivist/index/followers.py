"""Who follows the change log for a destination, and where it has got to: the place of
forwarding (:mod:`archivist.dimse.forward`) and of Instance Availability Notifications
(:mod:`archivist.dimse.ian`).

One process at a time follows the log for a destination, and what it has done must survive it:

- on SQLite (one machine), a small JSON file per destination in the data directory, named by a
  digest of the AE title, and a lock on a file beside it, as before;
- on PostgreSQL (several nodes, each with a data directory of its own, sharing the index), the
  same JSON in the index's ``follower`` table and a PostgreSQL advisory lock held by a
  connection of its own: one process of all the nodes follows the log for a destination, and
  another takes over where it stopped when it goes (its connection closed, or lost). Files of
  each node's own would have made every node send each study's notification and forward each
  instance once per node, and a node taking over start again from its own old place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy import text as sql_text

from archivist.index.schema import follower

if TYPE_CHECKING:
    from archivist.index.repository import Index

__all__ = ["CursorMoved", "FollowerSlot"]

#: The first key of the advisory locks of followers ("ARCF" in ASCII); the second is a digest
#: of the slot's name.
_LOCK_CLASS = 0x41524346
#: How often a process that does not hold a slot tries to take it.
WAIT_SECONDS = 5.0
#: A pass with nothing to do waits this long before the next.
POLL_SECONDS = 1.0
#: A pass that failed (the destination unreachable...) is tried again after RETRY_FIRST
#: seconds, the wait doubling up to RETRY_MAX.
RETRY_FIRST, RETRY_MAX = 1.0, 60.0


class CursorMoved(ConnectionError):
    """A pass that failed after it had moved the follower's place in the log to `cursor`."""

    def __init__(self, cursor: int, reason: str) -> None:
        super().__init__(reason)
        self.cursor = cursor


class FollowerSlot:
    """The slot of one follower (`kind`: ``forward`` or ``ian``) of one destination."""

    def __init__(self, index: Index, kind: str, aet: str, folder: Path) -> None:
        self.index = index
        self.name = f"{kind}:{aet}"
        self.shared = not index.is_sqlite
        self.path = folder / f"{zlib.crc32(aet.encode()):08x}.json"
        if not self.shared:
            folder.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._conn: Any = None
        self._key = zlib.crc32(self.name.encode()) - (1 << 31)  # a signed 32-bit int

    # -- following ------------------------------------------------------------------------

    def follow(self, stop: threading.Event, start: Callable[[], int],
               step: Callable[[int], tuple[int, bool]], what: str,
               logger: logging.Logger) -> None:
        """Follow the change log while this process holds the slot, until `stop` is set.

        `start()` gives the place in the log each time the slot is taken (the one saved, else
        the end of the log); `step(cursor)` does one pass and returns the new place and
        whether it had anything to do (if not, the next waits :data:`POLL_SECONDS`). A pass
        that raises is tried again after :data:`RETRY_FIRST` seconds, doubling up to
        :data:`RETRY_MAX`, logged as `what` at WARNING the first time and at DEBUG after;
        :class:`CursorMoved` moves the place first. When the slot is lost (on PostgreSQL, its
        connection), it is taken again and the place read again.
        """
        try:
            while not stop.is_set():
                if not self.acquire(stop):
                    return
                self._lead(stop, start, step, what, logger)
        finally:
            self.release()

    def _lead(self, stop: threading.Event, start: Callable[[], int],
              step: Callable[[int], tuple[int, bool]], what: str,
              logger: logging.Logger) -> None:
        cursor: int | None = None
        pause = RETRY_FIRST
        while not stop.is_set():
            try:
                if not self.held():
                    return  # another process may hold it now: take it again, read the place
                if cursor is None:
                    cursor = start()
                cursor, busy = step(cursor)
                pause = RETRY_FIRST
            except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out
                if isinstance(exc, CursorMoved):
                    cursor = exc.cursor
                (logger.warning if pause == RETRY_FIRST else logger.debug)(
                    "%s: %s; next try in %.0f s", what, str(exc) or type(exc).__name__, pause)
                stop.wait(pause)
                pause = min(RETRY_MAX, pause * 2)
                continue
            if not busy:
                stop.wait(POLL_SECONDS)

    # -- holding it ------------------------------------------------------------------------

    def acquire(self, stop: threading.Event) -> bool:
        """Wait until this process holds the slot (True) or `stop` is set (False)."""
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the database unreachable: try again
                if self._try():
                    return True
            stop.wait(WAIT_SECONDS)
        return False

    def _try(self) -> bool:
        if not self.shared:
            if self._fd is None:
                self._fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT,
                                   0o600)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another worker follows for this destination
                return False
            return True
        conn = self.index.writer.connect()
        try:
            took = conn.execute(sql_text("SELECT pg_try_advisory_lock(:a, :b)"),
                                {"a": _LOCK_CLASS, "b": self._key}).scalar()
            conn.commit()
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        if not took:
            conn.close()
            return False
        self._conn = conn
        return True

    def held(self) -> bool:
        """Whether this process still holds the slot (on PostgreSQL: its lock's connection is
        alive; a lost one lets another node take the slot, and this one must take it again
        and read the place then)."""
        if not self.shared:
            return self._fd is not None
        if self._conn is None:
            return False
        try:
            self._conn.execute(sql_text("SELECT 1"))
            self._conn.commit()
            return True
        except Exception:  # noqa: BLE001 - the connection, and so the lock, are gone
            self._drop()
            return False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()  # closes it: the session's advisory lock goes with it
            with contextlib.suppress(Exception):
                conn.close()

    # -- the place ---------------------------------------------------------------------------

    def load(self) -> dict[str, Any] | None:
        """The state saved last, or None (none, or unreadable). On PostgreSQL without a saved
        state, the one this node's data directory kept before the index held them (index
        revision 0008): an upgrade must not drop what was still to be sent."""
        if not self.shared:
            return self._kept_here()
        with self.index.reader.connect() as conn:
            raw = conn.execute(select(follower.c.state)
                               .where(follower.c.name == self.name)).scalar()
        return self._kept_here() if raw is None else _state(raw)

    def _kept_here(self) -> dict[str, Any] | None:
        """The state file of this data directory (on PostgreSQL, what this node kept before
        index revision 0008), or None."""
        try:
            return _state(self.path.read_text())
        except OSError:
            return None

    def within_log(self, cursor: int, save: Callable[[int], None], what: str,
                   logger: logging.Logger) -> int:
        """`cursor`, a place saved in the change log, or the log's end (then saved with
        `save`) when it is past it: an index restored from a backup older than the place
        (whose next changes take the numbers again) would otherwise have them passed over as
        done."""
        last = self.index.last_change()
        if cursor <= last:
            return cursor
        logger.warning("%s: the saved place (change %d) is past the end of the change log "
                       "(change %d): the index was restored from an older backup? going on "
                       "from its end", what, cursor, last)
        save(last)
        return last

    def save(self, state: dict[str, Any]) -> None:
        """Replace the saved state (durably: fsync'd, or committed)."""
        text = json.dumps(state)
        if not self.shared:
            tmp = self.path.with_suffix(".tmp")
            _write(tmp, text)
            tmp.replace(self.path)
            return
        now = datetime.now(UTC)
        with self.index.write_transaction() as conn:
            done = conn.execute(update(follower).where(follower.c.name == self.name)
                                .values(state=text, updated_at=now))
            if done.rowcount == 0:
                conn.execute(follower.insert().values(name=self.name, state=text,
                                                      updated_at=now))

    def create(self, state: dict[str, Any]) -> bool:
        """Save `state` unless a state is saved already; True when this call saved it. On
        PostgreSQL, the state this node's data directory kept before the index held them is
        saved instead of `state` when there is one."""
        if self.shared:
            state = self._kept_here() or state
        text = json.dumps(state)
        if not self.shared:
            if self.path.exists():
                return False
            tmp = self.path.with_name(f"{self.path.stem}.{os.getpid()}.new")
            _write(tmp, text)
            try:
                os.link(tmp, self.path)  # a link does not replace a file another wrote first
                return True
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        with self.index.write_transaction() as conn:
            # The row it inserted, or none (rowcount is -1 here, whatever happened).
            done = conn.execute(pg_insert(follower).values(
                name=self.name, state=text, updated_at=datetime.now(UTC))
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(follower.c.name))
            return done.first() is not None


def _state(raw: str) -> dict[str, Any] | None:
    """A saved state's JSON text as a dict, or None (unreadable, or no object)."""
    try:
        state = json.loads(raw)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def _write(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
