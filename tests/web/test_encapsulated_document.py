"""The PDF of an Encapsulated PDF instance as it was encapsulated (QA s22): the value of
Encapsulated Document is padded to an even length with a NUL, which WADO-RS rendered and
WADO-URI sent along (46 bytes for a 45-byte PDF). Encapsulated Document Length (0042,0015)
is the length without that padding (PS3.3 C.24.2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from archivist.web.dicomweb.pixels import encapsulated_document

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"  # 45 bytes


def _stored(tmp_path: Path, length: int | None) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = PDF  # written with a NUL to an even length
    if length is not None:
        ds.EncapsulatedDocumentLength = length
    path = tmp_path / "doc.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(("length", "expected"), [
    (len(PDF), PDF),               # the length says the NUL is padding
    (None, PDF + b"\0"),           # no length: the value as stored
    (10, PDF + b"\0"),             # a length that disagrees is not trusted
])
def test_the_padding_goes_when_the_length_says_so(tmp_path: Path, length: int | None,
                                                  expected: bytes) -> None:
    assert len(PDF) % 2 == 1
    assert encapsulated_document(_stored(tmp_path, length)) == expected
