"""Deliberately broken DICOM objects, shared by the validator tests and the dciodvfy comparison.

Each case starts from a valid object, breaks one thing, and names the finding we expect:
(rule_id, keyword in the path).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from archivist.testing.datasets import code_item as _code
from archivist.validate.peer import probe_object


def ct() -> Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def mr() -> Dataset:
    return pydicom.dcmread(get_testdata_file("MR_small.dcm"))


def secondary_capture() -> Dataset:
    """A minimal valid Secondary Capture Image (PS3.3 A.8), 8x8 MONOCHROME2.

    The check-peer probe object, in the default character set, smaller, with Laterality.
    """
    ds = probe_object("P1")
    del ds.SpecificCharacterSet
    ds.PatientName = "Test^Patient"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Rows = 8
    ds.Columns = 8
    ds.PixelData = bytes(64)
    ds.Laterality = "L"
    return ds


def comprehensive_sr() -> Dataset:
    """A small valid Comprehensive SR (PS3.3 A.35.3) with one TEXT item."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Test^Patient"
    ds.PatientID = "P1"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.SeriesNumber = "1"
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.Manufacturer = ""
    ds.InstanceNumber = "1"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate = "20240101"
    ds.ContentTime = "120000"
    ds.PerformedProcedureCodeSequence = Sequence()
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic imaging report")])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    item.TextValue = "Nothing to report"
    ds.ContentSequence = Sequence([item])
    return ds


@dataclass(frozen=True)
class Case:
    """A broken object: how to build it and what must be found."""

    name: str
    build: Callable[[], Dataset]
    expect: tuple[tuple[str, str], ...]  # (rule_id, keyword in path)
    description: str


def _delete(base: Callable[[], Dataset], keyword: str) -> Callable[[], Dataset]:
    def build() -> Dataset:
        ds = base()
        delattr(ds, keyword)
        return ds

    return build


def _set(base: Callable[[], Dataset], keyword: str, value: object) -> Callable[[], Dataset]:
    def build() -> Dataset:
        ds = base()
        setattr(ds, keyword, value)
        return ds

    return build


def _raw(base: Callable[[], Dataset], tag: int, vr: str, value: object) -> Callable[[], Dataset]:
    def build() -> Dataset:
        ds = base()
        if tag in ds:
            del ds[tag]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the invalid value we want
            ds.add_new(tag, vr, value)
        return ds

    return build


def _sr_without_text() -> Dataset:
    ds = comprehensive_sr()
    del ds.ContentSequence[0].TextValue
    return ds


def _sc_rgb_without_planar() -> Dataset:
    ds = secondary_capture()
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PixelData = bytes(8 * 8 * 3)
    return ds


def _ct_empty_sequence() -> Dataset:
    ds = ct()
    ds.ReferencedImageSequence = Sequence([Dataset()])
    return ds


def _code_without_scheme() -> Dataset:
    ds = comprehensive_sr()
    del ds.ConceptNameCodeSequence[0].CodingSchemeDesignator
    return ds


CASES: tuple[Case, ...] = (
    Case("ct-no-modality", _delete(ct, "Modality"), (("iod.type1-missing", "Modality"),),
         "Type 1 Modality removed from a CT"),
    Case("ct-no-study-date", _delete(ct, "StudyDate"), (("iod.type2-missing", "StudyDate"),),
         "Type 2 Study Date removed"),
    Case("ct-no-patient-id", _delete(ct, "PatientID"), (("iod.type2-missing", "PatientID"),),
         "Type 2 Patient ID removed"),
    Case("ct-empty-rows", _set(ct, "Rows", None), (("iod.type1-empty", "Rows"),),
         "Type 1 Rows present but empty"),
    Case("ct-no-kvp", _delete(ct, "KVP"), (("iod.type2-missing", "KVP"),),
         "Type 2 KVP removed from the CT Image Module"),
    Case("ct-no-rescale", _delete(ct, "RescaleIntercept"),
         (("iod.type1-missing", "RescaleIntercept"),), "Type 1 Rescale Intercept removed"),
    Case("ct-no-image-position", _delete(ct, "ImagePositionPatient"),
         (("iod.type1-missing", "ImagePositionPatient"),), "Type 1 Image Position removed"),
    Case("ct-no-sop-instance", _delete(ct, "SOPInstanceUID"),
         (("iod.type1-missing", "SOPInstanceUID"),), "Type 1 SOP Instance UID removed"),
    Case("mr-no-echo-time", _delete(mr, "EchoTime"), (("iod.type2-missing", "EchoTime"),),
         "Type 2 Echo Time removed from an MR"),
    Case("mr-no-scanning-sequence", _delete(mr, "ScanningSequence"),
         (("iod.type1-missing", "ScanningSequence"),), "Type 1 Scanning Sequence removed"),
    Case("ct-pixel-spacing-vm3", _raw(ct, 0x00280030, "DS", ["0.5", "0.5", "1"]),
         (("dict.vm", "PixelSpacing"),), "Pixel Spacing with 3 values (VM 2)"),
    Case("ct-image-type-vm1", _raw(ct, 0x00080008, "CS", "ORIGINAL"),
         (("dict.vm", "ImageType"),), "Image Type with 1 value (VM 2-n)"),
    Case("ct-modality-lowercase", _raw(ct, 0x00080060, "CS", "ct"),
         (("dict.value-invalid", "Modality"),), "Lower-case characters in a CS value"),
    Case("ct-long-description", _raw(ct, 0x0008103E, "LO", "x" * 70),
         (("dict.value-invalid", "SeriesDescription"),), "LO value longer than 64"),
    Case("ct-bad-date", _raw(ct, 0x00080020, "DA", "2004-01-19"),
         (("dict.value-invalid", "StudyDate"),), "DA value with hyphens"),
    Case("ct-bad-uid", _raw(ct, 0x0020000D, "UI", "1.02.3"),
         (("dict.value-invalid", "StudyInstanceUID"),), "UID component with a leading zero"),
    Case("ct-rows-as-ss", _raw(ct, 0x00280010, "SS", 128),
         (("dict.vr-mismatch", "Rows"),), "Rows written with VR SS instead of US"),
    Case("ct-sex-x", _raw(ct, 0x00100040, "CS", "X"),
         (("iod.enumerated-value", "PatientSex"),), "Patient's Sex not M, F or O"),
    Case("ct-empty-ref-image-item", _ct_empty_sequence,
         (("iod.type1-missing", "ReferencedSOPClassUID"),),
         "Referenced Image Sequence item without its Type 1 UIDs"),
    Case("sc-no-conversion-type", _delete(secondary_capture, "ConversionType"),
         (("iod.type1-missing", "ConversionType"),), "SC without Conversion Type"),
    Case("sc-rgb-no-planar", _sc_rgb_without_planar,
         (("iod.type1c-missing", "PlanarConfiguration"),),
         "RGB image without Planar Configuration (Type 1C)"),
    Case("sr-text-no-value", _sr_without_text, (("iod.type1c-missing", "TextValue"),),
         "SR TEXT content item without Text Value"),
    Case("sr-no-completion", _delete(comprehensive_sr, "CompletionFlag"),
         (("iod.type1-missing", "CompletionFlag"),), "SR without Completion Flag"),
    Case("sr-code-no-scheme", _code_without_scheme,
         (("iod.type1c-missing", "CodingSchemeDesignator"),),
         "Code item without Coding Scheme Designator"),
)


def write(ds: Dataset, path: Path) -> Path:
    """Write *ds* as a PS3.10 file in Explicit VR Little Endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path
