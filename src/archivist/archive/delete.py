"""Deleting from the archive: a study, a series or an instance, leaving tombstones.

Order of work (the mirror of ingest): one index transaction removes the rows, updates the
aggregates and the change log, and leaves a tombstone per removed record
(:func:`archivist.index.removal.remove`); only after it has committed are the blobs deleted. A
crash between the two leaves blobs that no row references, which the start-up sweep removes; it
never leaves a row without its blob.

Removed records stay visible to Repository Query as Removed from Operational Use (0008,0405)
until :meth:`Deletion.purge`; C-FIND, QIDO-RS, WADO and C-MOVE/C-GET no longer see them.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from archivist.core.uids import is_valid_uid
from archivist.errors import QueryError, StorageError
from archivist.index.removal import DEFAULT_REASON, Reason, Removal, purge, remove
from archivist.index.repository import Index
from archivist.store.blob import BlobStore
from archivist.store.removals import PendingRemovals

log = logging.getLogger("archivist.delete")


class Deletion:
    """Deletes from one archive's index and blob store."""

    def __init__(self, index: Index, blobs: BlobStore,
                 removals: PendingRemovals | None = None) -> None:
        self.index = index
        self.blobs = blobs
        #: Where the blobs of a deletion are listed until removed (the archive's
        #: :attr:`~archivist.archive.archive.Archive.removals`); None: removed unlisted.
        self.removals = removals

    def delete(self, study_uid: str, series_uid: str | None = None,
               sop_uid: str | None = None, *, reason: Reason = DEFAULT_REASON) -> Removal:
        """Delete a study, one of its series, or one of its instances.

        Raises
        ------
        QueryError
            A UID that is not a valid UID.
        NotFound
            Nothing by those UIDs is stored (nothing changed).
        IndexError_
            The index failed (nothing changed).
        """
        for name, uid in (("Study Instance UID", study_uid), ("Series Instance UID", series_uid),
                          ("SOP Instance UID", sop_uid)):
            if uid is not None and not is_valid_uid(uid):
                raise QueryError(f"{name} is not a valid UID")
        removal = remove(self.index, study_uid=study_uid, series_uid=series_uid,
                         sop_uid=sop_uid, reason=reason)
        failed = 0
        if self.removals is not None:
            # Listed until gone: what cannot be removed now, the next start removes.
            failed = self.removals.remove(self.blobs, removal.storage_keys)
        else:
            for key in removal.storage_keys:
                try:
                    self.blobs.delete(key)
                except (OSError, StorageError):
                    failed += 1
        if failed:
            log.warning("%d files of the deleted objects could not be removed: the next start "
                        "of the archive removes them", failed)
        log.info("deleted level=%s study=%s series=%s sop=%s: %d studies, %d series, "
                 "%d instances, %d bytes, reason %s, seq=%d%s", removal.level, study_uid,
                 series_uid or "-", sop_uid or "-", len(removal.studies), len(removal.series),
                 len(removal.instances), removal.size, reason.value, removal.change_seq,
                 f" ({failed} blobs not removed: the next start removes them)" if failed else "")
        return removal

    def purge(self, older_than_days: float | None = None) -> int:
        """Forget tombstones (all, or those older than `older_than_days`); returns how many.

        Raises
        ------
        QueryError
            A negative `older_than_days`.
        IndexError_
            The index failed (nothing purged).
        """
        older = timedelta(days=older_than_days) if older_than_days is not None else None
        n = purge(self.index, older_than=older)
        log.info("purged %d tombstones", n)
        return n
