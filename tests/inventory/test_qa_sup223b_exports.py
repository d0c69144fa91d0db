# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""Supplement 223 inventories as a migration engineer handles them (QA, found by hand):

- ``archivist inventory diff`` given only the root ``inventory.dcm`` of a split DICOM export
  compared 0 studies (every study "extra"): it now reads the leaves the root incorporates from
  the files beside it, and exits 2 naming the ones that are not there;
- a canceled job kept with Retain Instances YES: its root said Total Number of Study Records =
  the studies in scope (6) while root and leaves held 2, and the leaves said COMPLETE;
- the CSV export wrote a Patient ID ``=1+1`` as a formula cell (OWASP "CSV injection");
- a series deleted between two inventories came out of the diff without its Reason for Removal
  (and a JSON export lost the removed records altogether).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from inventory_helpers import fill, open_archive  # noqa: F401
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from archivist.archive.archive import Archive
from archivist.archive.delete import Deletion
from archivist.cli.main import app
from archivist.index.removal import REASONS
from archivist.inventory.builder import InventoryBuilder, InventorySpec
from archivist.inventory.catalogue import Catalogue
from archivist.inventory.creation import CANCELED, InventoryCreation
from archivist.inventory.diff import diff
from archivist.inventory.model import Inventory, InventoryFormatError
from archivist.testing.datasets import make_instance, new_uid


def _export_split(archive: Archive, out: Path) -> list[Path]:
    """Create a SERIES inventory of 2 studies per instance and export it as DICOM to `out`."""
    runner = CliRunner()
    data = str(archive.settings.data_dir)
    r = runner.invoke(app, ["inventory", "create", "--data", data, "--level", "series",
                            "--studies-per-instance", "2"])
    assert r.exit_code == 0, r.output
    out.mkdir()
    r = runner.invoke(app, ["inventory", "export", str(out / "inventory.dcm"), "--data", data])
    assert r.exit_code == 0, r.output
    return sorted(out.iterdir())


class TestSplitDicomExport:
    def test_the_root_alone_reads_the_leaves_beside_it(self, open_archive,
                                                        tmp_path: Path) -> None:
        archive = open_archive()
        fill(archive, tmp_path / "in", studies=5, series=2)
        files = _export_split(archive, tmp_path / "export")
        assert [f.name for f in files] == ["inventory-0002.dcm", "inventory-0003.dcm",
                                           "inventory-0004.dcm", "inventory.dcm"]
        r = CliRunner().invoke(app, ["inventory", "diff", str(tmp_path / "export/inventory.dcm"),
                                     "archive", "--level", "series",
                                     "--data", str(archive.settings.data_dir)])
        assert r.exit_code == 0, r.output
        assert "compared 5 studies, 10 series (down to SERIES level): identical" in r.output
        # a leaf renamed by the user is found by its SOP Instance UID
        (tmp_path / "export/inventory-0003.dcm").rename(tmp_path / "export/leaf-b.dcm")
        inv = Inventory.from_files([tmp_path / "export/inventory.dcm"])
        assert inv.counts() == {"studies": 5, "series": 10, "instances": 0}

    def test_a_missing_leaf_is_an_error_naming_it(self, open_archive, tmp_path: Path) -> None:
        archive = open_archive()
        fill(archive, tmp_path / "in", studies=5)
        _export_split(archive, tmp_path / "export")
        import pydicom

        gone = tmp_path / "export/inventory-0004.dcm"
        gone_uid = str(pydicom.dcmread(gone).SOPInstanceUID)
        gone.unlink()
        with pytest.raises(InventoryFormatError, match=gone_uid):
            Inventory.from_files([tmp_path / "export/inventory.dcm"])
        r = CliRunner().invoke(app, ["inventory", "diff", str(tmp_path / "export/inventory.dcm"),
                                     "archive", "--data", str(archive.settings.data_dir)])
        assert r.exit_code == 2
        assert "1 Inventory instance(s) the root incorporates are not" in r.output


