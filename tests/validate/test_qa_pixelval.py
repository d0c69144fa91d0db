"""False positives on valid held-out objects, found by comparing with dciodvfy and PixelMed.

A PACS whose ``reject`` policy refuses valid data is worse than no validator. Each fix below
was an error of ours that neither dciodvfy nor PixelMed's DicomInstanceValidator reports, checked
against PS3.3; each is tested both ways (the valid object passes, the wrong one still fails).

- Multi-frame Secondary Capture (PS3.3 C.8.6.3 SC Multi-frame Image Module): Frame Increment
  Pointer is Type 1C there, required only when Number of Frames is greater than 1, overriding
  the Multi-frame Module's Type 1. DCMTK ``img2dcm --new-sc`` writes one-frame objects without
  it; they were refused under ``reject``.
- Segmentation (PS3.3 Table A.51-2): the Segmentation Macro (Segment Identification Sequence)
  is required only when Segmentation Type is not LABELMAP and Dimension Organization Type is
  not TILED_FULL, Frame Content only when not TILED_FULL. highdicom's Label Map Segmentation
  (SOP Class ...66.7) was refused.
- General Series Laterality (PS3.3 C.7.3.1): not required when Frame Laterality is given, which
  an enhanced image carries in the Frame Anatomy functional group, nor when Measurement
  Laterality is.
- Patient Module (PS3.3 C.7.1.1): Patient Breed Description is required for an animal only when
  Patient Breed Code Sequence is empty. Responsible Person Role (1C when Responsible Person has a
  value) was not checked: dciodvfy reports it, we now do too.
- References: findings of the per-IOD functional group modules cited "PS3.3 Segmentation
  Multi-frame Functional Groups Module", a section that does not exist; they cite C.7.6.16.

The PixelMed comparison needs Debian's ``pixelmed-apps`` (``/usr/share/java/pixelmed.jar``) and
Java; it is skipped without them and is marked slow (one JVM per object, ~5 s each).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from archivist.validate import Finding, Severity, validate_dataset

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
# PixelMed's XSLT validators exceed the JDK's default XPath limits (JAXP0801003).
_JAVA_OPTS = ("-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0",
              "-Djdk.xml.xpathTotalOpLimit=0")


def _errors(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.rule_id, f.path) for f in findings if f.severity is Severity.ERROR]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _ct_series(count: int = 3, size: int = 16) -> list[Dataset]:
    """A small valid CT series (every Type 1/2 attribute of the CT Image IOD)."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyDate = ds.ContentDate = "20240102"
        ds.StudyTime = ds.ContentTime = "101010"
        ds.AccessionNumber, ds.Modality, ds.Manufacturer = "A1", "CT", "QA"
        ds.ReferringPhysicianName = ""
        ds.PatientName, ds.PatientID = "Doe^Jane", "PV1"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "F"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, i + 1
        ds.PatientPosition, ds.PositionReferenceIndicator = "HFS", ""
        ds.KVP, ds.AcquisitionNumber = "120", 1
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], "1"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.PixelData = (np.arange(size * size, dtype=np.uint16) % 4000 + i).tobytes()
        out.append(ds)
    return out


def _common(number: int) -> dict[str, object]:
    return {"series_instance_uid": generate_uid(), "series_number": number,
            "sop_instance_uid": generate_uid(), "instance_number": 1}


_DEVICE = {"manufacturer": "QA", "manufacturer_model_name": "qa", "software_versions": "1",
           "device_serial_number": "1"}


