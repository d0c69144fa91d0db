"""The Anatomic Region code derived from Body Part Examined carries the code's own meaning (QA
s20): it was indexed with the defined term as its Code Meaning, so that a QIDO-RS query
``00082218.00080104=Head`` found nothing for an object with Body Part Examined ``HEAD`` while
``=HEAD`` matched. PS3.16 Annex L pairs HEAD with SCT 69536005 "Head"."""

from __future__ import annotations

from pathlib import Path

from archivist.archive.archive import Archive
from archivist.archive.coded import extract_codes
from archivist.archive.ingest import Origin
from archivist.core.levels import QueryLevel
from archivist.index.extract import CodeRow
from archivist.terminology import body_part_code, body_part_to_code
from archivist.testing.datasets import make_instance, new_uid

HEAD_SCT = "69536005"


def test_body_part_code() -> None:
    assert body_part_code("HEAD") == ("SCT", HEAD_SCT, "Head")
    assert body_part_code(" chest ") == ("SCT", "816094009", "Chest")
    assert body_part_code("NOSUCHPART") is None
    assert body_part_to_code("HEAD") == ("SCT", HEAD_SCT)


def test_extracted_row_has_the_code_meaning(tmp_path: Path) -> None:
    ds = make_instance(tmp_path / "a.dcm", extra={"BodyPartExamined": "HEAD"})
    rows = [r for r in extract_codes(ds) if r.origin == "BodyPartExamined"]
    assert rows == [CodeRow("AnatomicRegionSequence", "BodyPartExamined", "SCT", HEAD_SCT,
                            "SCT", HEAD_SCT, "Head")]


def _series(archive: Archive, pairs: list[tuple[str, str]]) -> list[str]:
    query = archive.search.query_from_pairs(
        QueryLevel.SERIES, [*pairs, ("StudyInstanceUID", ""), ("SeriesInstanceUID", "")]
    )
    return sorted(str(ds.SeriesInstanceUID) for ds in archive.search.find(query))


def test_query_by_meaning(archive: Archive, tmp_path: Path) -> None:
    series = new_uid()
    make_instance(tmp_path / "head.dcm", study_uid=new_uid(), series_uid=series,
                  extra={"BodyPartExamined": "HEAD"})
    archive.ingest.store_file(tmp_path / "head.dcm", Origin("import"))
    assert _series(archive, [("00082218.00080104", "Head")]) == [series]
    assert _series(archive, [("00082218.00080104", "He*")]) == [series]
    assert _series(archive, [("AnatomicRegionSequence.CodeValue", HEAD_SCT),
                             ("AnatomicRegionSequence.CodeMeaning", "Head")]) == [series]
    assert _series(archive, [("00082218.00080104", "HEAD")]) == []
