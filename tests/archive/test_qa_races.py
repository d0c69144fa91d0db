"""Readers and writers racing on one archive (QA, concurrency): what a retrieve finds must still
be readable when the instance is replaced meanwhile, and the times the index records must follow
the order of the commits.

Found with concurrent clients on a server with 2 workers and duplicate policy ``replace``:
WADO-RS retrieves of a study answered 200 with 16 to 19 of its 20 instances, and C-GETs ended
0xB000 with failed sub-operations, while the same instances were being sent again. A replacing
store deletes the old blob once its row points at the new one; a retrieve that had found the old
row then failed to open it and treated the instance as deleted, although it was stored all along.

Found with ``archivist import`` and ``archivist delete`` beside the server: change rows (and
Study Update DateTime) were stamped before the write lock was taken, so a group that waited
for the lock committed with a time earlier than changes committed ahead of it (330 ms back),
and a client syncing by Study Update DateTime ranges would miss it.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian
from sqlalchemy import select

from archivist.archive.archive import Archive
from archivist.archive.delete import Deletion
from archivist.archive.ingest import Origin, StoreStatus
from archivist.core.levels import QueryLevel
from archivist.errors import NotFound
from archivist.index.removal import remove
from archivist.index.schema import change, study
from archivist.testing.datasets import make_instance, new_uid

from .conftest import OpenArchive

IMPORT = Origin("import")


def _refs(archive: Archive, study: str) -> list:
    query = archive.search.query_from_pairs(QueryLevel.STUDY, [("StudyInstanceUID", study)])
    return list(archive.retrieve.instances(query))


def _two_versions(folder: Path) -> tuple[Path, Path]:
    """The same instance twice, same size, different description."""
    study, series, sop = new_uid(), new_uid(), new_uid()
    first, second = folder / "v1.dcm", folder / "v2.dcm"
    make_instance(first, study_uid=study, series_uid=series, sop_uid=sop,
                  study_description="version one")
    make_instance(second, study_uid=study, series_uid=series, sop_uid=sop,
                  study_description="version two")
    assert first.stat().st_size == second.stat().st_size
    return first, second


def test_instance_replaced_after_it_was_found_is_read_from_its_new_copy(
        open_archive: OpenArchive, tmp_path: Path) -> None:
    archive = open_archive(duplicate_policy="replace")
    first, second = _two_versions(tmp_path)
    study = str(dcmread(first).StudyInstanceUID)
    archive.ingest.store_file(first, IMPORT)
    (ref,) = _refs(archive, study)  # what a C-GET, C-MOVE or WADO-RS found
    assert archive.ingest.store_file(second, IMPORT).status is StoreStatus.REPLACED

    with archive.retrieve.open(ref) as fh:
        assert fh.read() == second.read_bytes()
    path = archive.retrieve.path(ref)
    assert path is not None and path.read_bytes() == second.read_bytes()
    ts, data = archive.retrieve.encoded(ref)
    assert ts == str(dcmread(second).file_meta.TransferSyntaxUID)
    assert data == second.read_bytes()[-len(data):]
    assert archive.retrieve.dataset(ref).StudyDescription == "version two"


def test_replacement_in_another_transfer_syntax(open_archive: OpenArchive,
                                                tmp_path: Path) -> None:
    """C-GET and C-MOVE take the transfer syntax from the bytes they read, so any new copy
    stands in; a reader that announced the old syntax (a WADO-RS part's media type) or size
    (a Content-Length) gets NotFound, as for a deleted instance, never bytes that contradict
    what it announced."""
    archive = open_archive(duplicate_policy="replace")
    first, second = _two_versions(tmp_path)
    ds = dcmread(second)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(second, implicit_vr=True, little_endian=True, enforce_file_format=True)
    study = str(ds.StudyInstanceUID)
    archive.ingest.store_file(first, IMPORT)
    (ref,) = _refs(archive, study)
    archive.ingest.store_file(second, IMPORT)

    ts, data = archive.retrieve.encoded(ref)
    assert ts == ImplicitVRLittleEndian
    assert data == second.read_bytes()[-len(data):]
    assert archive.retrieve.dataset(ref).StudyDescription == "version two"
    with pytest.raises(NotFound):
        archive.retrieve.open(ref)
    path = archive.retrieve.path(ref)
    assert path is not None and not path.exists()


def test_deleted_instance_stays_gone(open_archive: OpenArchive, tmp_path: Path) -> None:
    archive = open_archive(duplicate_policy="replace")
    first, _ = _two_versions(tmp_path)
    study = str(dcmread(first).StudyInstanceUID)
    archive.ingest.store_file(first, IMPORT)
    (ref,) = _refs(archive, study)
    Deletion(archive.index, archive.blobs).delete(study)

    with pytest.raises(NotFound):
        archive.retrieve.open(ref)
    with pytest.raises(NotFound):
        archive.retrieve.encoded(ref)
    path = archive.retrieve.path(ref)
    assert path is not None and not path.exists()


def _last_change_at(archive: Archive) -> datetime:
    with archive.index.reader.connect() as conn:
        at = conn.execute(select(change.c.at).order_by(change.c.seq.desc()).limit(1)).scalar()
    assert at is not None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _behind_the_write_lock(archive: Archive, work: object) -> datetime:
    """Run `work` while this thread holds the index's write lock for a moment; returns when
    the lock was let go."""
    started = threading.Event()
    worker = threading.Thread(target=lambda: (started.set(), work()))  # type: ignore[operator]
    with archive.index.write_transaction():
        worker.start()
        started.wait(5)
        time.sleep(0.3)  # the work waits for the lock meanwhile
        released = datetime.now(UTC)
    worker.join(30)
    assert not worker.is_alive()
    return released


def test_a_store_that_waited_for_the_lock_is_stamped_when_it_commits(
        archive: Archive, tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    ds = make_instance(path, study_uid=new_uid(), series_uid=new_uid())
    released = _behind_the_write_lock(archive, lambda: archive.ingest.store_file(path, IMPORT))
    assert _last_change_at(archive) >= released
    with archive.index.reader.connect() as conn:
        updated = conn.execute(select(study.c.updated_at).where(
            study.c.study_instance_uid == str(ds.StudyInstanceUID))).scalar()
    assert (updated if updated.tzinfo else updated.replace(tzinfo=UTC)) >= released


def test_a_removal_that_waited_for_the_lock_is_stamped_when_it_commits(
        archive: Archive, tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    ds = make_instance(path, study_uid=new_uid(), series_uid=new_uid())
    archive.ingest.store_file(path, IMPORT)
    out: list = []
    released = _behind_the_write_lock(
        archive, lambda: out.append(remove(archive.index, study_uid=str(ds.StudyInstanceUID))))
    assert _last_change_at(archive) >= released
    assert out and out[0].removed_at >= released


def _modalities(archive: Archive, study_uid: str) -> tuple[set[str], set[str]]:
    """(Modalities in Study as the study row keeps it, the distinct Modality of its series)."""
    from archivist.index.schema import series

    with archive.index.reader.connect() as conn:
        pk, kept = conn.execute(select(study.c.pk, study.c.modalities_in_study)
                                .where(study.c.study_instance_uid == study_uid)).one()
        of_series = conn.execute(select(series.c.modality).where(series.c.study_pk == pk)
                                 ).scalars().all()
    return {m for m in kept.split("\\") if m}, {m for m in of_series if m}


def test_modalities_in_study_stay_those_of_its_series(archive: Archive, tmp_path: Path) -> None:
    """An instance whose Modality differs from its series' (Modality is a series attribute;
    the series row keeps its first instance's) added its value to Modalities in Study, which
    a later removal of anything in the study worked out again from the series rows, dropping
    it: the aggregate changed with no change to what it describes (PS3.4 C.3.4)."""
    study_uid, ct_series, mr_series = new_uid(), new_uid(), new_uid()
    for n, (series_uid, modality) in enumerate(
            [(ct_series, "CT"), (mr_series, "MR"), (mr_series, "OT"), (mr_series, "MR")]):
        make_instance(tmp_path / f"{n}.dcm", study_uid=study_uid, series_uid=series_uid,
                      modality=modality, instance_number=n + 1)
        archive.ingest.store_file(tmp_path / f"{n}.dcm", IMPORT)
        kept, of_series = _modalities(archive, study_uid)
        assert kept == of_series, n
    assert kept == {"CT", "MR"}
    last = str(dcmread(tmp_path / "3.dcm").SOPInstanceUID)
    Deletion(archive.index, archive.blobs).delete(study_uid, mr_series, last)
    assert _modalities(archive, study_uid) == ({"CT", "MR"}, {"CT", "MR"})
