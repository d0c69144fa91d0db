"""Blobs whose index rows are gone on purpose (a deletion, a replaced duplicate), kept listed
until they are removed from the blob store.

The index change is committed first, then the blobs are removed. A process killed between the
two, or a blob that cannot be unlinked (a read-only or immutable file), used to leave a blob no
index row names, which the start-up sweep cannot tell from an object a crash cut before its
index row, or one stored after the index's backup: it moved it to ``orphans/``, whose import
brought back what had been deleted (or the version a correction replaced). Each removal is now
written to a list under ``<data>/removing/`` (fsync'd) before its blobs are removed, and the
list goes once they are; the sweep removes what a list left names, and moves only the rest.

A list is written right after the index commits: a process killed in that instant still
leaves its blobs to the orphan sweep, as before.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from archivist.store.blob import BlobStore, FilesystemBlobStore, check_key

log = logging.getLogger(__name__)

#: The folder of the lists, in the data directory.
REMOVING = "removing"


class PendingRemovals:
    """Lists of blob keys to remove, one file each, under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def remove(self, blobs: BlobStore, keys: Iterable[str]) -> int:
        """Remove `keys` from `blobs`, listed until they are gone; returns how many are left
        (each stays listed, for the next start-up of the archive to remove)."""
        keys = [check_key(key) for key in keys]
        if not keys:
            return 0
        listed = self._write(keys)
        left = _remove(blobs, keys)
        if listed is not None and not left:
            listed.unlink(missing_ok=True)
        return len(left)

    def finish(self, blobs: BlobStore, index_keys: Callable[[], Collection[str]]) -> set[str]:
        """Remove what earlier lists name and no index row does (`index_keys` gives the keys
        the index names, asked only when a list is left); returns the keys still listed
        because they could not be removed."""
        left_over: set[str] = set()
        lists = sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []
        if not lists:
            return left_over
        known = index_keys()
        for listed in lists:
            try:
                keys = [check_key(k) for k in json.loads(listed.read_text(encoding="utf-8"))]
            except (OSError, ValueError, TypeError) as exc:
                log.warning("list of blobs to remove %s unreadable (%s): left alone",
                            listed.name, type(exc).__name__)
                continue
            # A key an index row names again is not removed (never the case after a commit;
            # a list outliving an index restored from a backup).
            left = _remove(blobs, [k for k in keys if k not in known])
            if left:
                left_over.update(left)
                log.warning("%d blobs of deleted or replaced objects cannot be removed (e.g. "
                            "%s); they stay listed in %s", len(left), left[0], listed)
            else:
                listed.unlink(missing_ok=True)
        return left_over

    def _write(self, keys: list[str]) -> Path | None:
        """The list of `keys`, durable; None when it cannot be written (the blobs are then
        removed all the same, and a failure leaves them to the orphan sweep, as before)."""
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            path = self.folder / f"{secrets.token_hex(12)}.json"
            tmp = path.with_suffix(".part")
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(keys, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return path
        except OSError as exc:
            log.warning("cannot list blobs to remove in %s: %s", self.folder, exc.strerror)
            return None


def _remove(blobs: BlobStore, keys: list[str]) -> list[str]:
    """Delete `keys`; those whose file is still there are returned (an object store logs a
    failed DELETE itself, and is not asked again)."""
    left = []
    for key in keys:
        blobs.delete(key)
        path = blobs.path(key) if isinstance(blobs, FilesystemBlobStore) else None
        if path is not None and os.path.lexists(path):
            left.append(key)
    return left


__all__ = ["REMOVING", "PendingRemovals"]
