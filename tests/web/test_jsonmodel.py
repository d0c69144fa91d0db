"""DICOM JSON of stored objects (web/dicomweb/jsonmodel.py): the encoding rules of PS3.18 F.2."""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from archivist.web.dicomweb.jsonmodel import dataset_to_json, instance_json


def _stored(ds: Dataset) -> io.BytesIO:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return buf


def test_an_empty_value_among_several_is_null() -> None:
    """PS3.18 F.2.5: ``\\ISO 2022 IR 87`` is [null, "ISO 2022 IR 87"], not ["", ...]."""
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]
    ds.PatientID = "P1"
    body = instance_json(_stored(ds), "http://x/dicomweb/studies/1/series/2/instances/3",
                         ExplicitVRLittleEndian)
    assert body["00080005"] == {"vr": "CS", "Value": [None, "ISO 2022 IR 87"]}
    assert body["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]}
    assert body["00100020"] == {"vr": "LO", "Value": ["P1"]}


def test_a_single_value_is_kept() -> None:
    ds = Dataset()
    ds.Modality = "CT"
    ds.StudyDescription = ""
    got = dataset_to_json(pydicom.dcmread(_stored(ds)), "http://x")
    assert got["00080060"] == {"vr": "CS", "Value": ["CT"]}
    assert "Value" not in got["00081030"]


def test_numbers_and_names_with_an_empty_value_keep_the_others() -> None:
    """pydicom cannot write ``40\\`` (DS), ``1\\\\3`` (IS) or ``ALIAS^ONE\\`` (PN): the
    attribute was sent without any value (OHIF then used a default window)."""
    ds = Dataset()
    ds.WindowCenter = "40\\"
    ds.ReferencedFrameNumber = "1\\\\3"
    ds.OtherPatientNames = "ALIAS^ONE\\"
    got = dataset_to_json(pydicom.dcmread(_stored(ds)), "http://x")
    assert got["00281050"] == {"vr": "DS", "Value": [40, None]}
    assert got["00081160"] == {"vr": "IS", "Value": [1, None, 3]}
    assert got["00101001"] == {"vr": "PN", "Value": [{"Alphabetic": "ALIAS^ONE"}, None]}