def test_a_kept_canceled_inventory_counts_what_it_holds(open_archive, tmp_path: Path) -> None:
    archive = open_archive()
    fill(archive, tmp_path / "in", studies=6)
    events: list[tuple[int, Dataset]] = []
    engine = InventoryCreation(archive, lambda job, kind, ds: events.append((kind, ds)),
                               studies_per_instance=2, autostart=False)
    engine.initiate("2.25.77", InventorySpec(), requester_aet="SCU")
    job = engine.claim()
    assert job is not None
    engine.run_job(job, max_leaves=1)  # 2 of 6 studies, then the requester cancels
    engine.cancel("2.25.77", True)
    engine.drain_events()
    engine.stop()
    kept = engine.get("2.25.77")
    assert kept is not None and kept.state == CANCELED and kept.root_uid
    tree = Catalogue(archive).datasets(kept.root_uid)
    held = sum(len(ds.get("InventoriedStudiesSequence", [])) for ds in tree)
    assert held == 2
    assert [int(ds.TotalNumberOfStudyRecords) for ds in tree] == [held] * len(tree)
    assert [ds.InventoryCompletionStatus for ds in tree] == ["PARTIAL"] * len(tree)
    assert sum(int(ds.NumberOfStudyRecordsInInstance) for ds in tree) == held
    final = [ds for kind, ds in events if kind == 11]
    assert len(final) == 1 and int(final[0].TotalNumberOfStudyRecords) == held
    assert kept.studies_total == 6  # the job still says how many studies were in scope


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(tmp_path: Path,
                                                            open_archive) -> None:
    from archivist.archive.ingest import Origin

    archive = open_archive()
    ids = ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "OK-1"]
    for n, pid in enumerate(ids):
        path = tmp_path / f"{n}.dcm"
        make_instance(path, study_uid=new_uid(), series_uid=new_uid(), patient_id=pid,
                      patient_name=f"CSV^{n}", modality="CT")
        archive.ingest.store_file(path, Origin("import"), consume=True)
    built = InventoryBuilder(archive).build(InventorySpec(level="INSTANCE"))
    inv = Inventory.from_datasets(built.instances)
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(inv.to_csv())))
    assert sorted(r["PatientID"] for r in rows) == sorted(
        ["'=1+1", "'+SUM(A1)", "'-2+3", "'@cmd", "'\tx", "OK-1"])
    # the JSON export (what `inventory diff` reads) keeps the values as stored
    back = Inventory.from_json(json.loads(json.dumps(inv.to_json())))
    assert sorted(s.patient_id for s in back.studies.values()) == sorted(ids)
    assert diff(inv, back).identical


def test_a_deleted_series_diffs_with_its_reason_also_through_json(open_archive,
                                                                  tmp_path: Path) -> None:
    archive = open_archive()
    made = fill(archive, tmp_path / "in", studies=2, series=2, instances=3)
    builder = InventoryBuilder(archive)
    before = Inventory.from_datasets(builder.build(InventorySpec(level="INSTANCE")).instances)
    victim = made[3]  # study 0, series 1
    Deletion(archive.index, archive.blobs).delete(victim["study"], victim["series"],
                                                 reason=REASONS["safety"])
    after = Inventory.from_datasets(builder.build(InventorySpec(level="INSTANCE")).instances)
    after_json = Inventory.from_json(json.loads(json.dumps(after.to_json())))
    for other in (after, after_json):
        result = diff(before, other)
        missing = [d for d in result.differences if d.kind == "missing"]
        assert [(d.level, d.uid) for d in missing] == [("SERIES", victim["series"])]
        assert missing[0].detail == "removed from operational use"
        assert missing[0].reason == "113037 DCM Rejected for Patient Safety Reasons"
        assert "Rejected for Patient Safety Reasons" in missing[0].line()
        assert [d.kind for d in result.differences] == ["different", "missing"]
