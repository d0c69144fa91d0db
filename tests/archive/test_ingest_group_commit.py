"""Group commit: stores that run at the same time share one index transaction, and each still
gets its own outcome only once its blob and row are durable."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import func, select

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin, StoreStatus
from archivist.errors import IndexError_
from archivist.index.extract import extract
from archivist.index.repository import AddRequest, BlobInfo
from archivist.index.schema import change, instance, patient, series, study
from archivist.testing.datasets import make_instance, new_uid

IMPORT = Origin("import")


def _files(tmp_path: Path, n: int, *, studies: int, series_per_study: int) -> list[Path]:
    out = []
    study_uids = [new_uid() for _ in range(studies)]
    series_uids = {s: [new_uid() for _ in range(series_per_study)] for s in study_uids}
    for i in range(n):
        st = study_uids[i % studies]
        se = series_uids[st][(i // studies) % series_per_study]
        path = tmp_path / f"f{i}.dcm"
        make_instance(path, study_uid=st, series_uid=se, patient_id=f"P{i % studies}",
                      modality=("CT", "MR")[i % 2])
        out.append(path)
    return out


def _store_concurrently(archive: Archive, paths: list[Path], threads: int) -> list[object]:
    results: list[object] = [None] * len(paths)
    barrier = threading.Barrier(threads)

    def work(k: int) -> None:
        barrier.wait()
        for i in range(k, len(paths), threads):
            try:
                results[i] = archive.ingest.store_file(paths[i], IMPORT)
            except Exception as exc:  # noqa: BLE001 - checked below
                results[i] = exc

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


def test_concurrent_stores_share_transactions_and_aggregates_add_up(
        archive: Archive, tmp_path: Path) -> None:
    paths = _files(tmp_path, 240, studies=2, series_per_study=2)
    results = _store_concurrently(archive, paths, threads=12)
    assert all(getattr(r, "status", None) is StoreStatus.STORED for r in results), results[:3]
    group = archive.ingest._group
    assert group.committed == 240
    # Twelve writers at once must have shared transactions (otherwise this is one per store).
    assert group.groups < 240
    with archive.index.reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(instance)).scalar() == 240
        assert conn.execute(select(func.count()).select_from(change)).scalar() == 240
        seqs = [r.change_seq for r in results]  # type: ignore[attr-defined]
        assert len(set(seqs)) == 240
        for row in conn.execute(select(series)).all():
            n = conn.execute(select(func.count()).select_from(instance)
                             .where(instance.c.series_pk == row.pk)).scalar()
            assert row.number_of_series_related_instances == n == 60
            top = conn.execute(select(func.max(instance.c.change_seq))
                               .where(instance.c.series_pk == row.pk)).scalar()
            assert row.change_seq == top
        for row in conn.execute(select(study)).all():
            assert row.number_of_study_related_instances == 120
            assert row.number_of_study_related_series == 2
            assert set(filter(None, row.modalities_in_study.split("\\"))) in ({"CT"}, {"MR"},
                                                                              {"CT", "MR"})
        totals = conn.execute(select(
            func.sum(patient.c.number_of_patient_related_instances),
            func.sum(patient.c.number_of_patient_related_series),
            func.sum(patient.c.number_of_patient_related_studies))).one()
        assert tuple(totals) == (240, 4, 2)
    # Every blob is where its row says.
    assert set(archive.blobs.keys()) == archive.index.storage_keys()


def test_duplicates_in_one_group_keep_one_row_and_one_blob(archive: Archive,
                                                           tmp_path: Path) -> None:
    one = tmp_path / "one.dcm"
    make_instance(one)
    copies = []
    for i in range(16):
        p = tmp_path / f"copy{i}.dcm"
        p.write_bytes(one.read_bytes())
        copies.append(p)
    results = _store_concurrently(archive, copies, threads=16)
    statuses = sorted(r.status.value for r in results)  # type: ignore[attr-defined]
    assert statuses.count("stored") == 1
    assert statuses.count("already-stored") == 15
    assert archive.index.counts()["instance"] == 1
    assert len(list(archive.blobs.keys())) == 1


def test_a_refused_request_fails_alone(archive: Archive, tmp_path: Path) -> None:
    """One request the database refuses (here a NULL that a NOT NULL column forbids) does not
    take the rest of its group down: the group is retried one by one."""
    from pydicom import dcmread

    requests = []
    for i in range(3):
        path = tmp_path / f"r{i}.dcm"
        make_instance(path)
        ds = dcmread(path, stop_before_pixels=True)
        put = archive.blobs.put_file(path)
        requests.append(AddRequest(
            extract(ds), BlobInfo(put.key, put.size, put.sha256, "1.2.840.10008.1.2.1"),
            sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            source_aet=None, source_address=None, policy="keep"))
    bad = requests[1]
    requests[1] = AddRequest(bad.rows, bad.blob, sop_instance_uid=None,  # type: ignore[arg-type]
                             sop_class_uid=bad.sop_class_uid,
                             study_instance_uid=bad.study_instance_uid,
                             series_instance_uid=bad.series_instance_uid,
                             source_aet=None, source_address=None, policy="keep")
    outcomes = archive.index.add_instances(requests)
    assert [getattr(o, "status", None) for o in outcomes] == ["added", None, "added"]
    assert isinstance(outcomes[1], IndexError_)
    assert archive.index.counts()["instance"] == 2
