"""A malformed image description (Rows, Columns, ...) beside Pixel Data gives findings, not a crash.

Columns with a value of odd length cannot even be decoded by pydicom (BytesLengthException); the
Pixel Data length check and the conditions of the IOD layer read it. Both the file validator and
the validation on ingest (which judges the Pixel Data by its noted length) must report instead.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from archivist.archive.validation import PixelDataInfo, validate_on_ingest
from archivist.testing.datasets import pydicom_test_file
from archivist.validate import Severity, validate_dataset, validate_file

COLUMNS, ROWS, SPP, BITS, FRAMES = 0x00280011, 0x00280010, 0x00280002, 0x00280100, 0x00280008


def _ct() -> Dataset:
    path = pydicom_test_file("CT_small.dcm")
    assert path is not None
    return pydicom.dcmread(path)


def _with_raw(tag: int, vr: str | None, value: bytes) -> Dataset:
    ds = _ct()
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    return ds


def _validate(ds: Dataset) -> list[tuple[str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [(f.rule_id, f.path) for f in validate_dataset(ds)]


# (name, tag, VR, raw value, a rule that must be among the findings)
CASES = [
    ("columns-odd-length", COLUMNS, "US", b"\x01\x02\x03", "encoding.pixel-geometry-unreadable"),
    ("columns-one-byte", COLUMNS, "US", b"\x80", "encoding.pixel-geometry-unreadable"),
    ("columns-text-as-IS", COLUMNS, "IS", b"abc ", "dict.vr-mismatch"),
    ("columns-negative-SS", COLUMNS, "SS", b"\xff\xff", "encoding.pixel-geometry-unreadable"),
    ("columns-two-values", COLUMNS, "US", b"\x01\x00\x02\x00", "dict.vm"),
    ("columns-empty", COLUMNS, "US", b"", "iod.type1-empty"),
    ("rows-odd-length", ROWS, "US", b"\x01", "encoding.pixel-geometry-unreadable"),
    ("bits-odd-length", BITS, "US", b"\x01\x02\x03", "encoding.pixel-geometry-unreadable"),
    ("samples-odd-length", SPP, "US", b"abc", "encoding.pixel-geometry-unreadable"),
    ("frames-not-a-number", FRAMES, "IS", b"x.y ", "dict.value-invalid"),
]


class TestMalformedGeometry:
    @pytest.mark.parametrize("name,tag,vr,raw,rule", CASES, ids=[c[0] for c in CASES])
    def test_validate_dataset_reports(self, name: str, tag: int, vr: str, raw: bytes,
                                      rule: str) -> None:
        found = _validate(_with_raw(tag, vr, raw))
        assert rule in {r for r, _ in found}, found
        # the Pixel Data length is not judged from a value that could not be read
        assert "encoding.pixel-data-length" not in {r for r, _ in found} or rule == "dict.vm"

    def test_columns_missing_is_type1_missing(self) -> None:
        ds = _ct()
        del ds.Columns
        found = _validate(ds)
        assert ("iod.type1-missing", "/Columns(0028,0011)") in found

    def test_zero_columns_gives_a_length_finding(self) -> None:
        ds = _ct()
        ds.Columns = 0
        assert "encoding.pixel-data-length" in {r for r, _ in _validate(ds)}

    @pytest.mark.parametrize("name,tag,vr,raw,rule", CASES, ids=[c[0] for c in CASES])
    def test_validation_on_ingest_reports(self, name: str, tag: int, vr: str, raw: bytes,
                                          rule: str) -> None:
        ds = _with_raw(tag, vr, raw)
        del ds.PixelData  # ingest reads up to the Pixel Data and notes its length
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            findings = validate_on_ingest(ds, PixelDataInfo(0x7FE00010, 32768, 0))
        assert rule in {f.rule_id for f in findings}

    def test_file_with_odd_length_columns(self, tmp_path: Path) -> None:
        """The same through validate_file: the bytes of a real file, Columns 3 bytes long."""
        source = pydicom_test_file("CT_small.dcm")
        assert source is not None
        data = Path(source).read_bytes()
        # Explicit VR LE: (0028,0011) US, length 2, value 128 -> length 3 (one byte more)
        element = b"\x28\x00\x11\x00US\x02\x00\x80\x00"
        assert data.count(element) == 1
        broken = tmp_path / "columns.dcm"
        broken.write_bytes(data.replace(element, b"\x28\x00\x11\x00US\x03\x00\x80\x00\x00"))
        report = validate_file(broken)
        rules = {f.rule_id for f in report.findings}
        assert "encoding.pixel-geometry-unreadable" in rules, rules
        assert any(f.severity is Severity.ERROR for f in report.findings)
