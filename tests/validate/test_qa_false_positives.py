"""False positives found by black-box QA on valid objects made by highdicom and pydicom.

Each fix is checked both ways: the valid object gives no error, and the genuinely wrong object
(the same one broken on purpose) still does.

- Parametric Map (PS3.3 A.75): the Image Pixel, Floating Point Image Pixel (C.7.6.24) and
  Double Floating Point Image Pixel (C.7.6.25) Modules are Conditional on the pixel data
  element the object has. Rows and Columns, which all three define, were taken as a sign that
  each of them is in use, so a Float Pixel Data map was asked for Bits Stored, High Bit, Pixel
  Representation (Image Pixel Module) and Double Float Pixel Data.
- Secondary Capture (PS3.3 C.8.6.1): the SC Equipment Module makes Modality Type 3, overriding
  the General Series Module's Type 1.
- Palette Color Lookup Table Module (PS3.3 C.7.9): reported missing while its descriptors and
  data, which the Image Pixel Module defines as well, were there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from validation_cases import ct, secondary_capture, write

from archivist.archive.validation import PixelDataInfo, validate_on_ingest
from archivist.validate import Finding, Severity, validate_dataset, validate_file

_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)


def _errors(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.rule_id, f.path, f.module) for f in findings if f.severity is Severity.ERROR]


def _parametric_map(dtype: type) -> Dataset:
    """A highdicom Parametric Map of CT_small with pixel values of `dtype`."""
    source = ct()
    rng = np.random.default_rng(7)
    if np.issubdtype(dtype, np.floating):
        pixels = (rng.random((source.Rows, source.Columns)) * 100 - 20).astype(dtype)
        value_range: tuple[float, float] = (-20.0, 80.0)
    else:
        pixels = (rng.random((source.Rows, source.Columns)) * 4000).astype(dtype)
        value_range = (0, 4000)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="qa", lut_explanation="qa", unit=codes.UCUM.NoUnits, value_range=value_range,
        intercept=0, slope=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = hd.pm.ParametricMap(
            source_images=[source], pixel_array=pixels, series_instance_uid=generate_uid(),
            series_number=20, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="QA", manufacturer_model_name="qa", software_versions="1",
            device_serial_number="1", contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping], window_center=30, window_width=100,
        )
    return pm


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _ingest_findings(path: Path) -> list[Finding]:
    """What ingest finds: the header read up to the pixel data, the element's length noted."""
    ds = pydicom.dcmread(path, defer_size=1024)
    pixel = None
    for tag in _PIXEL_TAGS:
        raw = ds._dict.get(pydicom.tag.Tag(tag))
        if raw is not None:
            pixel = PixelDataInfo(tag, int(raw.length), int(raw.value_tell))
            for after in [t for t in ds._dict if t >= tag]:
                del ds._dict[after]
            break
    return list(validate_on_ingest(ds, pixel))


