"""False findings on valid objects of kinds the other tests do not use (held-out corpus QA).

- Overlay Plane Module (PS3.3 C.9.2, usage U in the CT, MR, SC... IODs): its elements live in
  the repeating groups 60xx (PS3.5 7.6), which the generated tables leave out, so every overlay
  element was reported "not defined by any module of the MR Image IOD". An IOD without an
  overlay module (an SR document) still gets the warning.
- VL Whole Slide Microscopy Image (PS3.3 Table A.32.8-2): the Frame Content Macro is User
  optional there ("U - Shall not be used as a Shared Functional Group"), and a TILED_FULL slide
  omits the Per-frame Functional Groups Sequence (A.32.8-2 note, C.7.6.17.3). Frame Content
  Sequence was reported as a missing Type 1 attribute of the Shared Functional Groups. In the
  Enhanced CT Image IOD, where the macro is Mandatory, its absence is still an error.
"""

from __future__ import annotations

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from validation_cases import ct

from archivist.validate import Severity, validate_dataset


def _item(**kw: object) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def _with_overlay(ds: Dataset, group: int = 0x6000) -> Dataset:
    ds.add_new(group << 16 | 0x0010, "US", ds.Rows)
    ds.add_new(group << 16 | 0x0011, "US", ds.Columns)
    ds.add_new(group << 16 | 0x0040, "CS", "G")
    ds.add_new(group << 16 | 0x0050, "SS", [1, 1])
    ds.add_new(group << 16 | 0x0100, "US", 1)
    ds.add_new(group << 16 | 0x0102, "US", 0)
    ds.add_new(group << 16 | 0x3000, "OW", bytes(ds.Rows * ds.Columns // 8))
    return ds


def _not_in_iod(ds: Dataset) -> list[str]:
    return [f.path for f in validate_dataset(ds) if f.rule_id == "iod.not-in-iod"]


def test_overlay_plane_elements_are_part_of_image_iods() -> None:
    ds = _with_overlay(_with_overlay(ct()), 0x6002)
    assert not [p for p in _not_in_iod(ds) if p.startswith(("/Overlay", "/(60"))]


def test_overlay_elements_in_an_iod_without_overlays_are_still_reported() -> None:
    sr = pydicom.dcmread(pydicom.data.get_testdata_file("test-SR.dcm"))
    sr.add_new(0x60000010, "US", 8)
    assert any("(6000,0010)" in p for p in _not_in_iod(sr))


def _tiled_full_slide() -> Dataset:
    """A VL Whole Slide Microscopy Image, TILED_FULL, without Per-frame Functional Groups."""
    ds = ct()
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "SliceLocation"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.Modality = "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.NumberOfFrames = 4
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns = ds.Columns * 2
    ds.TotalPixelMatrixRows = ds.Rows * 2
    ds.SharedFunctionalGroupsSequence = [_item(
        PixelMeasuresSequence=[_item(PixelSpacing=[0.001, 0.001], SliceThickness=0.01)],
        WholeSlideMicroscopyImageFrameTypeSequence=[
            _item(FrameType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"])],
    )]
    return ds


def _frame_content_errors(ds: Dataset) -> list[str]:
    return [f.path for f in validate_dataset(ds)
            if f.severity is Severity.ERROR and "FrameContentSequence" in f.path]


def test_tiled_full_slide_needs_no_frame_content() -> None:
    assert _frame_content_errors(_tiled_full_slide()) == []


def test_enhanced_ct_still_needs_frame_content() -> None:
    ds = _tiled_full_slide()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    del ds.DimensionOrganizationType
    ds.SOPInstanceUID = generate_uid()
    assert _frame_content_errors(ds)
