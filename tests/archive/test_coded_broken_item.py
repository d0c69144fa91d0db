"""A code item whose Code Value cannot be decoded (data/code-value-fl.dcm, from the mutation
fuzz: a Code Value of VR FL with 3 bytes) is left out of the code index instead of failing the
whole ingest (STOW-RS answered 0x0110 "internal error", C-STORE 0xC000); the object is judged
by the validation policy like any other invalid one."""

from __future__ import annotations

from pathlib import Path

import pydicom

from archivist.archive.archive import Archive
from archivist.archive.coded import extract_codes
from archivist.archive.ingest import Origin
from archivist.config import Settings

SAMPLE = Path(__file__).parent / "data" / "code-value-fl.dcm"


def test_undecodable_code_value_is_skipped() -> None:
    assert extract_codes(pydicom.dcmread(SAMPLE)) == []


def test_the_object_is_stored(tmp_path: Path) -> None:
    archive = Archive.open(Settings(data_dir=tmp_path / "data"))
    try:
        result = archive.ingest.store_file(SAMPLE, Origin("import", "", ""))
        assert result.status.name == "STORED"
    finally:
        archive.close()