def _segmentation(kind: str) -> Dataset:
    """A highdicom Segmentation of a generated CT series: BINARY or LABELMAP (SOP ...66.7)."""
    source = _ct_series()
    mask = np.zeros((3, 16, 16), dtype=np.uint8)
    mask[:, 2:8, 2:8] = 1
    mask[:, 9:14, 9:14] = 2
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=f"s{n}",
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Liver if n == 1 else codes.SCT.Spleen,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n in (1, 2)
    ]
    pixels = mask if kind == "LABELMAP" else np.stack([mask == 1, mask == 2], axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hd.seg.Segmentation(
            source_images=source, pixel_array=pixels, segmentation_type=kind,
            segment_descriptions=descriptions, **_common(10), **_DEVICE,
        )


def _multiframe_true_color_sc(frames: int) -> Dataset:
    """A Multi-frame True Color SC Image (PS3.3 A.8.5) as DCMTK img2dcm --new-sc writes it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Img^Two", "IM2", "", ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "", "", ""
    ds.StudyID, ds.AccessionNumber, ds.SeriesNumber, ds.InstanceNumber = "", "", "", ""
    ds.PatientOrientation = ""
    ds.ContentDate, ds.ContentTime = "20240101", "120000"
    ds.BurnedInAnnotation, ds.ConversionType = "NO", "WSD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4, 4, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(4 * 4 * 3 * frames)
    return ds


def _enhanced_ct_of_a_knee(frame_laterality: str | None) -> Dataset:
    """A Legacy Converted Enhanced CT (highdicom) of a knee, laterality only per frame."""
    legacy = _ct_series()
    for ds in legacy:
        ds.BodyPartExamined = "KNEE"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = hd.legacy.LegacyConvertedEnhancedCTImage(legacy_datasets=legacy, **_common(11))
    for groups in (ds.SharedFunctionalGroupsSequence,
                   ds.get("PerFrameFunctionalGroupsSequence", [])):
        for item in groups:  # highdicom derives one (with an empty Frame Laterality)
            if "FrameAnatomySequence" in item:
                del item.FrameAnatomySequence
    ds.BodyPartExamined = "KNEE"
    if frame_laterality is not None:  # else no Frame Anatomy functional group at all
        anatomy = Dataset()
        anatomy.AnatomicRegionSequence = [_code("72696002", "SCT", "Knee")]
        anatomy.FrameLaterality = frame_laterality
        ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]
    return ds


def _dog_ct() -> Dataset:
    ds = _ct_series(1)[0]
    ds.PatientSpeciesCodeSequence = [_code("448771007", "SCT", "Canis lupus familiaris")]
    ds.PatientBreedCodeSequence = [_code("132522005", "SCT", "Beagle dog breed")]
    ds.BreedRegistrationSequence = []
    ds.ResponsiblePerson, ds.ResponsiblePersonRole = "Owner^Jo", "OWNER"
    ds.ResponsibleOrganization = ""
    return ds


class TestMultiFrameSecondaryCapture:
    def test_one_frame_without_frame_increment_pointer_is_valid(self) -> None:
        assert _errors(validate_dataset(_multiframe_true_color_sc(1))) == []

    def test_several_frames_without_frame_increment_pointer_is_an_error(self) -> None:
        errors = _errors(validate_dataset(_multiframe_true_color_sc(2)))
        assert errors == [("iod.type1c-missing", "/FrameIncrementPointer(0028,0009)")]

    def test_several_frames_with_the_pointer_are_valid(self) -> None:
        ds = _multiframe_true_color_sc(2)
        ds.FrameIncrementPointer = 0x00181063  # Frame Time
        ds.FrameTime = "40"
        assert _errors(validate_dataset(ds)) == []

    def test_the_multi_frame_module_still_requires_it_elsewhere(self) -> None:
        # US Multi-frame Image: the Multi-frame Module's Type 1 applies.
        ds = _multiframe_true_color_sc(2)
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
        assert ("iod.type1-missing", "/FrameIncrementPointer(0028,0009)") in _errors(
            validate_dataset(ds))


class TestSegmentationFunctionalGroups:
    def test_label_map_segmentation_is_valid(self) -> None:
        seg = _segmentation("LABELMAP")
        assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
        assert _errors(validate_dataset(seg)) == []

    def test_binary_segmentation_is_valid(self) -> None:
        assert _errors(validate_dataset(_segmentation("BINARY"))) == []

    def test_binary_segmentation_without_segment_identification_is_an_error(self) -> None:
        seg = _segmentation("BINARY")
        for item in seg.PerFrameFunctionalGroupsSequence:
            del item.SegmentIdentificationSequence
        path = ("/SharedFunctionalGroupsSequence(5200,9229)[1]"
                "/SegmentIdentificationSequence(0062,000A)")
        assert ("iod.type1-missing", path) in _errors(validate_dataset(seg))

    def test_tiled_full_segmentation_needs_no_per_frame_groups(self) -> None:
        seg = _segmentation("BINARY")
        seg.DimensionOrganizationType = "TILED_FULL"
        del seg.PerFrameFunctionalGroupsSequence
        rules = {path.rsplit("/", 1)[-1] for _, path in _errors(validate_dataset(seg))}
        assert "SegmentIdentificationSequence(0062,000A)" not in rules
        assert "FrameContentSequence(0020,9111)" not in rules


class TestLaterality:
    def test_frame_laterality_in_the_functional_groups_is_enough(self) -> None:
        assert _errors(validate_dataset(_enhanced_ct_of_a_knee("L"))) == []

    def test_a_paired_body_part_without_any_laterality_is_still_an_error(self) -> None:
        errors = _errors(validate_dataset(_enhanced_ct_of_a_knee(None)))
        assert ("iod.type2c-missing", "/Laterality(0020,0060)") in errors

    def test_measurement_laterality_is_enough(self) -> None:
        ds = _ct_series(1)[0]
        ds.BodyPartExamined = "EYE"
        assert ("iod.type2c-missing", "/Laterality(0020,0060)") in _errors(validate_dataset(ds))
        ds.MeasurementLaterality = "L"
        assert ("iod.type2c-missing", "/Laterality(0020,0060)") not in _errors(
            validate_dataset(ds))


class TestAnimalPatient:
    def test_a_coded_breed_needs_no_breed_description(self) -> None:
        assert _errors(validate_dataset(_dog_ct())) == []

    def test_no_breed_at_all_is_still_an_error(self) -> None:
        ds = _dog_ct()
        del ds.PatientBreedCodeSequence
        errors = _errors(validate_dataset(ds))
        assert ("iod.type2c-missing", "/PatientBreedDescription(0010,2292)") in errors
        assert ("iod.type2c-missing", "/PatientBreedCodeSequence(0010,2293)") in errors

    def test_an_empty_breed_code_sequence_needs_the_description(self) -> None:
        ds = _dog_ct()
        ds.PatientBreedCodeSequence = []
        assert ("iod.type2c-missing", "/PatientBreedDescription(0010,2292)") in _errors(
            validate_dataset(ds))

    def test_responsible_person_needs_a_role(self) -> None:
        ds = _dog_ct()
        del ds.ResponsiblePersonRole
        assert ("iod.type1c-missing", "/ResponsiblePersonRole(0010,2298)") in _errors(
            validate_dataset(ds))
        ds.ResponsiblePerson = ""  # no value: no role needed
        assert ("iod.type1c-missing", "/ResponsiblePersonRole(0010,2298)") not in _errors(
            validate_dataset(ds))


class TestReferences:
    def test_functional_group_findings_cite_the_multi_frame_functional_groups_module(
        self,
    ) -> None:
        seg = _segmentation("BINARY")
        del seg.NumberOfFrames
        found = [f for f in validate_dataset(seg) if f.path == "/NumberOfFrames(0028,0008)"]
        assert found and all(f.reference == "PS3.3 C.7.6.16" for f in found), found

    def test_vl_image_findings_cite_their_section(self) -> None:
        ds = _multiframe_true_color_sc(1)
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"  # VL Photographic Image
        refs = {f.module: f.reference for f in validate_dataset(ds)
                if f.rule_id == "iod.type2-missing"}
        assert refs.get("VL Image") == "PS3.3 C.8.12.1", refs

    def test_every_module_of_the_held_out_objects_is_cited_by_section(self) -> None:
        objects = [_segmentation("LABELMAP"), _multiframe_true_color_sc(2),
                   _enhanced_ct_of_a_knee(None)]
        for ds in objects:
            ds.PatientName = None  # make every object report something
            del ds.PatientName
            for f in validate_dataset(ds):
                if f.rule_id.startswith("iod.type"):
                    assert f.reference.startswith(("PS3.3 A.", "PS3.3 C.", "PS3.5 ")), f


def test_reject_policy_imports_the_held_out_valid_objects(tmp_path: Path) -> None:
    """The symptom: ``archivist import`` with validation_policy=reject refused them."""
    folder = tmp_path / "in"
    folder.mkdir()
    objects = {"labelmap": _segmentation("LABELMAP"), "sc": _multiframe_true_color_sc(1),
               "knee": _enhanced_ct_of_a_knee("R"), "dog": _dog_ct()}
    for name, ds in objects.items():
        ds.save_as(folder / f"{name}.dcm", enforce_file_format=True)
    env = dict(os.environ, ARCHIVIST_VALIDATION_POLICY="reject")
    cli = Path(sys.executable).with_name("archivist")
    proc = subprocess.run(
        [str(cli), "import", "-q", "--data", str(tmp_path / "data"), str(folder)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 stored" in proc.stdout and "0 rejected" in proc.stdout, proc.stdout


def _pixelmed(path: Path, validator: str) -> list[str]:
    proc = subprocess.run(
        ["java", *_JAVA_OPTS, "-cp", str(PIXELMED_JAR), f"com.pixelmed.validate.{validator}",
         str(path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    assert any("validation complete" in line or "Found" in line for line in lines), lines
    return [line for line in lines if line.startswith("Error")]


@pytest.mark.slow
@pytest.mark.skipif(not PIXELMED_JAR.exists() or shutil.which("java") is None,
                    reason="needs PixelMed (apt-get install pixelmed-apps) and Java")
def test_pixelmed_agrees_the_held_out_objects_are_valid(tmp_path: Path) -> None:
    """PixelMed's validators (second oracle) find no error where we find none.

    PixelMed requires Laterality whenever no Image/Frame Laterality is present, without
    PS3.3 C.7.3.1's "body part examined is a paired structure": that error is left out.
    """
    objects = {
        "seg.dcm": (_segmentation("BINARY"), "DicomInstanceValidator"),
        "knee.dcm": (_enhanced_ct_of_a_knee("L"), "DicomInstanceValidator"),
    }
    for name, (ds, validator) in objects.items():
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        ours = _errors(validate_dataset(pydicom.dcmread(path)))
        theirs = [e for e in _pixelmed(path, validator) if "/Laterality/" not in e]
        assert ours == [] and theirs == [], (name, ours, theirs)


class TestCTImageBits:
    """Errors dciodvfy reports that we missed: PS3.3 C.8.2.1.1.4-5 (CT Image Module)."""

    def test_an_8_bit_ct_is_an_error(self) -> None:
        # What DCMTK dcmcjpeg +eb (8-bit lossy JPEG) makes of a 12-bit CT.
        ds = _ct_series(1)[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = bytes(16 * 16)
        found = {(f.rule_id, f.path, f.module, f.reference) for f in validate_dataset(ds)
                 if f.severity is Severity.ERROR}
        assert found == {
            ("iod.enumerated-value", "/BitsAllocated(0028,0100)", "CT Image", "PS3.3 C.8.2.1.1.4"),
            ("iod.enumerated-value", "/BitsStored(0028,0101)", "CT Image", "PS3.3 C.8.2.1.1.5"),
        }

    def test_12_to_16_bits_stored_are_valid(self) -> None:
        for stored in (12, 14, 16):
            ds = _ct_series(1)[0]
            ds.BitsStored, ds.HighBit = stored, stored - 1
            assert _errors(validate_dataset(ds)) == [], stored

    def test_other_iods_keep_their_own_bits(self) -> None:
        ds = _multiframe_true_color_sc(1)  # 8 bits: valid for Secondary Capture
        assert _errors(validate_dataset(ds)) == []
