# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""The migration proof (QA s22) said identical for a study whose Patient ID, name and date
had changed at the source, and counted an instance whose stored file was gone. A study's
Patient ID, Patient's Name, Study Date and Accession Number are compared now (without
quoting them), and an instance whose bytes are gone is missing."""

from __future__ import annotations

from pathlib import Path

from inventory_helpers import archive, fill, open_archive  # noqa: F401

from archivist.archive.archive import Archive
from archivist.inventory.diff import diff
from archivist.inventory.migrate import _bytes_gone
from archivist.inventory.model import Inventory, StudyRecord
from archivist.inventory.sources import of_archive


def _one(**fields: str) -> Inventory:
    inv = Inventory(level="STUDY")
    inv.studies["1.2.3"] = StudyRecord("1.2.3", **fields)
    return inv


def test_who_and_when_of_a_study_are_compared() -> None:
    a = _one(patient_id="P1", patient_name="DOE^JOHN", study_date="20240101",
             accession_number="A1")
    same = _one(patient_id="P1 ", patient_name="DOE^JOHN^^", study_date="20240101",
                accession_number="A1")
    assert diff(a, same).differences == []
    other = _one(patient_id="P2", patient_name="ROE^JANE", study_date="20240102",
                 accession_number="A1")
    (d,) = diff(a, other).differences
    assert d.kind == "different"
    assert d.detail == "Patient ID differs; Patient's Name differs; Study Date differs"
    assert "P2" not in d.detail and "ROE" not in d.detail
    # A side that does not give a value is not a difference.
    assert diff(a, _one(patient_id="P1")).differences == []


def test_an_instance_whose_file_is_gone_is_named(archive: Archive, tmp_path: Path) -> None:
    made = fill(archive, tmp_path / "in", studies=1, series=1, instances=3)
    uids = [m["sop"] for m in made]
    assert _bytes_gone(archive, uids) == set()
    row = archive.index.stored_copy(uids[1])
    assert row is not None
    path = archive.blobs.path(row["storage_key"])
    assert path is not None
    path.unlink()
    assert _bytes_gone(archive, uids) == {uids[1]}
    # (the index alone still lists it: what the proof used to count)
    inv = of_archive(archive, "INSTANCE")
    assert uids[1] in next(iter(next(iter(inv.studies.values())).series.values())).instances