class TestParametricMap:
    @pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
    def test_valid_map_has_no_error(self, tmp_path: Path, dtype: type) -> None:
        path = _save(_parametric_map(dtype), tmp_path / "pm.dcm")
        report = validate_file(path)
        assert report.iod == "Parametric Map"
        assert _errors(report.findings) == []
        assert _errors(_ingest_findings(path)) == []

    def test_float_map_is_not_held_to_the_image_pixel_module(self, tmp_path: Path) -> None:
        pm = _parametric_map(np.float32)
        assert "FloatPixelData" in pm and "BitsStored" not in pm
        modules = {f.module for f in validate_dataset(pm)}
        assert "Image Pixel" not in modules
        assert "Double Floating Point Image Pixel" not in modules

    @pytest.mark.parametrize("keyword", ["BitsStored", "HighBit", "PixelRepresentation"])
    def test_integer_map_still_needs_bits_stored_high_bit_pixel_representation(
        self, tmp_path: Path, keyword: str
    ) -> None:
        pm = _parametric_map(np.uint16)
        assert "PixelData" in pm
        del pm[keyword]
        errors = _errors(validate_dataset(pm))
        assert any(rule.startswith("iod.type1") and keyword in path and module == "Image Pixel"
                   for rule, path, module in errors), errors

    def test_float_map_still_needs_rows_and_the_float_pixel_data_module(self) -> None:
        pm = _parametric_map(np.float32)
        del pm.Rows
        errors = _errors(validate_dataset(pm))
        assert ("iod.type1-missing", "/Rows(0028,0010)", "Floating Point Image Pixel") in errors

    def test_float_map_with_a_padding_range_limit_alone_is_an_error(self) -> None:
        # The Floating Point Image Pixel Module's 1C: the module is still checked for its own
        # attributes when the map carries them.
        pm = _parametric_map(np.float32)
        pm.FloatPixelPaddingRangeLimit = 0.0
        del pm.FloatPixelData
        errors = _errors(validate_dataset(pm))
        assert ("iod.type1-missing", "/FloatPixelData(7FE0,0008)",
                "Floating Point Image Pixel") in errors

    def test_reject_policy_imports_the_float_map(self, tmp_path: Path) -> None:
        # The reported symptom: archivist import with validation_policy=reject refused it.
        path = _save(_parametric_map(np.float32), tmp_path / "pm.dcm")
        env = dict(os.environ, ARCHIVIST_VALIDATION_POLICY="reject")
        cli = Path(sys.executable).with_name("archivist")
        proc = subprocess.run(
            [str(cli), "import", "-q", "--data", str(tmp_path / "data"), str(path)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "1 stored" in proc.stdout and "0 rejected" in proc.stdout, proc.stdout


class TestSecondaryCaptureModality:
    def test_sc_without_modality_is_valid(self) -> None:
        ds = secondary_capture()
        assert _errors(validate_dataset(ds)) == []
        del ds.Modality
        assert _errors(validate_dataset(ds)) == []
        ds.Modality = ""  # Type 3 may be empty too
        assert _errors(validate_dataset(ds)) == []

    def test_ct_without_modality_is_still_an_error(self) -> None:
        ds = ct()
        del ds.Modality
        errors = _errors(validate_dataset(ds))
        assert ("iod.type1-missing", "/Modality(0008,0060)", "General Series") in errors

    def test_encapsulated_pdf_without_modality_is_still_an_error(self) -> None:
        # Encapsulated Document Series Module (C.24.1): Modality Type 1, over SC Equipment's 3.
        ds = secondary_capture()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
        del ds.Modality
        errors = _errors(validate_dataset(ds))
        assert any(rule == "iod.type1-missing" and path == "/Modality(0008,0060)"
                   for rule, path, _ in errors), errors

    def test_pydicom_sc_files_without_modality(self) -> None:
        for name in ("SC_jpeg_no_color_transform.dcm", "SC_rgb_jpeg_app14_dcmd.dcm"):
            path = get_testdata_file(name)
            assert "Modality" not in pydicom.dcmread(path, stop_before_pixels=True)
            assert _errors(validate_file(path).findings) == [], name


class TestPaletteModule:
    def test_us_palette_image_is_valid(self) -> None:
        report = validate_file(get_testdata_file("examples_palette.dcm"))
        assert report.iod == "Ultrasound Image"
        assert [f for f in report.findings if f.rule_id == "iod.module-missing"] == []

    def test_palette_image_without_palette_is_still_an_error(self, tmp_path: Path) -> None:
        ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))
        for keyword in ("RedPaletteColorLookupTableDescriptor",
                        "GreenPaletteColorLookupTableDescriptor",
                        "BluePaletteColorLookupTableDescriptor",
                        "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
                        "BluePaletteColorLookupTableData"):
            del ds[keyword]
        errors = _errors(validate_file(write(ds, tmp_path / "pal.dcm")).findings)
        assert any(rule == "iod.module-missing" and module == "Palette Color Lookup Table"
                   for rule, _, module in errors), errors
        assert any(rule == "iod.type1c-missing" and "RedPaletteColorLookupTableDescriptor" in p
                   for rule, p, _ in errors), errors

    def test_palette_image_with_half_a_palette_is_still_an_error(self) -> None:
        ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))
        del ds.BluePaletteColorLookupTableData
        errors = _errors(validate_dataset(ds))
        assert any(rule.endswith("-missing") and path == "/BluePaletteColorLookupTableData(0028,1203)"
                   for rule, path, _ in errors), errors


def _multiframe_byte_sc() -> Dataset:
    """A valid 2-frame Multi-frame Grayscale Byte SC Image (PS3.3 A.8.3); dciodvfy agrees."""
    ds = secondary_capture()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"
    ds.NumberOfFrames = 2
    ds.PixelData = bytes(128)
    ds.FrameIncrementPointer = 0x00182002  # Frame Label Vector
    ds.FrameLabelVector = ["a", "b"]
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.ContentDate = "20240101"
    ds.ContentTime = "120000"
    ds.InstanceNumber = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    return ds


class TestSharedAttributeDoesNotSelectAModule:
    """The same root cause as the Parametric Map: an attribute two optional modules define."""

    def test_representative_frame_number_is_not_a_functional_groups_module(self) -> None:
        # Representative Frame Number is in the Frame Pointers Module (C.7.6.9) and in the
        # SC image's Multi-frame Functional Groups Module (both U): it was taken as the latter
        # being in use, which then needed Shared Functional Groups Sequence.
        ds = _multiframe_byte_sc()
        assert _errors(validate_dataset(ds)) == []
        ds.RepresentativeFrameNumber = 1
        assert _errors(validate_dataset(ds)) == []

    def test_functional_groups_module_in_use_still_needs_its_sequence(self) -> None:
        ds = _multiframe_byte_sc()
        ds.PerFrameFunctionalGroupsSequence = [Dataset(), Dataset()]
        errors = _errors(validate_dataset(ds))
        assert any(path == "/SharedFunctionalGroupsSequence(5200,9229)" for _, path, _ in errors)
