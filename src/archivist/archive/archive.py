"""The archive: one object tying the blob store and the index to ingest, search and retrieve."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import IO

from archivist.archive.ingest import Ingest, Validator
from archivist.archive.retrieve import Retrieve
from archivist.archive.search import Search
from archivist.archive.validation import validate_on_ingest
from archivist.config import Settings
from archivist.index.repository import Index
from archivist.store.blob import BlobStore, FilesystemBlobStore

log = logging.getLogger("archivist.archive")


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
        """Remove partial writes and blobs that no index row references (crash leftovers)."""
        removed_tmp = 0
        removed_blobs = 0
        if isinstance(self.blobs, FilesystemBlobStore):
            removed_tmp = self.blobs.clear_tmp()
        known = self.index.storage_keys()
        for key in list(self.blobs.keys()):
            if key not in known:
                self.blobs.delete(key)
                removed_blobs += 1
        if removed_tmp or removed_blobs:
            log.warning("startup sweep removed %d partial and %d orphan blobs",
                        removed_tmp, removed_blobs)
        return {"partial": removed_tmp, "orphans": removed_blobs}

    def close(self) -> None:
        self.index.close()
        if self._lock_file is not None:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            finally:
                self._lock_file.close()
                self._lock_file = None
