"""The archive: one object tying the blob store and the index to ingest, search and retrieve."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path
from typing import IO

from archivist.archive.ingest import Ingest, Validator
from archivist.archive.retrieve import Retrieve
from archivist.archive.search import Search
from archivist.archive.validation import validate_on_ingest
from archivist.config import Settings
from archivist.errors import IndexLost
from archivist.index.repository import Index
from archivist.store.blob import BlobStore, FilesystemBlobStore

log = logging.getLogger("archivist.archive")

#: Where the start-up sweep puts blobs no index row names (under the data directory).
ORPHANS = "orphans"


def lost_index(settings: Settings) -> str | None:
    """Why the archive at `settings` must not be opened, or None.

    An index file that is missing or empty while the blob store holds objects was lost (deleted,
    or a disk or copy went wrong): opening the archive would start an empty index, and every
    stored object would be an orphan. The message says how to get the objects back.
    """
    index = settings.index_path
    try:
        if index.stat().st_size > 0:
            return None
    except FileNotFoundError:
        pass
    blobs = settings.blob_dir
    if not blobs.is_dir() or next((f for f in blobs.rglob("*") if f.is_file()), None) is None:
        return None
    state = "is empty" if index.exists() else "is missing"
    return (f"the index {index} {state} but {blobs} holds stored objects; nothing was "
            f"changed. Restore the index from a backup, or move {blobs} out of the data "
            "directory and import it: `archivist import MOVED_FOLDER`")


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
        self._lock_file: IO[str] | None = None

    @classmethod
    def open(cls, settings: Settings, *, validator: Validator | None = None) -> "Archive":
        """Open (create) the archive of `settings`; :class:`~archivist.errors.IndexLost` when its
        index was lost while objects are stored (:func:`lost_index`)."""
        problem = lost_index(settings)
        if problem:
            raise IndexLost(problem)
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        blobs = FilesystemBlobStore(settings.blob_dir, settings.tmp_dir)
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
            fh = open(data / "archivist.lock", "a+")
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
        stored, and those newer objects can be imported back from there."""
        removed_tmp = 0
        moved = 0
        if isinstance(self.blobs, FilesystemBlobStore):
            removed_tmp = self.blobs.clear_tmp()
        known = self.index.storage_keys()
        orphans = Path(self.settings.data_dir) / ORPHANS
        for key in list(self.blobs.keys()):
            if key in known:
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
                        "row names to %s (`archivist import` it to store them again)",
                        removed_tmp, moved, orphans)
        return {"partial": removed_tmp, "orphans": moved}

    def close(self) -> None:
        self.index.close()
        if self._lock_file is not None:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            finally:
                self._lock_file.close()
                self._lock_file = None
