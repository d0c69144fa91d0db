"""A person name with trailing empty components is the same name (PS3.5 6.2.1.1)."""

from __future__ import annotations

from pathlib import Path

from archivist.core.levels import QueryLevel
from archivist.core.matching import build_query, normalise_pn
from archivist.index.extract import ValidationRecord, extract
from archivist.index.repository import BlobInfo, Index
from archivist.testing.datasets import make_instance


def test_padded_names_fold_to_the_plain_name() -> None:
    assert normalise_pn("SMITH^JOHN^^^") == normalise_pn("smith^john") == "smith^john"
    assert normalise_pn("Yamada^Tarou^^=山田^太郎=") == "yamada^tarou=山田^太郎"
    assert normalise_pn("^^^") == ""
    assert normalise_pn("SMITH^*") == "smith^*"


def test_a_query_finds_a_name_its_sender_padded(tmp_path: Path) -> None:
    index = Index(f"sqlite:///{tmp_path / 'i.sqlite'}")
    try:
        index.migrate()
        ds = make_instance(tmp_path / "a.dcm", patient_name="SMITH^JOHN^^^")
        index.add_instance(
            extract(ds), BlobInfo("k-1", 10, "0" * 64, "1.2.840.10008.1.2.1"),
            sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID), source_aet=None,
            source_address=None, policy="keep", validation=ValidationRecord(0, 0))
        for value in ("smith^john", "SMITH^JOHN^", "Smith^John^^^", "smith^j*"):
            query = build_query(QueryLevel.STUDY, [("PatientName", value)])
            assert len(list(index.search(query))) == 1, value
        query = build_query(QueryLevel.STUDY, [("PatientName", "smith^johnny")])
        assert list(index.search(query)) == []
    finally:
        index.close()
