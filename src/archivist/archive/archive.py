"""The archive: one object tying the blob store and the index to ingest, search and retrieve."""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import quote

from archivist.archive.ingest import Ingest, Validator
from archivist.archive.retrieve import Retrieve
from archivist.archive.search import Search
from archivist.archive.validation import validate_on_ingest
from archivist.config import Settings
from archivist.errors import IndexLost, StorageError
from archivist.index.repository import Index
from archivist.store.blob import BlobStore, FilesystemBlobStore
from archivist.store.s3 import S3BlobStore

log = logging.getLogger("archivist.archive")

#: Where the start-up sweep puts blobs no index row names (under the data directory).
ORPHANS = "orphans"

#: The series metadata files of WADO-RS (:class:`archivist.web.dicomweb.wado.MetadataCache`),
#: under the data directory: ``series-{series pk}-{series change_seq}-{format}.json.gz``.
METADATA_CACHE = Path("cache") / "metadata"

#: The data directory (resolved) the metadata files were written for, under ``cache/``.
CACHE_ORIGIN = Path("cache") / "origin"


def lost_index(settings: Settings) -> str | None:
    """Why the archive at `settings` must not be opened, or None.

    An index file that is missing or empty while the blob store holds objects was lost (deleted,
    or a disk or copy went wrong): opening the archive would start an empty index, and every
    stored object would be an orphan. The message says how to get the objects back.

    An index at a revision this version does not know was written by a newer version (a data
    directory restored from, or downgraded after, a newer release): it is refused too, and left
    as it was (:func:`newer_index`).
    """
    index = settings.index_path
    in_bucket = False
    if settings.s3_bucket:  # checked first: a bucket that cannot be used stops everything
        try:
            in_bucket = _bucket(settings).holds_objects()
        except StorageError as exc:
            raise IndexLost(f"the object store cannot be used: {exc}") from None
    if settings.database_url:
        revision = database_revision(settings.index_url)
        if revision is not None:
            return _refusal(settings.index_location, revision, settings.data_dir,
                            lambda: database_revision(settings.index_url))
        state = "holds no index"
    else:
        try:
            if index.stat().st_size > 0:
                return newer_index(index)
        except FileNotFoundError:
            pass
        state = "is empty" if index.exists() else "is missing"
    blobs = settings.blob_dir
    if settings.s3_bucket:
        if not in_bucket:
            return None
        return (f"the index {settings.index_location} {state} but bucket {settings.s3_bucket} "
                "holds stored objects; nothing was changed. Restore the index from a backup, "
                "or copy the bucket's objects to a folder and import it: `archivist import "
                "FOLDER`")
    if not blobs.is_dir() or next((f for f in blobs.rglob("*") if f.is_file()), None) is None:
        return None
    return (f"the index {settings.index_location} {state} but {blobs} holds stored objects; "
            f"nothing was changed. Restore the index from a backup, or move {blobs} out of the "
            "data directory and import it: `archivist import MOVED_FOLDER`")


def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store `settings` name: an S3 bucket, or files under the data directory."""
    if settings.s3_bucket:
        return _bucket(settings)
    return FilesystemBlobStore(settings.blob_dir, settings.tmp_dir)


def _bucket(settings: Settings) -> S3BlobStore:
    return S3BlobStore(
        settings.s3_endpoint, settings.s3_bucket, region=settings.s3_region,
        access_key=settings.s3_access_key or os.environ.get("AWS_ACCESS_KEY_ID", ""),
        secret_key=settings.s3_secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        prefix=settings.s3_prefix, cache=Path(settings.data_dir) / "cache" / "blobs",
        tmp=settings.tmp_dir, cache_bytes=settings.s3_cache_bytes,
        timeout=settings.s3_timeout)


def index_revision(path: Path) -> str | None:
    """The Alembic revision of the SQLite index at `path`, read without writing anything; None
    when it has none or cannot be read (then opening it says why)."""
    try:
        con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=10)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def newer_index(path: Path) -> str | None:
    """Why the index at `path` must not be opened by this version now, or None: it is at a
    revision this version's migrations do not know, or it needs an upgrade while another process
    (an older version) uses the data directory. The migrations refuse both too (and indexes that
    are not a SQLite file); asked here, `serve` says it before it starts any worker."""
    revision = index_revision(path)
    if revision is None:
        return None
    return _refusal(str(path), revision, path.parent, lambda: index_revision(path))


def _refusal(where: str, revision: str, data_dir: Path,
             again: Callable[[], str | None]) -> str | None:
    """:func:`newer_index`'s verdict on an index at `revision` (`again` reads it anew)."""
    from archivist.index.migrations import (
        busy_message,
        head_revision,
        known_revisions,
        lock_held,
        newer_index_message,
    )

    head = head_revision()
    if revision not in known_revisions():
        return newer_index_message(where, revision, head)
    # The lock first: a process of this version takes it only once its upgrade is committed.
    if revision != head and lock_held(Path(data_dir) / "archivist.lock"):
        revision = again() or revision
        if revision != head:
            return busy_message(where, revision, head)
    return None


