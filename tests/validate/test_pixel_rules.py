"""Image Pixel attributes that contradict each other or the image IOD (validate/pixel.py).

Each broken object is also given to dciodvfy (dicom3tools) when it is installed: it must report
an error on the same attribute, so these rules say what the reference validator says.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from archivist.validate.validator import validate_dataset, validate_file

CT = "1.2.840.10008.5.1.4.1.1.2"
XA = "1.2.840.10008.5.1.4.1.1.12.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
DCIODVFY = shutil.which("dciodvfy")


def _ct(**changes: object) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword, value in changes.items():
        if keyword == "SOPClassUID":
            ds.file_meta.MediaStorageSOPClassUID = value
        setattr(ds, keyword, value)
    return ds


def _pixel_findings(ds: pydicom.Dataset) -> list[tuple[str, str]]:
    return [
        (f.rule_id, f.path)
        for f in validate_dataset(ds)
        if f.rule_id.startswith("pixel.")
        or (f.rule_id == "iod.enumerated-value" and f.module == "Image Pixel")
    ]


CASES = {
    "bits-stored-over-allocated": (
        {"BitsStored": 20},
        [("pixel.bits-stored", "/BitsStored(0028,0101)"), ("pixel.high-bit", "/HighBit(0028,0102)")],
        "Bits Stored",
    ),
    "high-bit-not-stored-minus-one": (
        {"HighBit": 11}, [("pixel.high-bit", "/HighBit(0028,0102)")], "High Bit",
    ),
    "bits-allocated-not-a-byte-multiple": (
        {"BitsAllocated": 12},
        [("pixel.bits-allocated", "/BitsAllocated(0028,0100)"),
         ("pixel.bits-stored", "/BitsStored(0028,0101)")],
        "Bits Allocated",
    ),
    "samples-against-photometric": (
        {"SamplesPerPixel": 3, "PlanarConfiguration": 0},
        [("pixel.samples-per-pixel", "/SamplesPerPixel(0028,0002)")],
        "Samples per Pixel",
    ),
    "ct-in-palette-color": (
        {"PhotometricInterpretation": "PALETTE COLOR"},
        [("iod.enumerated-value", "/PhotometricInterpretation(0028,0004)")],
        "Photometric Interpretation",
    ),
    "xa-in-monochrome1": (
        {"SOPClassUID": XA, "PhotometricInterpretation": "MONOCHROME1"},
        [("iod.enumerated-value", "/PhotometricInterpretation(0028,0004)")],
        "Photometric Interpretation",
    ),
}


class TestImagePixelRules:
    @pytest.mark.parametrize("name", sorted(CASES))
    def test_broken_object_is_reported(self, name: str) -> None:
        changes, expected, _ = CASES[name]
        assert sorted(_pixel_findings(_ct(**changes))) == sorted(expected)

    def test_consistent_objects_have_no_pixel_findings(self) -> None:
        assert _pixel_findings(_ct()) == []
        # 12 of 16 bits, high bit 11: the usual CT layout.
        assert _pixel_findings(_ct(BitsStored=12, HighBit=11)) == []
        # Secondary Capture allows palette colour; CT's own narrowing does not apply to it.
        assert _pixel_findings(_ct(SOPClassUID=SC, PhotometricInterpretation="PALETTE COLOR")) == []
        # One bit per pixel (segmentations) is allowed.
        assert _pixel_findings(_ct(BitsAllocated=1, BitsStored=1, HighBit=0)) == []

    def test_without_pixel_data_nothing_is_checked(self) -> None:
        ds = _ct(HighBit=3)
        del ds.PixelData
        assert _pixel_findings(ds) == []

    def test_unreadable_values_are_left_to_the_other_layers(self) -> None:
        ds = _ct()
        ds.HighBit = None
        assert _pixel_findings(ds) == []

    @pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (dicom3tools) not installed")
    @pytest.mark.parametrize("name", sorted(CASES))
    def test_dciodvfy_reports_the_same_attribute(self, name: str, tmp_path: Path) -> None:
        changes, expected, attribute = CASES[name]
        path = tmp_path / f"{name}.dcm"
        _ct(**changes).save_as(path)
        assert DCIODVFY is not None
        run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60,
                             check=False)
        errors = [line for line in (run.stdout + run.stderr).splitlines()
                  if line.startswith("Error") and attribute in line]
        assert errors, run.stdout + run.stderr
        report = validate_file(path)
        assert {(f.rule_id, f.path) for f in report.findings} >= set(expected)
