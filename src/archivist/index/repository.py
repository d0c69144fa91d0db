"""The metadata index: stores committed in groups (one transaction per group), streaming reads.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` (a committed row survives
power loss) and a busy timeout, so ``archivist serve`` and ``archivist import`` can write to the
same index from different processes; writes take the lock up front (``BEGIN IMMEDIATE``) and, in
one process, go through one lock. SQL stays SQLAlchemy Core so PostgreSQL can follow.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    LABEL_STYLE_TABLENAME_PLUS_COL,
    Engine,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

from archivist.core.levels import KEYS, MatchKind
from archivist.core.matching import CodeConstraint, CodeItem, Constraint, Query, normalise_pn
from archivist.errors import ArchivistError, IndexError_, QueryError, UIDConflict
from archivist.index.extract import ExtractedRows, ValidationRecord
from archivist.index.schema import (
    COLUMN_OF,
    TABLES_AT_LEVEL,
    change,
    instance,
    instance_code,
    patient,
    series,
    study,
    validation_finding,
)


@dataclass(frozen=True)
class BlobInfo:
    """What the blob store reported for the bytes of one instance."""

    storage_key: str
    size: int
    sha256: str
    transfer_syntax_uid: str


@dataclass(frozen=True)
class AddOutcome:
    """Result of :meth:`Index.add_instance`."""

    status: str  # "added", "exists", "replaced"
    change_seq: int
    old_storage_key: str | None = None
    #: A remark for the sender (no patient data): the object was filed differently from what
    #: it says (its Patient ID differs from its study's).
    note: str | None = None


@dataclass(frozen=True)
class AddRequest:
    """One instance for :meth:`Index.add_instances` (the arguments of :meth:`Index.add_instance`)."""

    rows: ExtractedRows
    blob: BlobInfo
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    source_aet: str | None
    source_address: str | None
    policy: str
    validation: ValidationRecord | None = None


@dataclass
class _StudyState:
    pk: int
    patient_pk: int
    modalities: str
    sop_classes: str
    changed: bool = False


class _Batch:
    """What one group transaction changed, so each aggregate row is written once."""

    def __init__(self) -> None:
        self.studies: dict[str, _StudyState] = {}  # by Study Instance UID
        self.series: dict[str, tuple[int, int]] = {}  # (pk, study pk) by Series Instance UID
        self.series_agg: dict[int, list[int]] = {}  # pk -> [new instances, change seq]
        self.study_agg: dict[int, list[Any]] = {}  # pk -> [instances, series, seq, state]
        self.patient_agg: dict[int, list[int]] = {}  # pk -> [instances, series, studies]
        self.touched: dict[tuple[str, int], int] = {}  # (table, pk) -> seq, replaced rows

    def count(self, series_pk: int, st: _StudyState, seq: int, new_series: bool,
              new_study: bool) -> None:
        agg = self.series_agg.setdefault(series_pk, [0, 0])
        agg[0] += 1
        agg[1] = seq
        sagg = self.study_agg.setdefault(st.pk, [0, 0, 0, st])
        sagg[0] += 1
        sagg[1] += int(new_series)
        sagg[2] = seq
        pagg = self.patient_agg.setdefault(st.patient_pk, [0, 0, 0])
        pagg[0] += 1
        pagg[1] += int(new_series)
        pagg[2] += int(new_study)

    def touch(self, series_pk: int, study_pk: int, seq: int) -> None:
        self.touched[("series", series_pk)] = seq
        self.touched[("study", study_pk)] = seq

    def flush(self, conn: Any, sql: _Sql, now: datetime) -> None:
        for pk, (n, seq) in self.series_agg.items():
            seq = max(seq, self.touched.pop(("series", pk), 0))
            sql.update(conn, series, pk, {"number_of_series_related_instances": n},
                       {"change_seq": seq})
        for pk, (n, n_series, seq, st) in self.study_agg.items():
            seq = max(seq, self.touched.pop(("study", pk), 0))
            added = {"number_of_study_related_instances": n}
            if n_series:
                added["number_of_study_related_series"] = n_series
            values: dict[str, Any] = {"updated_at": now, "change_seq": seq}
            if st.changed:
                values.update(modalities_in_study=st.modalities,
                              sop_classes_in_study=st.sop_classes)
            sql.update(conn, study, pk, added, values)
        for pk, (n, n_series, n_studies) in self.patient_agg.items():
            sql.update(conn, patient, pk, {"number_of_patient_related_instances": n,
                                           "number_of_patient_related_series": n_series,
                                           "number_of_patient_related_studies": n_studies}, {})
        # Rows only a replacement touched got their change_seq from _touch_series_study already.


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _wildcard_to_like(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(_escape_like(ch))
    return "".join(out)


def _literal_prefix(pattern: str) -> str:
    """The characters of a C-FIND wildcard pattern before its first ``*`` or ``?``."""
    for i, ch in enumerate(pattern):
        if ch in "*?":
            return pattern[:i]
    return pattern


def _prefix_range(col: Any, prefix: str) -> list[Any]:
    """``col >= prefix`` and ``col <`` the smallest string above every string that starts with
    `prefix`, for a column compared byte by byte (SQLite's BINARY: UTF-8 order is code point
    order). The upper bound is left out when the last character cannot be incremented."""
    parts = [col >= prefix]
    last = ord(prefix[-1])
    if last < 0x10FFFF:
        nxt = last + 1 if not 0xD800 <= last + 1 <= 0xDFFF else 0xE000
        parts.append(col < prefix[:-1] + chr(nxt))
    return parts


class _Sql:
    """The few statements every stored instance runs, made cheap.

    On SQLite they go straight to the driver's cursor with SQL built once per table and the
    column types' own bind processors (the same values SQLAlchemy would write; column defaults
    applied the same way), inside the transaction SQLAlchemy opened: SQLAlchemy's per-statement
    work (cache keys, compilation lookup, result objects) cost more than SQLite itself. Other
    databases use SQLAlchemy Core as everywhere else.
    """

    def __init__(self, dialect: Any) -> None:
        self.raw = dialect.name == "sqlite" and dialect.paramstyle == "qmark"
        self.dialect = dialect
        self._inserts: dict[str, tuple[str, list[tuple[str, Any, Any]]]] = {}
        self._selects: dict[tuple[str, tuple[str, ...], tuple[str, ...]], str] = {}
        self._processors: dict[tuple[str, str], Any] = {}

    def _insert_plan(self, table: Any) -> tuple[str, list[tuple[str, Any, Any]]]:
        plan = self._inserts.get(table.name)
        if plan is None:
            cols = []
            for c in table.columns:
                if c.primary_key and c.autoincrement in (True, "auto"):
                    continue
                default = c.default.arg if c.default is not None and c.default.is_scalar else None
                cols.append((c.name, c.type.bind_processor(self.dialect), default))
            names = ", ".join(n for n, _, _ in cols)
            marks = ", ".join("?" for _ in cols)
            plan = (f"INSERT INTO {table.name} ({names}) VALUES ({marks})", cols)
            self._inserts[table.name] = plan
        return plan

    @staticmethod
    def _params(cols: list[tuple[str, Any, Any]], values: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, proc, default in cols:
            v = values.get(name, default)
            out.append(proc(v) if proc is not None and v is not None else v)
        return out

    def insert(self, conn: Any, table: Any, values: Mapping[str, Any]) -> int:
        """Insert one row; returns its primary key."""
        if not self.raw:
            return int(conn.execute(insert(table).values(**values)).inserted_primary_key[0])
        sql, cols = self._insert_plan(table)
        params = self._params(cols, values)
        with self._translated(sql, params):
            cur = conn.connection.driver_connection.execute(sql, params)
        return int(cur.lastrowid)

    @contextlib.contextmanager
    def _translated(self, sql: str, params: Any) -> Iterator[None]:
        """Driver errors raised as SQLAlchemy's (IntegrityError, OperationalError, ...), as
        the statements SQLAlchemy runs raise them."""
        dbapi = self.dialect.loaded_dbapi
        try:
            yield
        except dbapi.Error as exc:
            raise DBAPIError.instance(sql, params, exc, dbapi.Error) from exc

    def insert_many(self, conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if not self.raw:
            conn.execute(insert(table), rows)
            return
        sql, cols = self._insert_plan(table)
        params = [self._params(cols, r) for r in rows]
        with self._translated(sql, params):
            conn.connection.driver_connection.executemany(sql, params)

    def update(self, conn: Any, table: Any, pk: int, added: Mapping[str, int],
               values: Mapping[str, Any]) -> None:
        """``UPDATE table SET col = col + n (added), col = value (values) WHERE pk = pk``."""
        if not self.raw:
            expr: dict[str, Any] = {c: table.c[c] + n for c, n in added.items()}
            expr.update(values)
            conn.execute(update(table).where(table.c.pk == pk).values(expr))
            return
        sets = [f"{c} = {c} + ?" for c in added]
        params: list[Any] = list(added.values())
        for c, v in values.items():
            sets.append(f"{c} = ?")
            proc = self._processor(table, c)
            params.append(proc(v) if proc is not None and v is not None else v)
        params.append(pk)
        text = f"UPDATE {table.name} SET {', '.join(sets)} WHERE pk = ?"
        with self._translated(text, params):
            conn.connection.driver_connection.execute(text, params)

    def _processor(self, table: Any, column: str) -> Any:
        key = (table.name, column)
        try:
            return self._processors[key]
        except KeyError:
            proc = self._processors[key] = table.c[column].type.bind_processor(self.dialect)
            return proc

    def first(self, conn: Any, table: Any, columns: tuple[str, ...],
              key: str | tuple[str, ...], value: Any, *,
              lock: bool = False) -> tuple[Any, ...] | None:
        """``SELECT columns FROM table WHERE key = value``, the first row as a tuple (several
        keys: a tuple of names and a tuple of values, all equal). With `lock`, the row stays
        locked until the transaction ends (``FOR UPDATE``; SQLite's write transactions
        exclude each other already)."""
        keys = (key,) if isinstance(key, str) else key
        values = (value,) if isinstance(key, str) else tuple(value)
        if not self.raw:
            query = select(*(table.c[c] for c in columns)).where(
                *(table.c[k] == v for k, v in zip(keys, values)))
            row = conn.execute(query.with_for_update() if lock else query).first()
            return tuple(row) if row is not None else None
        sql = self._selects.get((table.name, columns, keys))
        if sql is None:
            where = " AND ".join(f"{k} = ?" for k in keys)
            sql = f"SELECT {', '.join(columns)} FROM {table.name} WHERE {where} LIMIT 1"
            self._selects[(table.name, columns, keys)] = sql
        with self._translated(sql, values):
            row = conn.connection.driver_connection.execute(sql, values).fetchone()
        return tuple(row) if row is not None else None


#: The PostgreSQL advisory lock key migrations take (any constant: "ARCHIVIS" in ASCII).
_MIGRATE_LOCK = 0x4152434849564953
#: The PostgreSQL advisory lock every write transaction takes first ("ARCHIVIW"): see
#: :meth:`Index.write_transaction`.
_WRITE_LOCK = 0x4152434849564957


class Index:
    """The archive's metadata index.

    Parameters
    ----------
    url
        SQLAlchemy URL, e.g. ``sqlite:////path/index.sqlite``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._write_lock = threading.Lock()
        self.writer = self._make_engine(immediate=True)
        self.reader = self._make_engine(immediate=False)
        #: Text comparisons are by code point (SQLite BINARY), so a prefix is a range that an
        #: index answers; not assumed elsewhere (PostgreSQL compares in the column's collation).
        self._binary_ranges = self.reader.dialect.name == "sqlite"
        self._sql = _Sql(self.writer.dialect)
        self._lock_fd: int | None = None
        self._lock_pid = 0
        self._held: Any = None  # the write connection kept open (see _writer_connection)
        self._held_pid = 0

    # -- engines -------------------------------------------------------------------------------

    def _make_engine(self, *, immediate: bool) -> Engine:
        if not self.is_sqlite:
            return create_engine(self.url, pool_pre_ping=True)
        engine = create_engine(
            self.url,
            connect_args={"check_same_thread": False, "timeout": 60},
            pool_size=8,
            max_overflow=32,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA case_sensitive_like=ON")
            cur.close()

        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # On the driver's connection: SQLAlchemy's statement pipeline (context, cursor,
            # result) cost more than the BEGIN itself, once per write transaction.
            with self._sql._translated(begin, ()):
                conn.connection.driver_connection.execute(begin)

        return engine

    def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision (idempotent, safe across processes)."""
        from alembic import command
        from alembic.config import Config

        lock_file = None
        if self.is_sqlite:
            db_path = self._sqlite_path()
            db_path.parent.mkdir(parents=True, exist_ok=True)
            lock_file = open(db_path.with_suffix(".migrate.lock"), "w")  # noqa: SIM115
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            cfg = Config()
            cfg.set_main_option("script_location", "archivist.index:migrations")
            with self.writer.connect() as conn:
                if not self.is_sqlite:
                    # Every worker (and node) migrates at start: one at a time, by a lock held
                    # until this connection ends (two CREATE TABLEs of a new database collide).
                    conn.execute(sql_text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATE_LOCK})
                    conn.commit()
                try:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                    conn.commit()
                finally:
                    if not self.is_sqlite:
                        conn.rollback()
                        conn.execute(sql_text("SELECT pg_advisory_unlock(:key)"),
                                     {"key": _MIGRATE_LOCK})
                        conn.commit()
        finally:
            if lock_file is not None:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
                lock_file.close()

    def close(self) -> None:
        with self._write_lock:
            self._drop_writer_connection()
        self.writer.dispose()
        self.reader.dispose()
        if self._lock_fd is not None and self._lock_pid == os.getpid():
            os.close(self._lock_fd)
        self._lock_fd = None

    # -- writes --------------------------------------------------------------------------------

    def add_instance(
        self,
        rows: ExtractedRows,
        blob: BlobInfo,
        *,
        sop_instance_uid: str,
        sop_class_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        source_aet: str | None,
        source_address: str | None,
        policy: str,
        validation: ValidationRecord | None = None,
    ) -> AddOutcome:
        """Record one stored instance with its aggregates and a change row, in one transaction.

        The instance's coded concepts (``rows.codes``) and the outcome of its validation (None:
        not validated) are written in the same transaction.

        With ``policy="keep"`` or ``"reject"`` an existing SOP Instance UID leaves the index as it
        is and returns ``status="exists"``; with ``"replace"`` the instance row points at the new
        blob and the old storage key is returned for deletion.

        Raises
        ------
        UIDConflict
            The Series Instance UID is already stored under another study, or (``replace``) the
            SOP Instance UID under another series or study; nothing was written.
        IndexError_
            The database failed (after SQLite's busy timeout, or a broken constraint).
        """
        outcome = self.add_instances([AddRequest(
            rows, blob, sop_instance_uid=sop_instance_uid, sop_class_uid=sop_class_uid,
            study_instance_uid=study_instance_uid, series_instance_uid=series_instance_uid,
            source_aet=source_aet, source_address=source_address, policy=policy,
            validation=validation)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def add_instances(self, requests: Sequence[AddRequest]) -> list[AddOutcome | ArchivistError]:
        """Record several stored instances in ONE transaction (group commit): one commit, one
        fsync of the write-ahead log, for all of them; the aggregates of a series, study and
        patient are updated once per group.

        Each request gets its own outcome (in order): an :class:`AddOutcome`, or the error that
        refused it: :class:`~archivist.errors.UIDConflict` (its UIDs contradict what is stored;
        it wrote nothing, the others of the group are committed) or
        :class:`~archivist.errors.IndexError_`. When the group's transaction fails, every
        request is tried again alone, so one bad request fails only itself.
        """
        if not requests:
            return []
        try:
            with self.write_transaction() as conn:
                # Taken once the write lock is held, not before waiting for it: the change
                # rows and Study Update DateTimes then follow the order of the commits (a
                # group that waited behind a long delete or another process's group would
                # otherwise be stamped before changes committed ahead of it, and a client
                # syncing by Study Update DateTime ranges would miss it).
                now = _utcnow()
                batch = _Batch()
                outcomes: list[AddOutcome | ArchivistError] = [
                    self._add_one(conn, r, now, batch) for r in requests]
                batch.flush(conn, self._sql, now)
            return outcomes
        except SQLAlchemyError as exc:
            if len(requests) == 1:
                return [self._refusal(requests[0], exc)]
        return [self.add_instances([r])[0] for r in requests]

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[Any]:
        """A write transaction: this process's write lock, then (SQLite) a lock shared with the
        other processes writing to the same index, then ``BEGIN IMMEDIATE``.

        SQLite makes a second writer poll with growing sleeps (its busy handler, up to 100 ms
        at a time) while the first commits; waiting on a file lock instead wakes it the moment
        the lock is free, so worker processes hand the index to each other without stalls.

        On PostgreSQL every write transaction first takes one advisory lock, held until it
        ends, shared by every worker and node: the change log's sequence numbers are then
        handed out in the order the transactions commit. Without it, a transaction of one
        node took number N, another node's took N+1 and committed first, and whoever follows
        the log (``GET /api/changes?since=``, forwarding, IAN) read N+1, moved past N and
        never saw it (SQLite writes one transaction at a time anyway).
        """
        with self._write_lock:
            fd = self._process_lock()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                conn = self._writer_connection()
                try:
                    with conn.begin():
                        if not self.is_sqlite:
                            conn.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"),
                                         {"key": _WRITE_LOCK})
                        yield conn
                except BaseException:
                    # A failed transaction may leave the connection unusable: start afresh.
                    self._drop_writer_connection()
                    raise
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _writer_connection(self) -> Any:
        """This process's write connection, kept open between transactions (under
        ``_write_lock``): checking one out of the pool and back for every group commit cost
        a busy ingest ~5 % of its time (the pool's reset on return is a ROLLBACK)."""
        pid = os.getpid()
        if self._held is None or self._held_pid != pid:
            self._held = self.writer.connect()
            self._held_pid = pid
        return self._held

    def _drop_writer_connection(self) -> None:
        held, self._held = self._held, None
        if held is not None and self._held_pid == os.getpid():
            with contextlib.suppress(Exception):
                held.close()

    def _process_lock(self) -> int | None:
        """This process's descriptor of ``<index>.write.lock`` (opened after a fork, never
        inherited: a lock on a shared descriptor would not keep processes apart)."""
        if not self.is_sqlite:
            return None
        pid = os.getpid()
        if self._lock_fd is None or self._lock_pid != pid:
            db_path = self._sqlite_path()
            if db_path.name in ("", ":memory:"):
                return None
            self._lock_fd = os.open(f"{db_path}.write.lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_pid = pid
        return self._lock_fd

    def _sqlite_path(self) -> Path:
        """The database file of a ``sqlite:///PATH`` URL."""
        return Path(self.url.split("///", 1)[1])

    def _refusal(self, request: AddRequest, exc: SQLAlchemyError) -> AddOutcome | IndexError_:
        # A concurrent writer in another process stored the same UID first; any other broken
        # constraint (or a trigger's RAISE) is a failure, not a duplicate.
        if isinstance(exc, IntegrityError) and \
                self.get_instance(request.sop_instance_uid) is not None:
            return AddOutcome("exists", 0)
        cause = str(getattr(exc, "orig", "") or "")
        if "full" in cause.lower():  # SQLITE_FULL: "database or disk is full"
            return IndexError_("index write failed: the disk holding the index is full")
        return IndexError_(f"index write failed: {type(exc).__name__}")

    def _add_one(self, conn: Any, r: AddRequest, now: datetime,
                 batch: _Batch) -> AddOutcome | UIDConflict:
        """Write one request in the group's transaction. A refusal (:class:`UIDConflict`) is
        decided before this request writes anything, so the group's transaction goes on."""
        rows, blob, sql = r.rows, r.blob, self._sql
        # Locked for a replacement: two nodes replacing one instance at once would both read
        # the same old storage key, and the copy stored between them would have no row.
        found = sql.first(conn, instance, ("pk", "storage_key", "sop_class_uid"),
                          "sop_instance_uid", r.sop_instance_uid, lock=r.policy == "replace")
        if found is not None:
            if r.policy != "replace":
                return AddOutcome("exists", 0)
            existing_pk, existing_key, old_class = int(found[0]), str(found[1]), str(found[2])
            moved = self._replacement_conflict(conn, existing_pk, r)
            if moved is not None:
                return moved
            seq = self._change(conn, "replaced", "IMAGE", r.study_instance_uid,
                               r.series_instance_uid, r.sop_instance_uid, now)
            values = dict(rows.instance)
            values.update(
                sop_class_uid=r.sop_class_uid, transfer_syntax_uid=blob.transfer_syntax_uid,
                size=blob.size, sha256=blob.sha256, storage_key=blob.storage_key,
                received_at=now, source_aet=r.source_aet, source_address=r.source_address,
                change_seq=seq, attrs=rows.attrs_json,
            )
            values.pop("sop_instance_uid", None)
            values.update(self._validation_values(r.validation))
            conn.execute(update(instance).where(instance.c.pk == existing_pk).values(values))
            parents = self._touch_series_study(conn, existing_pk, seq, now)
            conn.execute(delete(instance_code).where(instance_code.c.instance_pk == existing_pk))
            conn.execute(delete(validation_finding)
                         .where(validation_finding.c.instance_pk == existing_pk))
            if parents is not None:
                batch.touch(parents[0], parents[1], seq)
                self._add_details(conn, existing_pk, parents[0], parents[1], rows, r.validation)
                self._refresh_parents(conn, parents[0], parents[1], r, old_class, batch)
            return AddOutcome("replaced", seq, existing_key)

        # The series first, read only: a Series Instance UID stored under another study
        # refuses the object before anything of it is written (PS3.5 9: one UID, one series).
        known_series = batch.series.get(r.series_instance_uid)
        if known_series is None:
            serow = sql.first(conn, series, ("pk", "study_pk"), "series_instance_uid",
                              r.series_instance_uid)
            if serow is not None:
                known_series = (int(serow[0]), int(serow[1]))
        st = batch.studies.get(r.study_instance_uid)
        if st is None:
            study_row = sql.first(conn, study, ("pk", "patient_pk", "modalities_in_study",
                                                "sop_classes_in_study"),
                                  "study_instance_uid", r.study_instance_uid)
            if study_row is not None:
                st = _StudyState(int(study_row[0]), int(study_row[1]), study_row[2] or "\\",
                                 study_row[3] or "\\")
        if known_series is not None and (st is None or st.pk != known_series[1]):
            return self._series_conflict(conn, r, known_series[1])
        note = None
        if st is not None and r.study_instance_uid not in batch.studies:
            note = self._patient_differs(conn, st, rows.patient)
        seq = self._change(conn, "stored", "IMAGE", r.study_instance_uid,
                           r.series_instance_uid, r.sop_instance_uid, now)
        new_study = new_series = False
        if r.study_instance_uid not in batch.studies:
            if st is None:
                prow = sql.first(conn, patient, ("pk",), ("patient_id", "issuer_of_patient_id"),
                                 (rows.patient["patient_id"], rows.patient["issuer_of_patient_id"]))
                if prow is None:
                    patient_pk = sql.insert(conn, patient, {**rows.patient,
                                                            "attrs": rows.attrs_json})
                else:
                    patient_pk = int(prow[0])
                svalues = dict(rows.study)
                svalues.update(study_instance_uid=r.study_instance_uid, patient_pk=patient_pk,
                               attrs=rows.attrs_json, updated_at=now, change_seq=seq,
                               modalities_in_study="\\", sop_classes_in_study="\\")
                study_pk = sql.insert(conn, study, svalues)
                st = _StudyState(study_pk, patient_pk, "\\", "\\")
                new_study = True
            batch.studies[r.study_instance_uid] = st
        assert st is not None
        if known_series is None:
            sevalues = dict(rows.series)
            sevalues.update(series_instance_uid=r.series_instance_uid, study_pk=st.pk,
                            attrs=rows.attrs_json, change_seq=seq)
            series_pk = sql.insert(conn, series, sevalues)
            new_series = True
            batch.series[r.series_instance_uid] = (series_pk, st.pk)
        else:
            series_pk = known_series[0]
            batch.series[r.series_instance_uid] = known_series
        ivalues = dict(rows.instance)
        ivalues.update(
            series_pk=series_pk, sop_instance_uid=r.sop_instance_uid,
            sop_class_uid=r.sop_class_uid, transfer_syntax_uid=blob.transfer_syntax_uid,
            size=blob.size, sha256=blob.sha256, storage_key=blob.storage_key,
            received_at=now, source_aet=r.source_aet, source_address=r.source_address,
            change_seq=seq, attrs=rows.attrs_json,
        )
        ivalues.update(self._validation_values(r.validation))
        instance_pk = sql.insert(conn, instance, ivalues)
        self._add_details(conn, instance_pk, series_pk, st.pk, rows, r.validation)
        # Aggregates: counted here, written once per group by _Batch.flush.
        # Modalities in Study: the Modality values of the study's series (PS3.4 C.3.4), so the
        # series row's, set by its first instance: an instance naming another Modality in a
        # stored series does not add it (a removal works the list out again from the series
        # rows, which would then drop it).
        modality = rows.series.get("modality") if new_series else None
        if modality and f"\\{modality}\\" not in st.modalities:
            st.modalities = f"{st.modalities}{modality}\\"
            st.changed = True
        if f"\\{r.sop_class_uid}\\" not in st.sop_classes:
            st.sop_classes = f"{st.sop_classes}{r.sop_class_uid}\\"
            st.changed = True
        batch.count(series_pk, st, seq, new_series, new_study)
        return AddOutcome("added", seq, note=note)

    def _patient_differs(self, conn: Any, st: _StudyState,
                         values: Mapping[str, Any]) -> str | None:
        """A remark when an object of a stored study names another patient than the study's
        (Patient ID, or its issuer): it is filed under the study's patient, as dcm4chee does by
        default ("MERGED"), and C-FIND answers with that patient's ID. Once per study and
        group (the next objects of a study in the same group are not looked at again)."""
        given = (str(values.get("patient_id") or ""),
                 str(values.get("issuer_of_patient_id") or ""))
        if not given[0]:
            return None
        row = self._sql.first(conn, patient, ("patient_id", "issuer_of_patient_id"), "pk",
                              st.patient_pk)
        if row is None or (str(row[0] or ""), str(row[1] or "")) == given:
            return None
        return ("Patient ID differs from the one its study was stored under: filed under that "
                "patient")

    def _series_conflict(self, conn: Any, r: AddRequest, study_pk: int) -> UIDConflict:
        """The refusal of an object whose Series Instance UID is stored under another study
        (`study_pk`); the reason comes first, as a C-STORE Error Comment keeps 64 characters."""
        row = self._sql.first(conn, study, ("study_instance_uid",), "pk", study_pk)
        other = str(row[0]) if row is not None else "?"
        return UIDConflict(f"Series Instance UID already belongs to another study: series "
                           f"{r.series_instance_uid} is in study {other}, not in "
                           f"{r.study_instance_uid}")

    def _replacement_conflict(self, conn: Any, instance_pk: int,
                              r: AddRequest) -> UIDConflict | None:
        """Duplicate policy ``replace``: the refusal of a new copy of a stored instance that
        names another series or study than the stored one (replacing it in place would leave it
        under the old series while its header names another; moving instances between series
        and studies is not what a store does), else None."""
        row = conn.execute(
            select(series.c.series_instance_uid, study.c.study_instance_uid)
            .select_from(instance.join(series, instance.c.series_pk == series.c.pk)
                         .join(study, series.c.study_pk == study.c.pk))
            .where(instance.c.pk == instance_pk)
        ).first()
        if row is None:
            return None
        if row.series_instance_uid != r.series_instance_uid:
            return UIDConflict(f"SOP Instance UID already stored in another series: "
                               f"{r.sop_instance_uid} is in series {row.series_instance_uid}, "
                               f"not in {r.series_instance_uid}")
        if row.study_instance_uid != r.study_instance_uid:
            return UIDConflict(f"SOP Instance UID already stored in another study: "
                               f"{r.sop_instance_uid} is in study {row.study_instance_uid}, "
                               f"not in {r.study_instance_uid}")
        return None

    def _change(self, conn: Any, kind: str, level: str, study_uid: str | None,
                series_uid: str | None, sop_uid: str | None, now: datetime) -> int:
        return self._sql.insert(conn, change, {
            "kind": kind, "level": level, "study_instance_uid": study_uid,
            "series_instance_uid": series_uid, "sop_instance_uid": sop_uid, "at": now,
        })

    def _touch_series_study(self, conn: Any, instance_pk: int, seq: int,
                            now: datetime) -> tuple[int, int] | None:
        row = conn.execute(
            select(series.c.pk, series.c.study_pk)
            .select_from(instance.join(series, instance.c.series_pk == series.c.pk))
            .where(instance.c.pk == instance_pk)
        ).first()
        if row is None:
            return None
        conn.execute(update(series).where(series.c.pk == row.pk).values(change_seq=seq))
        conn.execute(update(study).where(study.c.pk == row.study_pk)
                     .values(change_seq=seq, updated_at=now))
        return int(row.pk), int(row.study_pk)

    def _refresh_parents(self, conn: Any, series_pk: int, study_pk: int, r: AddRequest,
                         old_class: str, batch: _Batch) -> None:
        """Duplicate policy ``replace``: the series, study and patient rows take the values of
        the new version of an instance (its series and study attributes, and its patient's
        when it names the patient its study is filed under), so C-FIND and QIDO-RS answer what
        is stored, as Orthanc's ``OverwriteInstances`` and dcm4chee's MERGE update policy do.
        Modalities and SOP Classes in Study are worked out again when the new version changed
        its series' Modality or its SOP Class."""
        rows = r.rows
        old_modality = conn.execute(select(series.c.modality)
                                    .where(series.c.pk == series_pk)).scalar()
        svalues = {k: v for k, v in rows.series.items() if k != "series_instance_uid"}
        svalues["attrs"] = rows.attrs_json
        conn.execute(update(series).where(series.c.pk == series_pk).values(svalues))
        stvalues = {k: v for k, v in rows.study.items() if k != "study_instance_uid"}
        stvalues.setdefault("referring_physician_name_norm", None)
        stvalues["attrs"] = rows.attrs_json
        conn.execute(update(study).where(study.c.pk == study_pk).values(stvalues))
        prow = conn.execute(
            select(patient.c.pk, patient.c.patient_id, patient.c.issuer_of_patient_id)
            .select_from(study.join(patient, study.c.patient_pk == patient.c.pk))
            .where(study.c.pk == study_pk)).first()
        given = (rows.patient.get("patient_id") or "", rows.patient.get("issuer_of_patient_id")
                 or "")
        if prow is not None and (prow.patient_id or "", prow.issuer_of_patient_id or "") == given:
            pvalues = {k: v for k, v in rows.patient.items()
                       if k not in ("patient_id", "issuer_of_patient_id")}
            pvalues.setdefault("patient_name_norm", None)
            pvalues["attrs"] = rows.attrs_json
            conn.execute(update(patient).where(patient.c.pk == prow.pk).values(pvalues))
        if old_modality == rows.series.get("modality") and old_class == r.sop_class_uid:
            return
        modalities = conn.execute(
            select(series.c.modality)
            .where(series.c.study_pk == study_pk, series.c.modality.is_not(None),
                   series.c.modality != "")
            .group_by(series.c.modality).order_by(func.min(series.c.pk))).scalars().all()
        classes = conn.execute(
            select(instance.c.sop_class_uid)
            .select_from(instance.join(series, instance.c.series_pk == series.c.pk))
            .where(series.c.study_pk == study_pk)
            .group_by(instance.c.sop_class_uid).order_by(func.min(instance.c.pk))
        ).scalars().all()
        mod_text = "\\" + "".join(f"{m}\\" for m in modalities)
        class_text = "\\" + "".join(f"{c}\\" for c in classes)
        conn.execute(update(study).where(study.c.pk == study_pk).values(
            modalities_in_study=mod_text, sop_classes_in_study=class_text))
        for st in batch.studies.values():
            if st.pk == study_pk:
                st.modalities, st.sop_classes, st.changed = mod_text, class_text, True

    @staticmethod
    def _validation_values(validation: ValidationRecord | None) -> dict[str, Any]:
        if validation is None:
            return {"validation_errors": None, "validation_warnings": None}
        return {"validation_errors": validation.errors,
                "validation_warnings": validation.warnings}

    def _add_details(self, conn: Any, instance_pk: int, series_pk: int, study_pk: int,
                     rows: ExtractedRows, validation: ValidationRecord | None) -> None:
        """Insert the coded concepts and validation findings of one instance."""
        if rows.codes:
            self._sql.insert_many(conn, instance_code, [
                {"instance_pk": instance_pk, "series_pk": series_pk, "study_pk": study_pk,
                 "attribute": c.attribute, "origin": c.origin, "scheme": c.scheme,
                 "value": c.value, "original_scheme": c.original_scheme,
                 "original_value": c.original_value, "meaning": c.meaning}
                for c in rows.codes
            ])
        if validation is not None and validation.findings:
            self._sql.insert_many(conn, validation_finding, [
                {"instance_pk": instance_pk, "ordinal": i, "severity": f.severity,
                 "rule_id": f.rule_id, "path": f.path, "module": f.module, "iod": f.iod,
                 "message": f.message, "reference": f.reference}
                for i, f in enumerate(validation.findings)
            ])

    # -- reads ---------------------------------------------------------------------------------

    def get_instance(self, sop_instance_uid: str) -> Mapping[str, Any] | None:
        with self.reader.connect() as conn:
            row = conn.execute(
                select(instance).where(instance.c.sop_instance_uid == sop_instance_uid)
            ).first()
            return dict(row._mapping) if row is not None else None

    def stored_copy(self, sop_instance_uid: str) -> dict[str, Any] | None:
        """Where one instance is stored now: its storage key, size, digest, SOP Class and
        transfer syntax, with the Series and Study Instance UIDs it is filed under; None when
        it is not stored (a reader whose blob went away asks whether the instance was replaced
        meanwhile, duplicate policy ``replace``, or deleted; a WADO-RS request names one
        instance).

        The statement is built once: building and caching a new one each call cost three
        times the lookup; on SQLite it goes to the driver (~40 us against ~130 through
        SQLAlchemy)."""
        with self.reader.connect() as conn:
            if self._sql.raw:
                sql = _stored_copy_sql(self.reader.dialect)
                driver: Any = conn.connection.driver_connection
                with self._sql._translated(sql, (sop_instance_uid,)):
                    row = driver.execute(sql, (sop_instance_uid,)).fetchone()
            else:
                row = conn.execute(_STORED_COPY, {"sop": sop_instance_uid}).first()
        return dict(zip(_STORED_COPY_KEYS, row)) if row is not None else None

    def series_present(self, pks: Iterable[int]) -> set[int]:
        """Which of the series row keys `pks` are still in the index."""
        wanted = sorted(set(pks))
        found: set[int] = set()
        with self.reader.connect() as conn:
            for i in range(0, len(wanted), 500):
                found.update(int(r[0]) for r in conn.execute(
                    select(series.c.pk).where(series.c.pk.in_(wanted[i:i + 500]))))
        return found

    def storage_keys(self) -> set[str]:
        with self.reader.connect() as conn:
            return {r[0] for r in conn.execute(select(instance.c.storage_key))}

    def validation_of(self, sop_instance_uid: str) -> dict[str, Any] | None:
        """The stored validation outcome of one instance, None when the instance is unknown.

        Returns
        -------
        dict or None
            ``validated`` (False when the object was stored with validation off), ``errors``,
            ``warnings`` and ``findings`` (dicts with severity, rule_id, path, module, iod,
            message, reference, in the validator's order).
        """
        with self.reader.connect() as conn:
            row = conn.execute(
                select(instance.c.pk, instance.c.sop_class_uid, instance.c.validation_errors,
                       instance.c.validation_warnings)
                .where(instance.c.sop_instance_uid == sop_instance_uid)
            ).first()
            if row is None:
                return None
            found = conn.execute(
                select(validation_finding.c.severity, validation_finding.c.rule_id,
                       validation_finding.c.path, validation_finding.c.module,
                       validation_finding.c.iod, validation_finding.c.message,
                       validation_finding.c.reference)
                .where(validation_finding.c.instance_pk == row.pk)
                .order_by(validation_finding.c.ordinal)
            )
            findings = [dict(f._mapping) for f in found]
        validated = row.validation_errors is not None
        return {
            "sop_instance_uid": sop_instance_uid,
            "sop_class_uid": row.sop_class_uid,
            "validated": validated,
            "errors": row.validation_errors if validated else None,
            "warnings": row.validation_warnings if validated else None,
            "findings": findings,
        }

    def validation_counts(self) -> dict[str, int]:
        """Instances validated on ingest, and how many of them have errors / warnings."""
        with self.reader.connect() as conn:
            row = conn.execute(select(
                func.count(instance.c.validation_errors),
                func.count().filter(instance.c.validation_errors > 0),
                func.count().filter(instance.c.validation_warnings > 0),
            )).one()
        return {"validated": int(row[0]), "with_errors": int(row[1]),
                "with_warnings": int(row[2])}

    def codes_of(self, level: str, pk: int, attribute: str) -> list[dict[str, Any]]:
        """The distinct codes the objects of one entity carry in one Code Sequence, as stored.

        Parameters
        ----------
        level
            ``PATIENT``, ``STUDY``, ``SERIES`` or ``IMAGE``; `pk` is that level's row.
        attribute
            A Code Sequence keyword; codes derived from another attribute (Body Part Examined)
            are not returned, as the objects do not carry them in that sequence.
        """
        ic = instance_code
        stmt = select(ic.c.original_scheme, ic.c.original_value, ic.c.meaning).distinct()
        if level == "PATIENT":
            stmt = stmt.select_from(ic.join(study, ic.c.study_pk == study.c.pk)).where(
                study.c.patient_pk == pk)
        else:
            stmt = stmt.where(self._code_owner(level) == pk)
        stmt = stmt.where(ic.c.attribute == attribute, ic.c.origin == attribute)
        with self.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt.order_by(ic.c.original_value))]

    @staticmethod
    def _code_owner(level: str) -> Any:
        return {"STUDY": instance_code.c.study_pk, "SERIES": instance_code.c.series_pk,
                "IMAGE": instance_code.c.instance_pk}[level]

    def counts(self) -> dict[str, int]:
        with self.reader.connect() as conn:
            return {
                t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in (patient, study, series, instance)
            }

    def last_change(self) -> int:
        with self.reader.connect() as conn:
            return int(conn.execute(select(func.max(change.c.seq))).scalar() or 0)

    def changes_since(self, seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(change).where(change.c.seq > seq).order_by(change.c.seq).limit(limit)
            )
            return [dict(r._mapping) for r in rows]

    def _condition(self, c: Constraint, pn_fold: bool) -> Any:
        table, name = COLUMN_OF[c.keyword]
        col = table.c[name]
        kind = c.kind
        if c.op == "empty":
            return self._empty_condition(col, kind)
        values = list(c.values)
        if kind is MatchKind.PN and pn_fold:
            col = table.c[f"{name}_norm"]
            values = [normalise_pn(v) for v in values]
        if kind is MatchKind.MULTI:
            return or_(*[col.like(f"%{_escape_like(chr(92) + v + chr(92))}%", escape="\\")
                         for v in values])
        if c.op == "single":
            v = values[0]
            if kind is MatchKind.INT:
                return col == int(v)
            if kind is MatchKind.PN:
                # A name given with fewer component groups than stored matches on those it
                # gives: Wang^XiaoDong (the alphabetic group) finds Wang^XiaoDong=王^小东, and
                # Yamada^Tarou=山田^太郎 finds it with its phonetic group too.
                return or_(col == v, self._starts_with(col, v + "="))
            return col == v
        if c.op == "wildcard":
            like: Any = col.like(_wildcard_to_like(values[0]), escape="\\")
            if kind is MatchKind.PN and not values[0].endswith("*"):
                like = or_(like, col.like(_wildcard_to_like(values[0]) + "=%", escape="\\"))
            if kind is MatchKind.PN and pn_fold and self._binary_ranges:
                # SQLite uses an index for LIKE only on a NOCASE column; the folded name
                # column is BINARY, so the literal prefix is also given as a range the index
                # answers (both sides are folded: the range is exact, the LIKE does the rest).
                prefix = _literal_prefix(values[0])
                if prefix:
                    return and_(*_prefix_range(col, prefix), like)
            return like
        if c.op == "list":
            if kind is MatchKind.INT:
                return col.in_([int(v) for v in values if v.lstrip("-").isdigit()])
            return col.in_(values)
        if c.op == "range":
            low, high = values
            parts = []
            if low:
                parts.append(col >= low)
            if high:
                parts.append(func.substr(col, 1, len(high)) <= high)
                if self._binary_ranges:
                    # The same bound in a form the column's index answers (a date or time
                    # that starts with `high` sorts before the successor of `high`).
                    parts.extend(_prefix_range(col, high)[1:])
            parts.append(col.is_not(None))
            return and_(*parts)
        raise QueryError(f"unsupported matching on {c.keyword}")

    def _starts_with(self, col: Any, prefix: str) -> Any:
        """``col`` starts with `prefix` (exactly, case included), as a range the column's index
        answers where text compares by code point, else as a LIKE."""
        if self._binary_ranges:
            return and_(*_prefix_range(col, prefix))
        return col.like(_escape_like(prefix) + "%", escape="\\")

    @staticmethod
    def _empty_condition(col: Any, kind: MatchKind) -> Any:
        """Empty Value Matching (PS3.4 C.2.2.2.7) on an indexed column: the rows whose value is
        absent or zero length. Ingest stores those as NULL (as ``''`` for Patient ID and its
        issuer); a multi-valued aggregate without any value is ``\\``."""
        if kind is MatchKind.INT:
            return col.is_(None)
        empty = [col.is_(None), col == ""]
        if kind is MatchKind.MULTI:
            empty.append(col == "\\")
        return or_(*empty)

    @staticmethod
    def _text_condition(col: Any, c: Constraint) -> Any:
        if c.op == "single":
            return col == c.values[0]
        if c.op == "list":
            return col.in_(list(c.values))
        if c.op == "wildcard":
            return col.like(_wildcard_to_like(c.values[0]), escape="\\")
        raise QueryError(f"unsupported matching on {c.keyword}")

    def _code_item_condition(self, item: CodeItem) -> Any:
        """The stored codes that match one item of a Code Sequence query (PS3.4 C.2.2.2.6).

        An exact item matches on its normalised keys. Otherwise designator and value are
        matched as a pair, either both on the normalised code or both on the code as stored:
        a wildcard value of one scheme must not meet the designator of the other (``SCT`` with
        ``T-32*`` does not find SRT T-32000, no SCT code starting with ``T-32``).
        """
        ic = instance_code
        parts = []
        if item.keys:
            parts.append(or_(*[and_(ic.c.scheme == s, ic.c.value == v) for s, v in item.keys]))
        elif item.scheme is not None or item.value is not None:
            parts.append(or_(
                self._code_pair_condition(ic.c.scheme, ic.c.value, item),
                self._code_pair_condition(ic.c.original_scheme, ic.c.original_value, item),
            ))
        if item.meaning is not None:
            parts.append(self._text_condition(ic.c.meaning, item.meaning))
        return and_(*parts)

    def _code_pair_condition(self, scheme: Any, value: Any, item: CodeItem) -> Any:
        """The item's designator and value, those given, on one (scheme, value) column pair."""
        parts = []
        if item.scheme is not None:
            parts.append(self._text_condition(scheme, item.scheme))
        if item.value is not None:
            parts.append(self._text_condition(value, item.value))
        return and_(*parts)

    def _code_condition(self, level: str, cc: CodeConstraint) -> Any:
        """Sequence matching on a Code Sequence: the level's entities with an instance carrying
        a code that matches one of the query's items (PS3.4 C.2.2.2.6)."""
        ic = instance_code
        where = and_(ic.c.attribute == cc.sequence,
                     or_(*[self._code_item_condition(item) for item in cc.items]))
        own = TABLES_AT_LEVEL[level][0]
        if level == "PATIENT":
            sub = (select(study.c.patient_pk)
                   .select_from(ic.join(study, ic.c.study_pk == study.c.pk)).where(where))
        else:
            sub = select(self._code_owner(level)).where(where)
        return own.c.pk.in_(sub)

    def search(
        self, query: Query, *, limit: int = 0, offset: int = 0,
        hide_studies_only_of: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream the rows that match the indexed constraints of `query`, ordered by key.

        Each row maps ``table.column`` to its value for the query level and every level above.
        Constraints on keys without a column, or below the query level, are not applied here.
        With `hide_studies_only_of` (a SOP Class UID), studies whose instances are all of that
        class are left out: at STUDY level and below their rows; at PATIENT level, patients
        with no other study, and those studies' share of the patient's related counts.
        """
        tables = TABLES_AT_LEVEL[query.level.value]
        names, from_ = _level_shape(query.level.value)
        # Whole tables as the columns clause: SQLAlchemy's cache key of the statement is then a
        # few table references instead of a hundred labelled columns (its generation was ~10 %
        # of the GIL time of a WADO-RS frame request); rows are keyed by position.
        columns: list[Any] = list(tables)
        hidden_of_patient: Any = None
        if hide_studies_only_of and query.level.value == "PATIENT":
            only = f"\\{hide_studies_only_of}\\"
            hidden = (study.c.patient_pk == patient.c.pk) & (study.c.sop_classes_in_study == only)
            less = {
                "number_of_patient_related_studies": func.count(),
                "number_of_patient_related_series":
                    func.sum(study.c.number_of_study_related_series),
                "number_of_patient_related_instances":
                    func.sum(study.c.number_of_study_related_instances),
            }
            columns = [
                (col - func.coalesce(select(less[col.name]).where(hidden).scalar_subquery(), 0))
                .label(f"patient.{col.name}") if col.name in less
                else col.label(f"patient.{col.name}") for col in patient.c]
            hidden_of_patient = patient.c.pk.in_(select(study.c.patient_pk).where(
                study.c.sop_classes_in_study != only))
        conditions = []
        allowed = {t.name for t in tables}
        for c in query.constraints:
            if c.keyword in COLUMN_OF and COLUMN_OF[c.keyword][0].name in allowed:
                if KEYS[c.keyword].kind is MatchKind.COUNT:
                    continue
                conditions.append(self._condition(c, query.pn_case_insensitive))
        for cc in query.codes:
            conditions.append(self._code_condition(query.level.value, cc))
        if hide_studies_only_of and "study" in allowed:
            conditions.append(study.c.sop_classes_in_study != f"\\{hide_studies_only_of}\\")
        if hidden_of_patient is not None:
            conditions.append(hidden_of_patient)
        stmt = select(*columns).select_from(from_).set_label_style(
            LABEL_STYLE_TABLENAME_PLUS_COL)
        if conditions:
            stmt = stmt.where(and_(*conditions))
        stmt = stmt.order_by(tables[0].c.pk)
        if limit:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        try:
            with self.reader.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=200).execute(stmt)
                for row in result:
                    yield dict(zip(names, row))
        except OperationalError as exc:
            raise IndexError_(f"index read failed: {type(exc).__name__}") from exc


_STORED_COPY_KEYS = ("storage_key", "size", "sha256", "sop_class_uid", "transfer_syntax_uid",
                     "series_instance_uid", "study_instance_uid")
_STORED_COPY = (
    select(instance.c.storage_key, instance.c.size, instance.c.sha256, instance.c.sop_class_uid,
           instance.c.transfer_syntax_uid, series.c.series_instance_uid,
           study.c.study_instance_uid)
    .select_from(instance.join(series, instance.c.series_pk == series.c.pk)
                 .join(study, series.c.study_pk == study.c.pk))
    .where(instance.c.sop_instance_uid == bindparam("sop")))


@functools.cache
def _stored_copy_sql(dialect: Any) -> str:
    return str(_STORED_COPY.compile(dialect=dialect))


@functools.cache
def _level_shape(level: str) -> tuple[tuple[str, ...], Any]:
    """For a query level: the ``table.column`` name of each column of a search row, in the
    order of the tables' columns, and the join of the level's table with those above it."""
    tables = TABLES_AT_LEVEL[level]
    names = tuple(f"{t.name}.{col.name}" for t in tables for col in t.c)
    from_: Any = tables[0]
    for parent, child in zip(tables[1:], tables[:-1]):
        fk = {"instance": "series_pk", "series": "study_pk", "study": "patient_pk"}[child.name]
        from_ = from_.join(parent, child.c[fk] == parent.c.pk)
    return names, from_


def attrs_of(row: Mapping[str, Any], table_name: str) -> dict[str, Any]:
    """The stored DICOM JSON attributes of one level of a search row."""
    raw = row.get(f"{table_name}.attrs")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
