"""The metadata index: aggregates, change rows, duplicate policies, concurrency, search."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from archivist.core.levels import QueryLevel
from archivist.core.matching import build_query
from archivist.errors import IndexError_
from archivist.index.extract import extract
from archivist.index.repository import AddOutcome, BlobInfo, Index, attrs_of
from archivist.store.blob import new_key
from archivist.testing.datasets import make_instance, new_uid


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    idx = Index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    idx.migrate()
    yield idx
    idx.close()


class Adder:
    """Adds generated instances straight to the index (no blob store involved)."""

    def __init__(self, index: Index, tmp: Path) -> None:
        self.index = index
        self.tmp = tmp
        self.n = 0

    def __call__(self, *, policy: str = "keep", key: str | None = None, **kw: Any) -> AddOutcome:
        self.n += 1
        ds = make_instance(self.tmp / f"{self.n}.dcm", **kw)
        return self.index.add_instance(
            extract(ds), BlobInfo(key or new_key(), 100 + self.n, "0" * 64, ExplicitVRLittleEndian),
            sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
            study_instance_uid=ds.StudyInstanceUID, series_instance_uid=ds.SeriesInstanceUID,
            source_aet="MODALITY", source_address="10.0.0.1", policy=policy,
        )


@pytest.fixture
def add(index: Index, tmp_path: Path) -> Adder:
    return Adder(index, tmp_path)


def _one(index: Index, level: QueryLevel, **pairs: str) -> dict[str, Any]:
    rows = list(index.search(build_query(level, list(pairs.items()))))
    assert len(rows) == 1
    return rows[0]


class TestMigrate:
    def test_idempotent(self, index: Index) -> None:
        index.migrate()
        assert index.counts() == {"patient": 0, "study": 0, "series": 0, "instance": 0}
        assert index.last_change() == 0

    def test_wal_mode(self, index: Index, tmp_path: Path) -> None:
        with sqlite3.connect(tmp_path / "index.sqlite") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


class TestAggregates:
    def test_study_series_patient_counts(self, index: Index, add: Adder) -> None:
        st1, st2 = new_uid(), new_uid()
        se1, se2, se3 = new_uid(), new_uid(), new_uid()
        for _ in range(3):
            add(patient_id="P1", study_uid=st1, series_uid=se1, modality="CT")
        add(patient_id="P1", study_uid=st1, series_uid=se2, modality="MR")
        add(patient_id="P1", study_uid=st2, series_uid=se3, modality="CT")
        add(patient_id="P2")
        assert index.counts() == {"patient": 2, "study": 3, "series": 4, "instance": 6}

        s1 = _one(index, QueryLevel.STUDY, StudyInstanceUID=st1)
        assert s1["study.number_of_study_related_series"] == 2
        assert s1["study.number_of_study_related_instances"] == 4
        assert s1["study.modalities_in_study"] == "\\CT\\MR\\"
        assert s1["study.sop_classes_in_study"] == f"\\{CTImageStorage}\\{MRImageStorage}\\"
        s2 = _one(index, QueryLevel.STUDY, StudyInstanceUID=st2)
        assert s2["study.number_of_study_related_series"] == 1
        assert s2["study.number_of_study_related_instances"] == 1
        assert s2["study.modalities_in_study"] == "\\CT\\"

        p1 = _one(index, QueryLevel.PATIENT, PatientID="P1")
        assert p1["patient.number_of_patient_related_studies"] == 2
        assert p1["patient.number_of_patient_related_series"] == 3
        assert p1["patient.number_of_patient_related_instances"] == 5
        se = _one(index, QueryLevel.SERIES, SeriesInstanceUID=se1)
        assert se["series.number_of_series_related_instances"] == 3

    def test_same_patient_id_different_issuer_is_two_patients(self, index: Index,
                                                              add: Adder) -> None:
        add(patient_id="P1", extra={"IssuerOfPatientID": "A"})
        add(patient_id="P1", extra={"IssuerOfPatientID": "B"})
        add(patient_id="P1", extra={"IssuerOfPatientID": "A"})
        assert index.counts()["patient"] == 2


class TestChangeLog:
    def test_sequence_increases_and_rows_are_recorded(self, index: Index, add: Adder) -> None:
        study = new_uid()
        outcomes = [add(study_uid=study) for _ in range(4)]
        assert [o.status for o in outcomes] == ["added"] * 4
        seqs = [o.change_seq for o in outcomes]
        assert seqs == sorted(seqs) and len(set(seqs)) == 4
        assert index.last_change() == seqs[-1]
        changes = index.changes_since(0)
        assert [c["seq"] for c in changes] == seqs
        assert {c["kind"] for c in changes} == {"stored"}
        assert {c["level"] for c in changes} == {"IMAGE"}
        assert {c["study_instance_uid"] for c in changes} == {study}
        assert index.changes_since(seqs[1]) == changes[2:]
        assert len(index.changes_since(0, limit=3)) == 3

    def test_change_seq_on_rows(self, index: Index, add: Adder) -> None:
        study = new_uid()
        add(study_uid=study)
        last = add(study_uid=study)
        row = _one(index, QueryLevel.STUDY, StudyInstanceUID=study)
        assert row["study.change_seq"] == last.change_seq

    def test_duplicate_keep_writes_no_change_row(self, index: Index, add: Adder) -> None:
        sop = new_uid()
        add(sop_uid=sop)
        before = index.last_change()
        assert add(sop_uid=sop).status == "exists"
        assert index.last_change() == before


class TestDuplicatePolicies:
    @pytest.mark.parametrize("policy", ["keep", "reject"])
    def test_keep_and_reject_leave_the_first(self, index: Index, add: Adder, policy: str) -> None:
        sop = new_uid()
        first_key = new_key()
        add(sop_uid=sop, key=first_key, patient_name="FIRST^ONE")
        out = add(sop_uid=sop, policy=policy, patient_name="SECOND^ONE")
        assert out == AddOutcome("exists", 0)
        row = index.get_instance(sop)
        assert row is not None and row["storage_key"] == first_key
        assert index.counts()["instance"] == 1

    def test_replace_points_at_the_new_blob(self, index: Index, add: Adder) -> None:
        sop, study, old_key, new = new_uid(), new_uid(), new_key(), new_key()
        series = new_uid()
        add(sop_uid=sop, study_uid=study, series_uid=series, key=old_key, instance_number=1)
        out = add(sop_uid=sop, study_uid=study, series_uid=series, key=new, instance_number=2,
                  policy="replace")
        assert out.status == "replaced" and out.old_storage_key == old_key
        assert out.change_seq == index.last_change()
        row = index.get_instance(sop)
        assert row is not None
        assert (row["storage_key"], row["instance_number"]) == (new, 2)
        assert index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 1}
        st = _one(index, QueryLevel.STUDY, StudyInstanceUID=study)
        assert st["study.number_of_study_related_instances"] == 1
        assert st["study.change_seq"] == out.change_seq
        assert [c["kind"] for c in index.changes_since(0)] == ["stored", "replaced"]


class TestConcurrency:
    def test_same_sop_from_many_threads_leaves_one_row(self, index: Index, tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "a.dcm")
        rows = extract(ds)
        results: list[str] = []
        barrier = threading.Barrier(8)

        def work() -> None:
            barrier.wait()
            out = index.add_instance(
                rows, BlobInfo(new_key(), 1, "0" * 64, ExplicitVRLittleEndian),
                sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                study_instance_uid=ds.StudyInstanceUID,
                series_instance_uid=ds.SeriesInstanceUID,
                source_aet=None, source_address=None, policy="keep")
            results.append(out.status)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["added"] + ["exists"] * 7
        assert index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 1}
        assert len(index.storage_keys()) == 1
        assert index.last_change() == 1

    def test_different_instances_from_many_threads(self, index: Index, tmp_path: Path) -> None:
        study, series_uids = new_uid(), [new_uid() for _ in range(3)]
        datasets = [make_instance(tmp_path / f"{i}.dcm", study_uid=study,
                                  series_uid=series_uids[i % 3]) for i in range(24)]

        def work(chunk: list[Any]) -> None:
            for ds in chunk:
                index.add_instance(
                    extract(ds), BlobInfo(new_key(), 1, "0" * 64, ExplicitVRLittleEndian),
                    sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                    study_instance_uid=ds.StudyInstanceUID,
                    series_instance_uid=ds.SeriesInstanceUID,
                    source_aet=None, source_address=None, policy="keep")

        threads = [threading.Thread(target=work, args=(datasets[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        st = _one(index, QueryLevel.STUDY, StudyInstanceUID=study)
        assert st["study.number_of_study_related_instances"] == 24
        assert st["study.number_of_study_related_series"] == 3
        assert [c["seq"] for c in index.changes_since(0)] == list(range(1, 25))


class TestFailures:
    def test_trigger_failure_is_an_index_error_not_a_duplicate(self, index: Index, add: Adder,
                                                              tmp_path: Path) -> None:
        with sqlite3.connect(tmp_path / "index.sqlite") as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON instance "
                         "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        with pytest.raises(IndexError_, match="IntegrityError"):
            add()
        assert index.counts() == {"patient": 0, "study": 0, "series": 0, "instance": 0}
        assert index.last_change() == 0

    def test_missing_table_is_an_index_error(self, index: Index, add: Adder,
                                             tmp_path: Path) -> None:
        with sqlite3.connect(tmp_path / "index.sqlite") as conn:
            conn.execute("DROP TABLE change")
        with pytest.raises(IndexError_, match="OperationalError"):
            add()
        assert index.counts()["instance"] == 0

    def test_a_full_disk_is_named(self, tmp_path: Path) -> None:
        """SQLite's "database or disk is full" is said as such (it was "OperationalError")."""
        from archivist.testing.fs import mount_tmpfs, unmount

        disk = tmp_path / "disk"
        disk.mkdir()
        reason = mount_tmpfs(disk, "4m")
        if reason is not None:
            pytest.skip(reason)
        try:
            full = Index(f"sqlite:///{disk / 'index.sqlite'}")
            full.migrate()
            with open(disk / "filler", "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError:
                    pass
            adder = Adder(full, tmp_path)
            with pytest.raises(IndexError_, match="disk holding the index is full"):
                for _ in range(50):  # the first may still fit in pages SQLite holds
                    adder()
            full.close()
        finally:
            unmount(disk)


class TestSearch:
    @pytest.fixture
    def filled(self, index: Index, add: Adder) -> Index:
        add(patient_name="DOE^JOHN", patient_id="P1", study_date="20240101", modality="CT",
            accession_number="A_1", series_number=1, instance_number=1)
        add(patient_name="Doe^Jane", patient_id="P2", study_date="20240615", modality="MR",
            accession_number="A%2", series_number=2, instance_number=2)
        add(patient_name="Müller^Jürgen", patient_id="P3", study_date="20231231", modality="US",
            accession_number="AX2", series_number=3, instance_number=3, charset="ISO_IR 192")
        return index

    def _ids(self, index: Index, level: QueryLevel, pairs: list[tuple[str, str]],
             fold: bool = True) -> list[str]:
        q = build_query(level, pairs, pn_case_insensitive=fold)
        return sorted(r["patient.patient_id"] for r in index.search(q))

    @pytest.mark.parametrize(("pairs", "ids"), [
        ([("PatientName", "doe*")], ["P1", "P2"]),
        ([("PatientName", "DOE^JOHN")], ["P1"]),
        ([("PatientName", "muller*")], ["P3"]),
        ([("PatientName", "MÜLLER^JÜRGEN")], ["P3"]),
        ([("PatientName", "D?E^J*")], ["P1", "P2"]),
        ([("PatientID", "P1\\P3")], ["P1", "P3"]),
        ([("StudyDate", "20240101-")], ["P1", "P2"]),
        ([("StudyDate", "-20240101")], ["P1", "P3"]),
        ([("StudyDate", "20240102-20240615")], ["P2"]),
        ([("StudyDate", "20240615")], ["P2"]),
        ([("AccessionNumber", "A_1")], ["P1"]),
        ([("AccessionNumber", "A_?")], ["P1"]),
        ([("AccessionNumber", "A%*")], ["P2"]),
        ([("AccessionNumber", "A?2")], ["P2", "P3"]),
        ([("PatientID", "")], ["P1", "P2", "P3"]),
    ])
    def test_study_level(self, filled: Index, pairs: list[tuple[str, str]],
                         ids: list[str]) -> None:
        assert self._ids(filled, QueryLevel.STUDY, pairs) == ids

    def test_case_sensitive_pn_when_folding_is_off(self, filled: Index) -> None:
        assert self._ids(filled, QueryLevel.STUDY, [("PatientName", "doe*")], fold=False) == []
        assert self._ids(filled, QueryLevel.STUDY, [("PatientName", "Doe*")], fold=False) == ["P2"]

    def test_modalities_in_study(self, filled: Index) -> None:
        assert self._ids(filled, QueryLevel.STUDY, [("ModalitiesInStudy", "CT")]) == ["P1"]
        assert self._ids(filled, QueryLevel.STUDY, [("ModalitiesInStudy", "MR\\US")]) == ["P2", "P3"]
        assert self._ids(filled, QueryLevel.STUDY, [("ModalitiesInStudy", "C")]) == []

    def test_series_and_image_levels(self, filled: Index) -> None:
        assert self._ids(filled, QueryLevel.SERIES, [("Modality", "MR")]) == ["P2"]
        assert self._ids(filled, QueryLevel.SERIES, [("SeriesNumber", "3")]) == ["P3"]
        assert self._ids(filled, QueryLevel.IMAGE, [("InstanceNumber", "1\\2")]) == ["P1", "P2"]
        assert self._ids(filled, QueryLevel.IMAGE, [("SOPClassUID", CTImageStorage)]) == ["P1"]

    def test_limit_offset_and_order(self, filled: Index) -> None:
        q = build_query(QueryLevel.STUDY, [("StudyInstanceUID", "")])
        everything = [r["patient.patient_id"] for r in filled.search(q)]
        assert everything == ["P1", "P2", "P3"]
        assert [r["patient.patient_id"] for r in filled.search(q, limit=2)] == ["P1", "P2"]
        assert [r["patient.patient_id"] for r in filled.search(q, limit=2, offset=2)] == ["P3"]

    def test_rows_carry_attrs(self, filled: Index) -> None:
        row = next(filled.search(build_query(QueryLevel.IMAGE, [("PatientID", "P3")])))
        attrs = attrs_of(row, "instance")
        assert attrs["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]
        assert attrs_of({"instance.attrs": "not json"}, "instance") == {}
        assert attrs_of({}, "instance") == {}


def _table_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = sqlite3.connect(path)
    try:
        names = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name != 'alembic_version'")]
        out = {}
        for name in names:
            cols = [r[1] for r in con.execute(f"PRAGMA table_info({name})")]
            keep = [c for c in cols if c not in ("at", "received_at", "updated_at")]
            out[name] = sorted(map(tuple, con.execute(
                f"SELECT {', '.join(keep)} FROM {name}")), key=repr)
        return out
    finally:
        con.close()


def test_the_sqlite_fast_path_writes_what_sqlalchemy_core_writes(tmp_path: Path) -> None:
    """The raw-driver statements of ingest (inserts, lookups, aggregate updates) and the
    SQLAlchemy Core statements other databases run leave identical rows: same objects stored,
    one duplicate and one replacement, through both paths."""
    from archivist.index.repository import AddRequest

    study = new_uid()
    specs = [{"study_uid": study, "series_uid": s, "modality": m, "patient_id": "P9",
              "sop_uid": new_uid()}
             for s, m in ((new_uid(), "CT"), (new_uid(), "PR")) for _ in range(3)]
    specs.append({"patient_id": "P8", "sop_uid": new_uid()})
    datasets = [make_instance(tmp_path / f"src{i}.dcm", **kw) for i, kw in enumerate(specs)]

    def requests(policy: str) -> list[AddRequest]:
        return [AddRequest(extract(ds), BlobInfo(f"key{i}", 100 + i, "0" * 64,
                                                 ExplicitVRLittleEndian),
                           sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                           study_instance_uid=ds.StudyInstanceUID,
                           series_instance_uid=ds.SeriesInstanceUID, source_aet="M",
                           source_address="10.0.0.1", policy=policy)
                for i, ds in enumerate(datasets)]

    tables = []
    for raw in (True, False):
        db = tmp_path / f"index-{raw}.sqlite"
        idx = Index(f"sqlite:///{db}")
        idx.migrate()
        assert idx._sql.raw
        idx._sql.raw = raw
        try:
            first = idx.add_instances(requests("keep")[:4])
            rest = idx.add_instances(requests("keep")[3:])
            again = idx.add_instances(requests("replace")[:1])
        finally:
            idx.close()
        assert [o.status for o in first] == ["added"] * 4
        assert [getattr(o, "status", o) for o in rest] == ["exists"] + ["added"] * 3
        assert again[0].status == "replaced"  # type: ignore[union-attr]
        tables.append(_table_rows(db))
    fast, core = tables
    assert fast.keys() == core.keys()
    for name in fast:
        assert fast[name] == core[name], name
    study_row = [r for r in fast["study"] if study in r]
    assert study_row, "the study row is there"


def test_a_write_lock_held_elsewhere_is_an_index_error_and_the_writer_recovers(
        index: Index, add: Adder, tmp_path: Path) -> None:
    """BEGIN IMMEDIATE runs on the driver's connection: when another connection holds the write
    lock past the busy timeout, the store gets IndexError_ (not a bare sqlite3 error) and the
    next write, once the lock is free, succeeds."""
    add()
    with index._write_lock:
        index._writer_connection().connection.driver_connection.execute(
            "PRAGMA busy_timeout=50")
    other = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(IndexError_):
            add()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert add().status == "added"
    assert index.counts()["instance"] == 2
