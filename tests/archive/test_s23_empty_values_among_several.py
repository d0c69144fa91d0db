"""An empty value among several (``1\\\\3``, PS3.5 6.4) in a multi-valued DS, IS or PN was left
out of the attributes ingest keeps, so QIDO-RS and C-FIND answered it without values; a CS list
(``ORIGINAL\\\\AXIAL``) was answered with ``""`` where DICOM JSON has null (PS3.18 F.2.5), as
WADO-RS metadata already wrote them (QA s23)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.core.levels import QueryLevel
from archivist.testing.datasets import make_instance, new_uid

KEYS = ["ImagePositionPatient", "EchoNumbers", "OtherPatientNames", "ImageType"]


@pytest.fixture
def stored(archive: Archive, tmp_path: Path) -> tuple[Archive, str]:
    sop = new_uid()
    ds = make_instance(tmp_path / "a.dcm", sop_uid=sop)
    ds.add_new(0x00200032, "DS", "1\\\\3")          # ImagePositionPatient: 1, empty, 3
    ds.add_new(0x00180086, "IS", "1\\\\3")          # EchoNumbers
    ds.add_new(0x00101001, "PN", "A^B\\\\C^D")      # OtherPatientNames
    ds.add_new(0x00080008, "CS", "ORIGINAL\\\\AXIAL")  # ImageType
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    archive.ingest.store_file(tmp_path / "a.dcm", Origin("import"))
    return archive, sop


def _query(archive: Archive, sop: str, *pairs: tuple[str, str]) -> tuple[object, list]:
    asked = dict(pairs)
    query = archive.search.query_from_pairs(
        QueryLevel.IMAGE, [("SOPInstanceUID", sop), *((k, asked.get(k, "")) for k in KEYS)])
    return query, list(archive.search.rows(query))


def test_qido_json_has_null_for_the_empty_value(stored: tuple[Archive, str]) -> None:
    archive, sop = stored
    query, (row,) = _query(archive, sop)
    body = archive.search.json_identifier(query, row)  # type: ignore[arg-type]
    assert body["00200032"] == {"vr": "DS", "Value": [1.0, None, 3.0]}
    assert body["00180086"] == {"vr": "IS", "Value": [1, None, 3]}
    assert body["00101001"] == {"vr": "PN", "Value": [{"Alphabetic": "A^B"}, None,
                                                        {"Alphabetic": "C^D"}]}
    assert body["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]}


def test_c_find_identifier_encodes_the_empty_value(stored: tuple[Archive, str]) -> None:
    archive, sop = stored
    query, (row,) = _query(archive, sop)
    ds = archive.search.identifier(query, row)  # type: ignore[arg-type]
    wire = {}
    for keyword in KEYS:
        one = Dataset()
        one.add(ds[keyword])
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, True
        write_dataset(buffer, one)
        wire[keyword] = buffer.getvalue()[8:].rstrip(b" \0")
    assert wire == {"ImagePositionPatient": b"1\\\\3", "EchoNumbers": b"1\\\\3",
                    "OtherPatientNames": b"A^B\\\\C^D", "ImageType": b"ORIGINAL\\\\AXIAL"}


def test_a_value_beside_the_empty_one_still_matches(stored: tuple[Archive, str]) -> None:
    archive, sop = stored
    assert len(_query(archive, sop, ("OtherPatientNames", "C^D"))[1]) == 1
    assert len(_query(archive, sop, ("OtherPatientNames", "X^Y"))[1]) == 0
