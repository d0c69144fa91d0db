# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""The Inventory IOD built from the index: content against the index, scope, splitting and
chaining, storage through the one ingest, our validator, JSON/CSV export, and diff."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pydicom
import pytest
from inventory_helpers import archive, fill, open_archive  # noqa: F401
from typer.testing import CliRunner

from archivist.archive.archive import Archive
from archivist.cli.main import app
from archivist.errors import QueryError
from archivist.inventory import INVENTORY_STORAGE
from archivist.inventory.builder import InventoryBuilder, InventorySpec, to_part10
from archivist.inventory.catalogue import Catalogue
from archivist.inventory.diff import diff
from archivist.inventory.model import Inventory
from archivist.inventory.sources import of_archive


class TestContent:
    def test_instance_level_matches_the_index(self, archive: Archive, tmp_path: Path) -> None:
        made = fill(archive, tmp_path / "in", studies=3, series=2, instances=2)
        built = InventoryBuilder(archive).build(InventorySpec(level="INSTANCE"))
        assert len(built.instances) == 1 and built.total_studies == 3
        ds = built.root
        assert ds.SOPClassUID == INVENTORY_STORAGE
        assert ds.InventoryLevel == "INSTANCE" and ds.InventoryCompletionStatus == "COMPLETE"
        assert ds.NumberOfStudyRecordsInInstance == 3 and ds.TotalNumberOfStudyRecords == 3
        assert len(ds.ScopeOfInventorySequence) == 0
        got = {(st.StudyInstanceUID, se.SeriesInstanceUID, i.SOPInstanceUID, i.SOPClassUID)
               for st in ds.InventoriedStudiesSequence
               for se in st.InventoriedSeriesSequence
               for i in se.InventoriedInstancesSequence}
        assert got == {(m["study"], m["series"], m["sop"], m["class"]) for m in made}
        for st in ds.InventoriedStudiesSequence:
            assert st.NumberOfStudyRelatedSeries == 2 and st.NumberOfStudyRelatedInstances == 4
            assert st.ModalitiesInStudy == "CT" and st.PatientID.startswith("P")
            assert st.StudyUpdateDateTime.endswith("+0000") and st.ItemInventoryDateTime
        # Re-reading the Part 10 bytes gives the same UV / CS values.
        again = pydicom.dcmread(io.BytesIO(to_part10(ds)))
        assert int(again.TotalNumberOfStudyRecords) == 3

    def test_study_level_has_no_series(self, archive: Archive, tmp_path: Path) -> None:
        fill(archive, tmp_path / "in", studies=2, series=2)
        ds = InventoryBuilder(archive).build(InventorySpec(level="study")).root
        assert ds.InventoryLevel == "STUDY"
        assert all("InventoriedSeriesSequence" not in st for st in ds.InventoriedStudiesSequence)

    def test_scope(self, archive: Archive, tmp_path: Path) -> None:
        fill(archive, tmp_path / "a", studies=3, modality="CT", patient_prefix="A")
        mr = fill(archive, tmp_path / "b", studies=2, modality="MR", patient_prefix="B")
        builder = InventoryBuilder(archive)
        ds = builder.build(InventorySpec(level="SERIES", scope=[("Modality", "MR")])).root
        assert {st.StudyInstanceUID for st in ds.InventoriedStudiesSequence} == {
            m["study"] for m in mr}
        scope = ds.ScopeOfInventorySequence[0]
        assert scope.GeneralMatchingSequence[0].Modality == "MR"
        ds = builder.build(InventorySpec(scope=[("PatientID", "A*"),
                                                ("StudyDate", "20240101-20240201")])).root
        assert ds.TotalNumberOfStudyRecords == 1
        assert ds.ScopeOfInventorySequence[0].RangeMatchingSequence[0].StudyDate == \
            "20240101-20240201"
        with pytest.raises(QueryError):
            InventorySpec(level="PATIENT")

    def test_scope_with_empty_value_matching(self, archive: Archive, tmp_path: Path) -> None:
        """A scope key of "" is Empty Value Matching (PS3.4 C.2.2.2.7): the studies where the
        attribute is absent or empty; the Inventory's scope says so in its Empty Value Matching
        Sequence, not in the General Matching one."""
        fill(archive, tmp_path / "a", studies=2)  # Study Description "Test study"
        builder = InventoryBuilder(archive)
        ds = builder.build(InventorySpec(scope=[("StudyDescription", '""')])).root
        assert ds.TotalNumberOfStudyRecords == 0
        ds = builder.build(InventorySpec(scope=[("InstitutionName", '""')])).root  # absent
        assert ds.TotalNumberOfStudyRecords == 2
        scope = ds.ScopeOfInventorySequence[0]
        assert "InstitutionName" in scope.EmptyValueMatchingSequence[0]
        assert "GeneralMatchingSequence" not in scope


