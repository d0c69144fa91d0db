"""A Series Instance UID names one series of one study (PS3.5 9): an object that reuses a stored
series' UID under another study is refused, nothing of it stored, everything else intact; the
same for a ``replace`` duplicate that names another series or study than the stored copy. Also in
a group commit (only the conflicting request fails) and with two processes storing at once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin, StoreStatus
from archivist.errors import UIDConflict
from archivist.index.extract import extract
from archivist.index.repository import AddOutcome, AddRequest, BlobInfo
from archivist.index.schema import change, instance, patient, series, study
from archivist.testing.datasets import make_instance, new_uid

IMPORT = Origin("import")
CONFLICT = "Series Instance UID already belongs to another study"


def _snapshot(archive: Archive) -> dict[str, object]:
    """Every row count and aggregate of the index, and the blobs."""
    with archive.index.reader.connect() as conn:
        return {
            "counts": archive.index.counts(),
            "changes": conn.execute(select(func.count()).select_from(change)).scalar(),
            "studies": sorted(tuple(r) for r in conn.execute(select(
                study.c.study_instance_uid, study.c.number_of_study_related_series,
                study.c.number_of_study_related_instances, study.c.modalities_in_study))),
            "series": sorted(tuple(r) for r in conn.execute(select(
                series.c.series_instance_uid, series.c.study_pk,
                series.c.number_of_series_related_instances))),
            "patients": sorted(tuple(r) for r in conn.execute(select(
                patient.c.patient_id, patient.c.number_of_patient_related_studies,
                patient.c.number_of_patient_related_series,
                patient.c.number_of_patient_related_instances))),
            "blobs": sorted(archive.blobs.keys()),
        }


def _assert_consistent(archive: Archive) -> None:
    """The aggregates agree with the instance rows."""
    with archive.index.reader.connect() as conn:
        for row in conn.execute(select(series)).all():
            n = conn.execute(select(func.count()).select_from(instance)
                             .where(instance.c.series_pk == row.pk)).scalar()
            assert row.number_of_series_related_instances == n
        for row in conn.execute(select(study)).all():
            se = conn.execute(select(func.count()).select_from(series)
                              .where(series.c.study_pk == row.pk)).scalar()
            n = conn.execute(select(func.count()).select_from(
                instance.join(series, instance.c.series_pk == series.c.pk))
                .where(series.c.study_pk == row.pk)).scalar()
            assert (row.number_of_study_related_series,
                    row.number_of_study_related_instances) == (se, n)
    assert set(archive.blobs.keys()) == archive.index.storage_keys()


def _study_of(archive: Archive, sop_uid: str) -> str:
    with archive.index.reader.connect() as conn:
        return str(conn.execute(
            select(study.c.study_instance_uid)
            .select_from(instance.join(series, instance.c.series_pk == series.c.pk)
                         .join(study, series.c.study_pk == study.c.pk))
            .where(instance.c.sop_instance_uid == sop_uid)).scalar_one())


def _request(archive: Archive, path: Path, policy: str = "keep") -> AddRequest:
    ds = dcmread(path, stop_before_pixels=True)
    put = archive.blobs.put_file(path)
    return AddRequest(
        extract(ds), BlobInfo(put.key, put.size, put.sha256, "1.2.840.10008.1.2.1"),
        sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        source_aet=None, source_address=None, policy=policy)


class TestSeriesOfAnotherStudy:
    def test_refused_into_a_new_study(self, archive: Archive, tmp_path: Path) -> None:
        study1, study2, series_uid = new_uid(), new_uid(), new_uid()
        make_instance(tmp_path / "a.dcm", study_uid=study1, series_uid=series_uid)
        make_instance(tmp_path / "b.dcm", study_uid=study2, series_uid=series_uid,
                      patient_id="OTHER")
        archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        before = _snapshot(archive)
        with pytest.raises(UIDConflict) as info:
            archive.ingest.store_file(tmp_path / "b.dcm", IMPORT)
        assert str(info.value).startswith(CONFLICT)
        assert series_uid in str(info.value) and study1 in str(info.value)
        # Nothing of it: no study, no patient, no change row, no blob, no temporary file.
        assert _snapshot(archive) == before
        assert list(archive.settings.tmp_dir.iterdir()) == []
        assert (tmp_path / "b.dcm").exists()

    def test_refused_into_an_existing_study(self, archive: Archive, tmp_path: Path) -> None:
        study1, study2, series1, series2 = new_uid(), new_uid(), new_uid(), new_uid()
        make_instance(tmp_path / "a.dcm", study_uid=study1, series_uid=series1)
        make_instance(tmp_path / "b.dcm", study_uid=study2, series_uid=series2)
        make_instance(tmp_path / "c.dcm", study_uid=study2, series_uid=series1,
                      modality="MR")
        archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        archive.ingest.store_file(tmp_path / "b.dcm", IMPORT)
        before = _snapshot(archive)
        with pytest.raises(UIDConflict, match=CONFLICT):
            archive.ingest.store_file(tmp_path / "c.dcm", IMPORT)
        assert _snapshot(archive) == before
        _assert_consistent(archive)

    def test_same_series_same_study_still_stored(self, archive: Archive, tmp_path: Path) -> None:
        study1, series1 = new_uid(), new_uid()
        for i in range(3):
            make_instance(tmp_path / f"{i}.dcm", study_uid=study1, series_uid=series1,
                          instance_number=i + 1)
            assert (archive.ingest.store_file(tmp_path / f"{i}.dcm", IMPORT).status
                    is StoreStatus.STORED)
        assert archive.index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 3}
        _assert_consistent(archive)

    def test_store_bytes_refused_too(self, archive: Archive, tmp_path: Path) -> None:
        series_uid = new_uid()
        make_instance(tmp_path / "a.dcm", series_uid=series_uid)
        make_instance(tmp_path / "b.dcm", series_uid=series_uid)
        archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        with pytest.raises(UIDConflict, match=CONFLICT) as info:
            archive.ingest.store_bytes((tmp_path / "b.dcm").read_bytes(), Origin("stow"))
        # What STOW-RS names in its Failed SOP Sequence.
        assert info.value.uids["SOPInstanceUID"] == str(dcmread(tmp_path / "b.dcm").SOPInstanceUID)
        assert archive.index.counts()["instance"] == 1
        assert len(list(archive.blobs.keys())) == 1


class TestGroupCommit:
    def test_only_the_conflicting_request_fails(self, archive: Archive, tmp_path: Path) -> None:
        study1, series1 = new_uid(), new_uid()
        make_instance(tmp_path / "first.dcm", study_uid=study1, series_uid=series1)
        archive.ingest.store_file(tmp_path / "first.dcm", IMPORT)
        study2 = new_uid()
        make_instance(tmp_path / "ok1.dcm", study_uid=study2)
        make_instance(tmp_path / "bad.dcm", study_uid=study2, series_uid=series1)
        make_instance(tmp_path / "ok2.dcm", study_uid=study1, series_uid=series1,
                      instance_number=2)
        requests = [_request(archive, tmp_path / n) for n in ("ok1.dcm", "bad.dcm", "ok2.dcm")]
        outcomes = archive.index.add_instances(requests)
        assert isinstance(outcomes[0], AddOutcome) and outcomes[0].status == "added"
        assert isinstance(outcomes[1], UIDConflict)
        assert isinstance(outcomes[2], AddOutcome) and outcomes[2].status == "added"
        archive.blobs.delete(requests[1].blob.storage_key)  # the caller's (Ingest does it)
        assert archive.index.counts() == {"patient": 1, "study": 2, "series": 2, "instance": 3}
        assert _study_of(archive, requests[2].sop_instance_uid) == study1
        _assert_consistent(archive)

    def test_a_series_new_in_the_same_group(self, archive: Archive, tmp_path: Path) -> None:
        """Two requests of one group bring the same new series under two studies: the
        first creates it, the second is refused (the group's own cache knows the series)."""
        series_uid, study1, study2 = new_uid(), new_uid(), new_uid()
        make_instance(tmp_path / "a.dcm", study_uid=study1, series_uid=series_uid)
        make_instance(tmp_path / "b.dcm", study_uid=study2, series_uid=series_uid)
        make_instance(tmp_path / "c.dcm", study_uid=study1, series_uid=series_uid,
                      instance_number=2)
        requests = [_request(archive, tmp_path / n) for n in ("a.dcm", "b.dcm", "c.dcm")]
        outcomes = archive.index.add_instances(requests)
        assert [getattr(o, "status", type(o).__name__) for o in outcomes] == [
            "added", "UIDConflict", "added"]
        archive.blobs.delete(requests[1].blob.storage_key)
        assert archive.index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 2}
        with archive.index.reader.connect() as conn:
            assert conn.execute(select(func.count()).select_from(change)).scalar() == 2
        _assert_consistent(archive)