def database_revision(url: str) -> str | None:
    """The Alembic revision of the index in the database at `url`; None when it holds none
    (a new database). A database that cannot be reached raises IndexLost with the reason."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    except SQLAlchemyError as exc:
        raise IndexLost(f"the index database cannot be reached: {_reason(exc)}") from None
    finally:
        engine.dispose()
    return str(row[0]) if row else None


def _reason(exc: BaseException) -> str:
    """The driver's first line of an error (no URL, so no password)."""
    origin = getattr(exc, "orig", None) or exc
    return (str(origin).strip().splitlines() or [type(origin).__name__])[0][:300]


def _cache_key(name: str) -> tuple[int, int] | None:
    """(series pk, change sequence) of a metadata file's name, or None (not one)."""
    parts = name.split("-")
    if len(parts) < 3 or parts[0] != "series":
        return None
    seq = parts[2].split(".")[0]
    if not (parts[1].isdigit() and seq.isdigit()):
        return None
    return int(parts[1]), int(seq)


class Archive:
    """Ingest, search and retrieve over one data directory (or injected back-ends).

    Use :meth:`open` for the embedded default; it creates the directories, migrates the index
    and, when no other process is using the data directory, sweeps what a crash left behind.

    Every object stored is validated against the standard
    (:func:`archivist.archive.validation.validate_on_ingest`, or the `validator` given) unless
    ``settings.validation_policy`` is ``off``; ``warn`` keeps the findings in the index,
    ``reject`` refuses objects with errors.
    """

    def __init__(self, settings: Settings, blobs: BlobStore, index: Index,
                 validator: Validator | None = None) -> None:
        self.settings = settings
        self.blobs = blobs
        self.index = index
        self.search = Search(index, pn_case_insensitive=settings.pn_case_insensitive)
        self.retrieve = Retrieve(self.search, blobs)
        self.ingest = Ingest(settings, blobs, index, validator or validate_on_ingest)
        #: Blobs of deleted and replaced objects, listed until removed (store.removals).
        self.removals = self.ingest.removals
        self._lock_file: IO[str] | None = None

    @classmethod
    def open(cls, settings: Settings, *, validator: Validator | None = None) -> Archive:
        """Open (create) the archive of `settings`; :class:`~archivist.errors.IndexLost` when its
        index was lost while objects are stored (:func:`lost_index`)."""
        problem = lost_index(settings)
        if problem:
            raise IndexLost(problem)
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        blobs = open_blob_store(settings)  # a bucket was listed by lost_index above
        index = Index(settings.index_url)
        index.migrate()
        archive = cls(settings, blobs, index, validator)
        archive._take_lock_and_sweep()
        return archive

    def _take_lock_and_sweep(self) -> None:
        """Sweep crash leftovers only when no other process holds the data directory.

        Every process using the data directory holds ``archivist.lock`` shared. A process that
        finds it free takes it exclusively, sweeps, and turns its lock into a shared one; flock
        does that conversion by releasing first, so the whole sequence runs under a second lock
        (``archivist.start.lock``): no other process can take the free moment for a sweep of its
        own while the first one is already storing (worker processes start together).
        """
        data = Path(self.settings.data_dir)
        with open(data / "archivist.start.lock", "a+") as start:
            fcntl.flock(start, fcntl.LOCK_EX)
            fh = open(data / "archivist.lock", "a+")  # noqa: SIM115 - held while serving
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                exclusive = True
            except OSError:
                exclusive = False
            if exclusive:
                try:
                    self.sweep()
                finally:
                    fcntl.flock(fh, fcntl.LOCK_SH)
            else:
                fcntl.flock(fh, fcntl.LOCK_SH)
        self._lock_file = fh

    def sweep(self) -> dict[str, int]:
        """Remove partial writes, and move blobs no index row names (a store that a crash cut
        between its blob and its index row: never acknowledged) to ``<data>/orphans/``. They are
        moved, not deleted: an index restored from an older backup names fewer blobs than are
        stored, and those newer objects can be imported back from there.

        Index rows whose blob is missing are reported (WARNING, with a few of their SOP Instance
        UIDs), not changed: a backup that copied the blobs before the index, or while objects
        were deleted, restores rows for objects it does not hold, which then could not be
        retrieved while queries still list them."""
        removed_tmp = 0
        moved = 0
        if isinstance(self.blobs, (FilesystemBlobStore, S3BlobStore)):
            removed_tmp = self.blobs.clear_tmp()
        # The index's keys, read once and only when needed (a bucket's sweep needs them only
        # when a removal list is left).
        index_keys = functools.cache(self.index.storage_keys)
        # Blobs of objects deleted or replaced whose removal a crash or a failed unlink cut
        # short: removed now, never offered for import as orphans.
        unremovable = self.removals.finish(self.blobs, index_keys)
        if isinstance(self.blobs, S3BlobStore):
            # A bucket may be shared by other nodes, whose puts are in the bucket before their
            # index rows commit: no orphan sweep there. The local cache goes (a file cut by a
            # crash must not be served).
            self.blobs.clear_cache()
            return {"partial": removed_tmp, "orphans": 0, "missing": 0,
                    "caches": self.sweep_caches()}
        known = index_keys()
        orphans = Path(self.settings.data_dir) / ORPHANS
        present: set[str] = set()
        for key in list(self.blobs.keys()):
            present.add(key)
            if key in known or key in unremovable:
                continue
            path = self.blobs.path(key)
            if path is None:  # a blob store without files: nothing to keep them in
                self.blobs.delete(key)
            else:
                orphans.mkdir(mode=0o700, exist_ok=True)
                try:
                    os.replace(path, orphans / key)
                except OSError:  # the blobs on another file system
                    shutil.move(str(path), str(orphans / key))
            moved += 1
        if removed_tmp or moved:
            log.warning("startup sweep removed %d partial writes and moved %d blobs no index "
                        "row names to %s (`archivist import --data %s %s` stores them again)",
                        removed_tmp, moved, orphans, self.settings.data_dir, orphans)
        missing = known - present
        if missing:
            log.warning("startup sweep: %d objects the index lists have no blob in %s: they "
                        "cannot be retrieved (a backup that copied the blobs before the index? "
                        "copy them again from where the index came from), e.g. SOP Instance "
                        "UID %s",
                        len(missing), self.settings.blob_dir,
                        ", ".join(self._sop_uids_of(sorted(missing)[:5])))
        return {"partial": removed_tmp, "orphans": moved, "missing": len(missing),
                "caches": self.sweep_caches()}

    def _sop_uids_of(self, keys: list[str]) -> list[str]:
        from sqlalchemy import select

        from archivist.index.schema import instance

        with self.index.reader.connect() as conn:
            return [str(uid) for uid in conn.execute(
                select(instance.c.sop_instance_uid).where(instance.c.storage_key.in_(keys))
                .order_by(instance.c.sop_instance_uid)).scalars()]

    def sweep_caches(self) -> int:
        """Remove the series metadata files that do not describe a series as the index has it
        now; returns how many. They are derived data, built again on first use.

        A file is named by its series' row and change sequence. An index restored from a backup
        (or the files of another copy) is behind the files: its next changes reuse sequence
        numbers that files already carry, and those files would be served for series that hold
        other objects. And the files embed a placeholder derived from the data directory's path,
        so a data directory restored or moved to another path must not reuse them. Hence only
        the files of each series' current (row, sequence) are kept, and all of them go when the
        data directory is not the one they were written in.
        """
        data = Path(self.settings.data_dir)
        cache = data / METADATA_CACHE
        here = str(data.resolve())
        origin_file = data / CACHE_ORIGIN
        try:
            moved = origin_file.read_text(encoding="utf-8") != here
        except OSError:
            moved = True
        removed = 0
        if cache.is_dir():
            from sqlalchemy import select

            from archivist.index.schema import series

            with self.index.reader.connect() as conn:
                current = {(int(pk), int(seq or 0)) for pk, seq in
                           conn.execute(select(series.c.pk, series.c.change_seq))}
            for path in cache.iterdir():
                if not moved and _cache_key(path.name) in current:
                    continue
                try:
                    path.unlink()
                    removed += 1
                except OSError:
                    pass
        try:
            origin_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if moved:
                origin_file.write_text(here, encoding="utf-8")
        except OSError as exc:
            log.warning("cache origin not written: %s", exc.strerror)
        if removed:
            log.info("startup sweep removed %d series metadata files that no longer match the "
                     "index%s (built again on first use)", removed,
                     " or were written in another data directory" if moved else "")
        return removed

    def close(self) -> None:
        self.index.close()
        if self._lock_file is not None:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            finally:
                self._lock_file.close()
                self._lock_file = None
