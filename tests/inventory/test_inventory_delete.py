# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""Deletion with tombstones (issue 8): the index after a delete, Repository Query paging with
inserts and deletes between pages, removed records in Repository Query and in inventories,
purge, re-store, and delete over HTTP (a real ``archivist serve``) and the CLI (a real
``archivist`` process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from inventory_helpers import archive, fill, make_server, open_archive  # noqa: F401
from pydicom.dataset import Dataset

from archivist.archive.archive import Archive
from archivist.archive.delete import Deletion
from archivist.core.levels import QueryLevel
from archivist.errors import NotFound, QueryError
from archivist.index.removal import REASONS, count
from archivist.inventory.builder import InventoryBuilder, InventorySpec
from archivist.inventory.model import Inventory
from archivist.inventory.records import (
    LIMIT_REACHED,
    InvalidRecordKey,
    RepositoryQuery,
    decode_record_key,
    encode_record_key,
)

UNIQUE = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


def _ident(level: str, *, removed: str | None = "", **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = ""
    if level != "STUDY":
        ds.SeriesInstanceUID = ""
    if level == "IMAGE":
        ds.SOPInstanceUID = ""
    ds.RecordKey = b""
    if removed is not None:
        ds.RemovedFromOperationalUse = removed
        ds.ReasonForRemovalCodeSequence = []
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def _all(rq: RepositoryQuery, level: str, **kw: Any) -> list[Dataset]:
    return [d for d in rq.page(rq.parse(_ident(level, **kw))) if d is not LIMIT_REACHED]


def _find(archive: Archive, level: QueryLevel, **pairs: str) -> list[Dataset]:
    query = archive.search.query_from_pairs(level, list(pairs.items()))
    return list(archive.search.find(query))


def _deleter(archive: Archive) -> Deletion:
    return Deletion(archive.index, archive.blobs)


class TestIndexAfterDelete:
    def test_instance_delete_updates_aggregates_and_keeps_the_rest(
            self, archive: Archive, tmp_path: Path) -> None:
        made = fill(archive, tmp_path / "a", studies=2, series=2, instances=2)
        victim = made[0]
        before_keys = {archive.index.get_instance(m["sop"])["storage_key"]  # type: ignore[index]
                       for m in made}
        seq_before = archive.index.last_change()
        series_row = _find(archive, QueryLevel.SERIES, SeriesInstanceUID=victim["series"])
        removal = _deleter(archive).delete(victim["study"], victim["series"], victim["sop"])
        assert removal.instances == [victim["sop"]] and not removal.series
        assert not removal.studies and removal.size > 0
        assert archive.index.get_instance(victim["sop"]) is None
        assert archive.index.counts() == {"patient": 2, "study": 2, "series": 4, "instance": 7}
        study = _find(archive, QueryLevel.STUDY, StudyInstanceUID=victim["study"],
                      NumberOfStudyRelatedInstances="", NumberOfStudyRelatedSeries="")[0]
        assert (study.NumberOfStudyRelatedInstances, study.NumberOfStudyRelatedSeries) == (3, 2)
        assert series_row and _find(archive, QueryLevel.SERIES,
                                    SeriesInstanceUID=victim["series"],
                                    NumberOfSeriesRelatedInstances="")[0] \
            .NumberOfSeriesRelatedInstances == 1
        # The blob went after the commit; every other blob is still there and readable.
        keys_now = set(archive.blobs.keys())
        gone = before_keys - keys_now
        assert len(gone) == 1 and removal.storage_keys == list(gone)
        assert before_keys - gone <= keys_now
        for m in made[1:]:
            row = archive.index.get_instance(m["sop"])
            assert row is not None
            with archive.blobs.open(row["storage_key"]) as fh:  # type: ignore[attr-defined]
                assert len(fh.read()) == row["size"]
        # The change log moved on, and the series' change sequence with it (metadata cache key).
        assert archive.index.last_change() > seq_before
        rows = list(archive.search.rows(archive.search.query_from_pairs(
            QueryLevel.SERIES, [("SeriesInstanceUID", victim["series"])])))
        assert int(rows[0]["series.change_seq"]) == removal.change_seq
        assert not _find(archive, QueryLevel.IMAGE, SOPInstanceUID=victim["sop"])

    def test_last_instance_takes_series_study_and_patient(self, archive: Archive,
                                                          tmp_path: Path) -> None:
        made = fill(archive, tmp_path / "a", studies=2, series=1, instances=1, modality="MR")
        d = _deleter(archive)
        removal = d.delete(made[0]["study"], None, made[0]["sop"])
        assert removal.series == [made[0]["series"]] and removal.studies == [made[0]["study"]]
        assert archive.index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 1}
        assert not _find(archive, QueryLevel.PATIENT, PatientID="P0")
        assert _find(archive, QueryLevel.STUDY, StudyInstanceUID=made[1]["study"])

    def test_series_delete_recomputes_modalities(self, archive: Archive, tmp_path: Path) -> None:
        made = fill(archive, tmp_path / "a", studies=1, series=1, instances=2, modality="CT")
        more = fill(archive, tmp_path / "b", studies=1, series=1, instances=1, modality="MR")
        # Put the MR series into the CT study: same study UID, new series.
        from archivist.archive.ingest import Origin
        from archivist.testing.datasets import make_instance, new_uid

        mr_series = new_uid()
        path = tmp_path / "mr.dcm"
        make_instance(path, study_uid=made[0]["study"], series_uid=mr_series, patient_id="P0",
                      patient_name="NAME^P0", modality="MR")
        archive.ingest.store_file(path, Origin("import"), consume=True)
        study = _find(archive, QueryLevel.STUDY, StudyInstanceUID=made[0]["study"],
                      ModalitiesInStudy="")[0]
        assert sorted(study.ModalitiesInStudy) == ["CT", "MR"]
        _deleter(archive).delete(made[0]["study"], mr_series)
        study = _find(archive, QueryLevel.STUDY, StudyInstanceUID=made[0]["study"],
                      ModalitiesInStudy="", NumberOfStudyRelatedSeries="")[0]
        assert study.ModalitiesInStudy == "CT" and study.NumberOfStudyRelatedSeries == 1
        assert _find(archive, QueryLevel.STUDY, StudyInstanceUID=more[0]["study"])

    def test_unknown_and_malformed(self, archive: Archive, tmp_path: Path) -> None:
        made = fill(archive, tmp_path / "a", studies=1)
        d = _deleter(archive)
        with pytest.raises(NotFound):
            d.delete("1.2.3.4")
        with pytest.raises(NotFound):
            d.delete(made[0]["study"], "1.2.3.4")
        with pytest.raises(NotFound):
            d.delete(made[0]["study"], made[0]["series"], "1.2.3.4")
        with pytest.raises(QueryError):
            d.delete("1.2.x")
        assert archive.index.counts()["instance"] == 1 and count(archive.index) == 0


class TestRemovedRecords:
    def test_repository_query_reports_removed_records(self, archive: Archive,
                                                      tmp_path: Path) -> None:
        made = fill(archive, tmp_path / "a", studies=3, series=1, instances=2)
        rq = RepositoryQuery(archive.search)
        keys_before = {d.StudyInstanceUID: d.RecordKey for d in _all(rq, "STUDY")}
        _deleter(archive).delete(made[4]["study"], reason=REASONS["safety"])
        _deleter(archive).delete(made[0]["study"], made[0]["series"], made[0]["sop"])
        studies = _all(rq, "STUDY")
        assert [d.StudyInstanceUID for d in studies] == [m["study"] for m in made[::2]]
        by_uid = {d.StudyInstanceUID: d for d in studies}
        assert set(by_uid) == {m["study"] for m in made}
        gone = by_uid[made[4]["study"]]
        assert gone.RemovedFromOperationalUse == "YES"
        reason = gone.ReasonForRemovalCodeSequence[0]
        assert (reason.CodeValue, reason.CodingSchemeDesignator) == ("113037", "DCM")
        assert by_uid[made[0]["study"]].RemovedFromOperationalUse == "NO"
        # A removed record keeps its record key.
        assert {u: d.RecordKey for u, d in by_uid.items()} == keys_before
        images = _all(rq, "IMAGE")
        removed = sorted(d.SOPInstanceUID for d in images if d.RemovedFromOperationalUse == "YES")
        assert removed == sorted([made[0]["sop"], made[4]["sop"], made[5]["sop"]])
        assert [d.SOPInstanceUID for d in _all(rq, "IMAGE", removed="YES")] == \
            [d.SOPInstanceUID for d in images if d.RemovedFromOperationalUse == "YES"]
        assert len(_all(rq, "IMAGE", removed="NO")) == 3
        # An SCU that does not ask for Removed from Operational Use sees only live records.
        assert len(_all(rq, "IMAGE", removed=None)) == 3
        # Matching applies to removed records, on the values they had.
        assert [d.StudyInstanceUID for d in _all(rq, "STUDY", PatientID="P2")] == \
            [made[4]["study"]]
        assert not _all(rq, "STUDY", PatientID="P2", removed="NO")

    def test_paging_with_inserts_and_deletes_between_pages(self, archive: Archive,
                                                           tmp_path: Path) -> None:
        """A chain of pages returns every record once, in key order, whatever happens between
        pages: removed records come back as removed (with the key they had), new records come
        later, and a new row given the primary key of a removed one (SQLite reuses the
        largest) is a record of its own."""
        made = fill(archive, tmp_path / "a", studies=8)
        studies = [m["study"] for m in made]
        rq = RepositoryQuery(archive.search)
        d = _deleter(archive)
        seen: list[Dataset] = []
        prior = None
        inserted: list[str] = []
        page = 0
        while True:
            ident = _ident("STUDY", MaximumNumberOfRecords=3)
            if prior is not None:
                ident.PriorRecordKey = prior
            items = list(rq.page(rq.parse(ident)))
            records = [i for i in items if i is not LIMIT_REACHED]
            seen.extend(records)
            page += 1
            if page == 1:
                d.delete(studies[1])   # already seen
                d.delete(studies[5])   # not seen yet
                d.delete(studies[7])   # the newest row: its primary key is given again
                inserted += [m["study"] for m in fill(archive, tmp_path / "b", studies=2)]
            elif page == 2:
                d.delete(inserted[0])  # inserted then removed before it is seen
                inserted += [m["study"] for m in fill(archive, tmp_path / "c", studies=1)]
            if not (items and items[-1] is LIMIT_REACHED):
                break
            prior = records[-1].RecordKey
        keys = [bytes(r.RecordKey) for r in seen]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        uids = [r.StudyInstanceUID for r in seen]
        assert len(uids) == len(set(uids))
        assert set(uids) == set(studies) | set(inserted)
        status = {r.StudyInstanceUID: r.RemovedFromOperationalUse for r in seen}
        assert status[studies[1]] == "NO"  # seen before it was removed
        assert status[studies[5]] == status[studies[7]] == status[inserted[0]] == "YES"
        assert all(status[u] == "NO" for u in (*studies[:5], studies[6], *inserted[1:]))
        # A new study shares a primary key with a removed one, and not its record key.
        pks = {decode_record_key(QueryLevel.STUDY, k)[0] for k in keys}
        assert len(pks) < len(keys)
        # Afterwards, the same chain in one query gives the same records.
        single = _all(rq, "STUDY")
        assert {r.StudyInstanceUID for r in single} == set(uids)
        assert [bytes(r.RecordKey) for r in single] == sorted(bytes(r.RecordKey) for r in single)

    def test_keys(self, archive: Archive, tmp_path: Path) -> None:
        key = encode_record_key(QueryLevel.SERIES, 256, 3)
        assert len(key) == 12 and decode_record_key(QueryLevel.SERIES, key) == (256, 3)
        old = bytes([1, 2]) + (256).to_bytes(8, "big")  # version 1, before deletion existed
        assert decode_record_key(QueryLevel.SERIES, old) == (256, 0)
        with pytest.raises(InvalidRecordKey):
            decode_record_key(QueryLevel.STUDY, key)
        made = fill(archive, tmp_path / "a", studies=2)
        rq = RepositoryQuery(archive.search)
        last = _all(rq, "STUDY")[-1].RecordKey
        _deleter(archive).delete(made[-1]["study"])
        # The key of a removed record (the highest one) stays valid.
        assert rq.parse(_ident("STUDY", PriorRecordKey=last)).prior_pk == \
            decode_record_key(QueryLevel.STUDY, last)[0]

    def test_purge_and_restore(self, archive: Archive, tmp_path: Path) -> None:
        made = fill(archive, tmp_path / "a", studies=3, series=1, instances=1)
        d = _deleter(archive)
        d.delete(made[0]["study"])
        d.delete(made[1]["study"])
        assert count(archive.index) == 6  # study, series, instance each
        rq = RepositoryQuery(archive.search)
        assert d.purge(older_than_days=1) == 0
        assert len(_all(rq, "STUDY", removed="YES")) == 2
        # Storing a removed object again clears its tombstones (instance, series, study).
        from archivist.archive.ingest import Origin
        from archivist.testing.datasets import make_instance

        path = tmp_path / "again.dcm"
        make_instance(path, study_uid=made[0]["study"], series_uid=made[0]["series"],
                      sop_uid=made[0]["sop"], patient_id="P0", patient_name="NAME^P0")
        archive.ingest.store_file(path, Origin("import"), consume=True)
        assert count(archive.index) == 3
        assert [x.StudyInstanceUID for x in _all(rq, "STUDY", removed="YES")] == \
            [made[1]["study"]]
        assert len(_all(rq, "STUDY")) == 3
        assert d.purge() == 3
        assert not _all(rq, "STUDY", removed="YES") and len(_all(rq, "STUDY")) == 2

    def test_inventory_after_delete_reports_removed_records(self, archive: Archive,
                                                            tmp_path: Path) -> None:
        made = fill(archive, tmp_path / "a", studies=3, series=1, instances=2)
        d = _deleter(archive)
        d.delete(made[0]["study"])
        d.delete(made[2]["study"], made[2]["series"], made[2]["sop"])
        built = InventoryBuilder(archive).build(InventorySpec(level="INSTANCE"))
        items = {i.StudyInstanceUID: i for i in built.root.InventoriedStudiesSequence}
        assert set(items) == {made[0]["study"], made[2]["study"], made[4]["study"]}
        assert built.total_studies == 3
        gone = items[made[0]["study"]]
        assert gone.RemovedFromOperationalUse == "YES"
        assert gone.ReasonForRemovalCodeSequence[0].CodeValue == "113001"
        live = items[made[2]["study"]]
        assert live.RemovedFromOperationalUse == "NO"
        insts = {i.SOPInstanceUID: i for s in live.InventoriedSeriesSequence
                 for i in s.InventoriedInstancesSequence}
        assert insts[made[2]["sop"]].RemovedFromOperationalUse == "YES"
        assert insts[made[3]["sop"]].RemovedFromOperationalUse == "NO"
        # Read back, removed records do not count as held.
        inv = Inventory.from_datasets(built.instances)
        assert inv.counts() == {"studies": 2, "series": 2, "instances": 3}


# -- over HTTP and from the command line ----------------------------------------------------


def _http(method: str, url: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class TestHttpAndCli:
    def test_delete_over_http(self, open_archive, make_server,  # type: ignore[no-untyped-def]
                              tmp_path: Path) -> None:
        data = tmp_path / "srv"
        a = open_archive(data)
        made = fill(a, tmp_path / "in", studies=2, series=2, instances=2)
        a.close()
        srv = make_server(data=data)
        base = f"{srv.url}/api/studies"
        m = made[0]
        status, body = _http("DELETE", f"{base}/{m['study']}/series/{m['series']}/instances/"
                                       f"{m['sop']}?reason=retention")
        assert status == 200 and body["removed"]["instances"] == 1
        assert body["reason"]["CodeValue"] == "113039"
        assert _http("DELETE", f"{base}/{m['study']}/series/{m['series']}/instances/"
                               f"{m['sop']}")[0] == 404
        assert _http("DELETE", f"{base}/1.2.abc")[0] == 400
        assert _http("DELETE", f"{base}/{m['study']}?reason=whim")[0] == 400
        status, body = _http("DELETE", f"{base}/{m['study']}/series/{made[2]['series']}")
        assert status == 200 and body["removed"]["series"] == 1
        status, body = _http("DELETE", f"{base}/{m['study']}")
        assert status == 200 and body["removed"] == {"studies": 1, "series": 1,
                                                     "instances": 1, "bytes": body["removed"]
                                                     ["bytes"]}
        assert _http("DELETE", f"{base}/{m['study']}")[0] == 404
        # QIDO and WADO no longer see it; the other study is whole.
        with urllib.request.urlopen(f"{srv.url}/dicomweb/studies", timeout=30) as resp:
            studies = json.loads(resp.read())
        assert [s["0020000D"]["Value"][0] for s in studies] == [made[4]["study"]]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{srv.url}/dicomweb/studies/{m['study']}/metadata",
                                   timeout=30)
        assert err.value.code == 404
        with urllib.request.urlopen(
                f"{srv.url}/dicomweb/studies/{made[4]['study']}/metadata", timeout=30) as resp:
            assert len(json.loads(resp.read())) == 4

    def test_delete_and_purge_from_the_cli(self, open_archive,  # type: ignore[no-untyped-def]
                                           tmp_path: Path) -> None:
        data = tmp_path / "cli"
        a = open_archive(data)
        made = fill(a, tmp_path / "in", studies=2)
        a.close()
        exe = [sys.executable, "-m", "archivist.cli.main"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*exe, *args, "--data", str(data)], check=False,
                                  capture_output=True,
                                  text=True, env=env, timeout=120)

        done = run("delete", "--study", made[0]["study"], "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["removed"]["instances"] == 1
        assert run("delete", "--study", made[0]["study"]).returncode == 1
        assert run("delete", "--study", made[1]["study"], "--reason", "whim").returncode == 2
        kept = run("purge-tombstones", "--older-than", "1")
        assert kept.returncode == 0 and "purged 0" in kept.stdout
        purged = run("purge-tombstones")
        assert purged.returncode == 0 and "purged 3" in purged.stdout
        b = open_archive(data)
        assert b.index.counts()["study"] == 1 and count(b.index) == 0


class TestDiff:
    def test_sizes_and_removed_records(self, archive: Archive, tmp_path: Path) -> None:
        from archivist.inventory.diff import diff
        from archivist.inventory.sources import of_archive

        made = fill(archive, tmp_path / "a", studies=2, series=1, instances=2)
        before = of_archive(archive)
        exported = before.to_json()
        inst = exported["studies"][0]["series"][0]["instances"][0]
        assert inst["size"] == archive.index.get_instance(inst["SOPInstanceUID"])["size"]  # type: ignore[index]
        assert diff(Inventory.from_json(exported), of_archive(archive)).identical
        inst["size"] += 2
        result = diff(Inventory.from_json(exported), of_archive(archive))
        assert [(d.kind, d.level, d.uid) for d in result.differences] == \
            [("different", "INSTANCE", inst["SOPInstanceUID"])]
        assert "size" in result.differences[0].detail
        # A DICOM inventory made after a delete lists the study as removed: the diff says so.
        _deleter(archive).delete(made[0]["study"])
        after = Inventory.from_datasets(
            InventoryBuilder(archive).build(InventorySpec(level="STUDY")).instances)
        assert after.removed == {made[0]["study"]: "STUDY"}
        result = diff(before, after)
        assert [(d.kind, d.uid, d.detail) for d in result.differences] == \
            [("missing", made[0]["study"], "removed from operational use")]