class TestReplacePolicy:
    def test_replace_into_another_series_refused(self, open_archive: object,
                                                 tmp_path: Path) -> None:
        archive = open_archive(duplicate_policy="replace")  # type: ignore[operator]
        sop, study1, series1 = new_uid(), new_uid(), new_uid()
        make_instance(tmp_path / "a.dcm", sop_uid=sop, study_uid=study1, series_uid=series1)
        make_instance(tmp_path / "b.dcm", sop_uid=sop, study_uid=study1, series_uid=new_uid())
        archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        before = _snapshot(archive)
        key = archive.index.get_instance(sop)["storage_key"]  # type: ignore[index]
        with pytest.raises(UIDConflict, match="SOP Instance UID already stored in another series"):
            archive.ingest.store_file(tmp_path / "b.dcm", IMPORT)
        assert _snapshot(archive) == before
        assert archive.index.get_instance(sop)["storage_key"] == key  # type: ignore[index]

    def test_replace_into_another_study_refused(self, open_archive: object,
                                                tmp_path: Path) -> None:
        archive = open_archive(duplicate_policy="replace")  # type: ignore[operator]
        sop, study1, series1 = new_uid(), new_uid(), new_uid()
        make_instance(tmp_path / "a.dcm", sop_uid=sop, study_uid=study1, series_uid=series1)
        make_instance(tmp_path / "b.dcm", sop_uid=sop, study_uid=new_uid(), series_uid=series1)
        make_instance(tmp_path / "c.dcm", sop_uid=sop, study_uid=new_uid(),
                      series_uid=new_uid())
        archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        before = _snapshot(archive)
        for name in ("b.dcm", "c.dcm"):
            with pytest.raises(UIDConflict, match="SOP Instance UID already stored in another"):
                archive.ingest.store_file(tmp_path / name, IMPORT)
        assert _snapshot(archive) == before
        assert _study_of(archive, sop) == study1

    def test_replace_in_the_same_series_still_replaces(self, open_archive: object,
                                                       tmp_path: Path) -> None:
        archive = open_archive(duplicate_policy="replace")  # type: ignore[operator]
        sop, study1, series1 = new_uid(), new_uid(), new_uid()
        make_instance(tmp_path / "a.dcm", sop_uid=sop, study_uid=study1, series_uid=series1)
        make_instance(tmp_path / "b.dcm", sop_uid=sop, study_uid=study1, series_uid=series1,
                      instance_number=7)
        archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        result = archive.ingest.store_file(tmp_path / "b.dcm", IMPORT)
        assert result.status is StoreStatus.REPLACED
        assert archive.index.get_instance(sop)["instance_number"] == 7  # type: ignore[index]
        _assert_consistent(archive)

    def test_keep_policy_unchanged(self, archive: Archive, tmp_path: Path) -> None:
        """``keep``: a copy naming another series is a duplicate as before (first one kept)."""
        sop = new_uid()
        make_instance(tmp_path / "a.dcm", sop_uid=sop)
        make_instance(tmp_path / "b.dcm", sop_uid=sop, series_uid=new_uid())
        archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        assert (archive.ingest.store_file(tmp_path / "b.dcm", IMPORT).status
                is StoreStatus.ALREADY_STORED)


_WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from archivist.archive.archive import Archive
    from archivist.archive.ingest import Origin
    from archivist.config import load_settings
    from archivist.errors import UIDConflict

    data, go, files = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
    while not go.exists():
        time.sleep(0.01)
    out = {}
    for f in files:
        try:
            archive.ingest.store_file(Path(f), Origin("import"))
            out[f] = "stored"
        except UIDConflict as exc:
            out[f] = str(exc)
    archive.close()
    print(json.dumps(out))
""")


def test_two_processes_storing_at_once(tmp_path: Path) -> None:
    """Two processes store the same series UIDs under different studies, interleaved: each
    series ends up in exactly one study, with every instance of it, and the rest refused."""
    data = tmp_path / "data"
    n = 12
    series_uids = [new_uid() for _ in range(n)]
    lists: list[list[str]] = [[], []]
    for w in range(2):
        study_uid = new_uid()
        for i, se in enumerate(series_uids):
            for k in range(2):
                p = tmp_path / f"w{w}_{i}_{k}.dcm"
                make_instance(p, study_uid=study_uid, series_uid=se, patient_id=f"P{w}",
                              instance_number=k + 1)
                lists[w].append(str(p))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(data), str(go), *files],
                              stdout=subprocess.PIPE, text=True) for files in lists]
    go.touch()
    results: dict[str, str] = {}
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        results.update(json.loads(out))
    refused = [r for r in results.values() if r != "stored"]
    assert all(r.startswith(CONFLICT) for r in refused)
    # Each series is in one study only, with both of its instances from that study's worker.
    assert len(refused) == 2 * n
    from archivist.config import load_settings

    archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
    try:
        assert archive.index.counts()["series"] == n
        assert archive.index.counts()["instance"] == 2 * n
        for i in range(n):
            stored = {w for w in range(2) for k in range(2)
                      if results[str(tmp_path / f"w{w}_{i}_{k}.dcm")] == "stored"}
            assert len(stored) == 1
        _assert_consistent(archive)
    finally:
        archive.close()
