"""A store is acknowledged only once its blob is durable: an fsync that fails is a failure.

The blob store fsyncs each blob's directory (the rename into it) before the index row is
committed. An error of that fsync (EIO from a failing disk) used to be swallowed, and the store
was answered with success all the same. The fault is injected in ``os.fsync`` (the operating
system's layer, for directories only) under the whole ingest pipeline on a real data directory.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin, StoreStatus
from archivist.config import Settings
from archivist.errors import StorageError
from archivist.testing.datasets import make_instance


def _blobs(data: Path) -> list[Path]:
    return [p for p in (data / "blobs").rglob("*") if p.is_file()]


def test_a_failed_directory_fsync_is_not_acknowledged(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    archive = Archive.open(Settings(data_dir=data))
    try:
        obj = tmp_path / "ct.dcm"
        ds = make_instance(obj, rows=16, columns=16)
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise OSError(errno.EIO, "Input/output error")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(StorageError):
            archive.ingest.store_file(obj, Origin("import"))
        monkeypatch.undo()
        assert archive.index.storage_keys() == set(), "indexed although not durable"
        assert _blobs(data) == [], "blob left behind"
        # The disk is back: the same object is stored.
        result = archive.ingest.store_file(obj, Origin("import"))
        assert result.status is StoreStatus.STORED
        assert result.sop_instance_uid == ds.SOPInstanceUID
        assert len(_blobs(data)) == 1
    finally:
        archive.close()
