"""Search.json_identifier builds QIDO-RS's DICOM JSON from index rows without a pydicom data set;
it must give exactly what ``identifier(...).to_json_dict()`` gives, for every level and for the
values that take pydicom's path (multi-group names, backslashes, sequences, empty values)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.core.levels import KEYS, QueryLevel
from archivist.testing.datasets import code_item, make_instance, new_uid

#: Return keys asked for besides every indexed key: some indexed elsewhere, some only in the
#: stored attributes (strings, numbers, multi-valued, a sequence), some never stored.
EXTRA_KEYS = ["StudyDescription", "Modality", "ImageType", "PatientBirthDate", "PatientSex",
              "ReferringPhysicianName", "StudyID", "Rows", "PixelSpacing", "SliceThickness",
              "OtherPatientIDs", "ProcedureCodeSequence", "AnatomicRegionSequence",
              "InstitutionName", "ImageComments"]


@pytest.fixture
def varied(archive: Archive, tmp_path: Path) -> Archive:
    specs: list[dict[str, Any]] = [
        {"patient_name": "DOE^JOHN", "patient_id": "P1", "modality": "CT"},
        {"patient_name": "Yamada^Tarou=山田^太郎=やまだ^たろう", "patient_id": "P2",
         "charset": "ISO_IR 192", "modality": "MR", "study_description": "",
         "extra": {"ImageType": ["DERIVED", "SECONDARY"], "PixelSpacing": [0.5, 0.25],
                   "SliceThickness": "1.50", "OtherPatientIDs": "A\\B",
                   "ReferringPhysicianName": "Smith^Jo", "PatientBirthDate": "19700101",
                   "ImageComments": "a\\b in text",
                   "ProcedureCodeSequence": [code_item("36118008", "SCT", "Chest")]}},
        {"patient_name": "Müller^Jürgen", "patient_id": "", "charset": "ISO_IR 192",
         "accession_number": "", "study_description": "Knie \\ rechts",
         "extra": {"InstitutionName": "Klinikum Süd", "PatientSex": "M", "StudyID": "7"}},
    ]
    for n, spec in enumerate(specs):
        make_instance(tmp_path / f"{n}.dcm", study_uid=new_uid(), series_uid=new_uid(), **spec)
        archive.ingest.store_file(tmp_path / f"{n}.dcm", Origin("import"))
    return archive


@pytest.mark.parametrize("level", list(QueryLevel))
def test_same_json_as_through_pydicom(varied: Archive, level: QueryLevel) -> None:
    keys = [k for k, d in KEYS.items() if d.level.rank <= level.rank] + EXTRA_KEYS
    query = varied.search.query_from_pairs(level, [(k, "") for k in dict.fromkeys(keys)])
    rows = list(varied.search.rows(query))
    assert len(rows) == 3
    for row in rows:
        expected = varied.search.identifier(query, row).to_json_dict()
        expected.pop("00080052")
        assert varied.search.json_identifier(query, row) == expected


def test_plain_values_are_written_directly(varied: Archive) -> None:
    query = varied.search.query_from_pairs(
        QueryLevel.STUDY, [("PatientID", "P1"), ("PatientName", ""), ("ModalitiesInStudy", ""),
                           ("NumberOfStudyRelatedInstances", "")])
    (row,) = list(varied.search.rows(query))
    body = varied.search.json_identifier(query, row)
    assert body["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}]}
    assert body["00080061"] == {"vr": "CS", "Value": ["CT"]}
    assert body["00201208"] == {"vr": "IS", "Value": [1]}
    assert "00080052" not in body
