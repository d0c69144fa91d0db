"""A deletion or a replaced duplicate whose blob was not removed (the process killed after the
index committed, or an unlink that failed) left a blob no index row names: the start-up sweep
moved it to orphans/ and said to import it, which brought the deleted object (or the version a
correction replaced) back (QA s23). Such blobs are now listed under removing/ until removed, and
the sweep removes them; an object a crash cut before its index row still goes to orphans/."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom

from archivist.archive.archive import Archive
from archivist.archive.delete import Deletion
from archivist.archive.ingest import Origin, StoreStatus
from archivist.core.levels import QueryLevel
from archivist.store import blob as blob_module
from archivist.testing.datasets import make_instance, new_uid

OpenArchive = Callable[..., Archive]
IMPORT = Origin("import")


@contextmanager
def unlink_fails(path: Path) -> Iterator[None]:
    """The file system refuses to remove `path` (as for an immutable file)."""
    real = os.unlink

    def unlink(target: object, *args: object, **kw: object) -> None:
        if Path(str(target)) == path:
            raise PermissionError(1, "Operation not permitted", str(target))
        real(target, *args, **kw)  # type: ignore[arg-type]

    blob_module.os.unlink = unlink  # type: ignore[assignment]
    try:
        yield
    finally:
        blob_module.os.unlink = real


def _key_of(archive: Archive, sop: str) -> str:
    query = archive.search.query_from_pairs(QueryLevel.IMAGE, [("SOPInstanceUID", sop)])
    (ref,) = list(archive.retrieve.instances(query))
    return ref.storage_key


def _reopen(open_archive: OpenArchive, archive: Archive, data: Path) -> Archive:
    archive.close()
    return open_archive(data_dir=data)


def test_a_deleted_object_whose_blob_stayed_is_removed_at_start(
        open_archive: OpenArchive, tmp_path: Path) -> None:
    data = tmp_path / "data"
    archive = open_archive(data_dir=data)
    study = new_uid()
    sops = []
    for n in range(2):
        ds = make_instance(tmp_path / f"{n}.dcm", study_uid=study)
        archive.ingest.store_file(tmp_path / f"{n}.dcm", IMPORT)
        sops.append(str(ds.SOPInstanceUID))
    stuck = _key_of(archive, sops[0])
    path = archive.blobs.path(stuck)
    assert path is not None
    with unlink_fails(path):
        removal = Deletion(archive.index, archive.blobs, archive.removals).delete(study)
    assert len(removal.instances) == 2
    assert path.exists() and list((data / "removing").glob("*.json"))
    archive = _reopen(open_archive, archive, data)
    assert not path.exists()
    assert not list((data / "removing").glob("*.json"))
    assert not (data / "orphans").exists() or not list((data / "orphans").iterdir())


def test_a_replaced_version_whose_blob_stayed_is_removed_at_start(
        open_archive: OpenArchive, tmp_path: Path) -> None:
    data = tmp_path / "data"
    archive = open_archive(data_dir=data, duplicate_policy="replace")
    ds = make_instance(tmp_path / "a.dcm", patient_name="OLD^NAME")
    archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
    sop = str(ds.SOPInstanceUID)
    old = archive.blobs.path(_key_of(archive, sop))
    assert old is not None
    ds.PatientName = "CORRECTED^NAME"
    ds.save_as(tmp_path / "b.dcm", enforce_file_format=True)
    with unlink_fails(old):
        assert archive.ingest.store_file(tmp_path / "b.dcm", IMPORT).status \
            is StoreStatus.REPLACED
    assert old.exists()
    archive = _reopen(open_archive, archive, data)
    assert not old.exists()
    assert not (data / "orphans").exists() or not list((data / "orphans").iterdir())
    current = archive.blobs.path(_key_of(archive, sop))
    assert current is not None
    assert str(pydicom.dcmread(current).PatientName) == "CORRECTED^NAME"


def test_a_blob_without_a_row_still_goes_to_orphans(open_archive: OpenArchive,
                                                     tmp_path: Path) -> None:
    """Not listed: a store a crash cut before its index row, or one newer than a restored
    index, is kept for import as before."""
    data = tmp_path / "data"
    archive = open_archive(data_dir=data)
    make_instance(tmp_path / "a.dcm")
    put = archive.blobs.put_bytes((tmp_path / "a.dcm").read_bytes())
    archive = _reopen(open_archive, archive, data)
    assert (data / "orphans" / put.key).exists()