class TestSplitAndStore:
    def test_split_chain_store_retrieve(self, archive: Archive, tmp_path: Path) -> None:
        fill(archive, tmp_path / "in", studies=7, instances=2)
        before = archive.index.counts()["study"]
        built, results = InventoryBuilder(archive).create(
            InventorySpec(level="INSTANCE", studies_per_instance=3, purpose="backup check"))
        assert len(built.instances) == 4  # root + 3 leaves (3 + 3 + 1 studies)
        root = built.root
        assert root.NumberOfStudyRecordsInInstance == 0 and root.TotalNumberOfStudyRecords == 7
        leaves = [r.ReferencedSOPInstanceUID for r in root.IncorporatedInventoryInstanceSequence]
        assert leaves == [ds.SOPInstanceUID for ds in built.instances[1:]]
        assert [ds.NumberOfStudyRecordsInInstance for ds in built.instances[1:]] == [3, 3, 1]
        assert all(r.status.value == "stored" for r in results)
        # One container study for the whole tree; inventories are not inventory records.
        assert archive.index.counts()["study"] == before + 1
        again = InventoryBuilder(archive).build(InventorySpec()).root
        assert again.TotalNumberOfStudyRecords == 7
        cat = Catalogue(archive)
        assert [r.ref.sop_instance_uid for r in cat.roots()] == [root.SOPInstanceUID]
        assert cat.latest().get("InventoryPurpose") == "backup check"  # type: ignore[union-attr]
        stored = cat.datasets(root.SOPInstanceUID)
        inv = Inventory.from_datasets(stored)
        assert inv.counts() == {"studies": 7, "series": 7, "instances": 14}
        assert diff(inv, of_archive(archive)).identical

    def test_our_validator_accepts_it(self, archive: Archive, tmp_path: Path) -> None:
        from archivist.validate.validator import validate_dataset

        fill(archive, tmp_path / "in", studies=2, series=2, instances=2)
        ds = InventoryBuilder(archive).build(InventorySpec(level="INSTANCE")).root
        ds = pydicom.dcmread(io.BytesIO(to_part10(ds)))
        findings = validate_dataset(ds)
        errors = [f for f in findings if str(getattr(f, "severity", "")).endswith("error")]
        assert errors == [], [getattr(f, "message", f) for f in errors]


class TestExportAndDiff:
    def test_json_csv_round_trip(self, archive: Archive, tmp_path: Path) -> None:
        fill(archive, tmp_path / "in", studies=2, series=2, instances=2)
        inv = of_archive(archive)
        again = Inventory.from_json(json.loads(json.dumps(inv.to_json())))
        assert diff(inv, again).identical
        rows = list(csv.DictReader(io.StringIO(inv.to_csv())))
        assert len(rows) == 8 and all(r["SOPInstanceUID"] for r in rows)

    def test_diff_reports_missing_extra_different(self, archive: Archive, tmp_path: Path) -> None:
        fill(archive, tmp_path / "in", studies=3, series=2, instances=2)
        a = of_archive(archive)
        b = Inventory.from_json(a.to_json())
        studies = list(b.studies.values())
        del b.studies[studies[0].study_instance_uid]
        series = next(iter(studies[1].series.values()))
        lost = next(iter(series.instances))
        del series.instances[lost]
        studies[2].number_of_instances = 99
        b.add_study(pydicom.Dataset())  # an extra (empty UID) study
        result = diff(a, b)
        kinds = {(d.kind, d.level) for d in result.differences}
        assert ("missing", "STUDY") in kinds and ("missing", "INSTANCE") in kinds
        assert ("different", "STUDY") in kinds and ("extra", "STUDY") in kinds
        assert result.count("missing", "INSTANCE") == 1
        assert not result.identical and "missing" in result.summary()


class TestCli:
    def test_create_list_export_diff(self, archive: Archive, tmp_path: Path) -> None:
        fill(archive, tmp_path / "in", studies=3, series=1, instances=2)
        data = str(archive.settings.data_dir)
        runner = CliRunner()
        r = runner.invoke(app, ["inventory", "create", "--data", data, "--level", "instance",
                                "--studies-per-instance", "2"])
        assert r.exit_code == 0, r.output
        assert "3 studies, 3 instance(s)" in r.output
        r = runner.invoke(app, ["inventory", "list", "--data", data, "--json"])
        assert r.exit_code == 0 and json.loads(r.stdout)[0]["TotalNumberOfStudyRecords"] == 3
        for name in ("inv.dcm", "inv.json", "inv.csv"):
            r = runner.invoke(app, ["inventory", "export", str(tmp_path / name), "--data", data])
            assert r.exit_code == 0, r.output
        assert (tmp_path / "inv-0002.dcm").exists() and (tmp_path / "inv-0003.dcm").exists()
        dcm = [str(tmp_path / n) for n in ("inv.dcm", "inv-0002.dcm", "inv-0003.dcm")]
        r = runner.invoke(app, ["inventory", "diff", ",".join(dcm), str(tmp_path / "inv.json")])
        assert r.exit_code == 0, r.output
        assert "identical" in r.output
        r = runner.invoke(app, ["inventory", "diff", str(tmp_path / "inv.json"), "archive",
                                "--data", data])
        assert r.exit_code == 0, r.output
        fill(archive, tmp_path / "more", studies=1)
        r = runner.invoke(app, ["inventory", "diff", str(tmp_path / "inv.json"), "archive",
                                "--data", data])
        assert r.exit_code == 1 and "extra     STUDY" in r.output
        assert len((tmp_path / "inv.csv").read_text().splitlines()) == 7
        # A CSV export cannot be compared: exit 2, saying so (not "not a DICOM file").
        r = runner.invoke(app, ["inventory", "diff", str(tmp_path / "inv.csv"), "archive",
                                "--data", data])
        assert r.exit_code == 2 and "CSV export cannot be compared" in r.output, r.output
