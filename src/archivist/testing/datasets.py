"""Small DICOM Part 10 files for unit tests (pydicom only, no network).

:func:`make_instance` writes one single- or multi-frame image with the identifiers a test needs and
returns the dataset it wrote. :func:`pydicom_test_file` locates a file shipped inside pydicom's own
``data/test_files`` without ever downloading one.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

#: Root for UIDs made by the test generators.
ORG_ROOT = "1.2.826.0.1.3680043.10.1235."

_SOP_CLASS_OF_MODALITY = {"CT": CTImageStorage, "MR": MRImageStorage}


def new_uid() -> str:
    """A fresh UID under :data:`ORG_ROOT`."""
    return str(generate_uid(prefix=ORG_ROOT))


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """A code sequence item: Code Value, Coding Scheme Designator, Code Meaning."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def make_instance(
    path: Path,
    *,
    patient_name: str = "DOE^JOHN",
    patient_id: str = "PID1",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    sop_class_uid: str | None = None,
    modality: str = "CT",
    charset: str | None = None,
    study_date: str = "20240102",
    study_time: str = "101500",
    accession_number: str = "ACC1",
    study_description: str = "Test study",
    series_number: int = 1,
    instance_number: int = 1,
    rows: int = 4,
    columns: int = 4,
    frames: int = 1,
    extra: dict[str, Any] | None = None,
    validate_uids: bool = True,
) -> Dataset:
    """Write a small 8-bit MONOCHROME2 image as Part 10 and return the dataset.

    Parameters
    ----------
    path
        Where to write the file.
    charset
        Specific Character Set (e.g. ``"ISO_IR 192"``), or None to leave it out.
    frames
        Number of frames; more than one adds Number of Frames (0028,0008).
    extra
        Further ``keyword: value`` pairs set on the dataset.
    validate_uids
        When False, values pydicom considers invalid (hostile UIDs) are written unchanged.
    """
    sop_uid = new_uid() if sop_uid is None else sop_uid
    sop_class_uid = sop_class_uid or _SOP_CLASS_OF_MODALITY.get(
        modality, SecondaryCaptureImageStorage)
    with warnings.catch_warnings():
        if not validate_uids:
            warnings.simplefilter("ignore")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class_uid
        meta.MediaStorageSOPInstanceUID = sop_uid if validate_uids else ORG_ROOT + "9"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        if charset:
            ds.SpecificCharacterSet = charset
        ds.SOPClassUID = sop_class_uid
        ds.SOPInstanceUID = sop_uid
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid or new_uid()
        ds.SeriesInstanceUID = series_uid or new_uid()
        ds.StudyDate = study_date
        ds.StudyTime = study_time
        ds.AccessionNumber = accession_number
        ds.StudyID = "1"
        ds.StudyDescription = study_description
        ds.ReferringPhysicianName = ""
        ds.Modality = modality
        ds.SeriesNumber = series_number
        ds.InstanceNumber = instance_number
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Manufacturer = "Archivist Test"
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.Rows = rows
        ds.Columns = columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 8
        ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        if "PixelData" not in (extra or {}):  # as many bytes as the (extra) Bits Allocated need
            n = rows * columns * frames * ((int(ds.BitsAllocated) + 7) // 8)
            # 0, 1, ... 255, 0, 1, ...: the bytes of range(n) modulo 256, built a block at a time
            # (a generator of n ints took seconds for a few MB)
            size = n + (n % 2)
            ds.PixelData = (_RAMP * (size // 256 + 1))[:size]
        ds.save_as(path, enforce_file_format=True)
    return ds


_RAMP = bytes(range(256))


def pydicom_test_file(name: str) -> Path | None:
    """Path of a file shipped in pydicom's ``data/test_files``, or None when it is absent.

    Never downloads (pydicom fetches some files from the network on demand).
    """
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    return Path(str(found)) if found else None


def pydicom_test_files(*, charsets: bool = False) -> list[str]:
    """Every ``.dcm`` file shipped with pydicom (sorted); with `charsets` also its character-set
    samples (non-ASCII text in many repertoires). Never downloads."""
    from pydicom.data import get_charset_files, get_testdata_files

    files = get_testdata_files("*") + (get_charset_files("*") if charsets else [])
    return sorted(f for f in files if f.endswith(".dcm"))


__all__ = ["ORG_ROOT", "make_instance", "new_uid", "pydicom_test_file", "pydicom_test_files"]
