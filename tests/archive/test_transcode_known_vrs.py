"""Re-encoding an object whose standard elements were stored with VR UN (as GDCM's gdcmconv
writes them) gives them their dictionary VR, so a receiver can read them (found by QA with GDCM
and DCMTK's storescp)."""

from __future__ import annotations

import io

import pydicom
from pydicom.data import get_testdata_file

from archivist.archive.transcode import transcode_dataset


def test_un_elements_get_their_dictionary_vr_when_re_encoded() -> None:
    src = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    uid = str(src.SOPClassUID)
    src["SOPClassUID"].VR = "UN"
    src["SOPClassUID"].value = uid.encode() + (b"\0" if len(uid) % 2 else b"")
    src["PatientName"].VR = "UN"
    src["PatientName"].value = b"UN^TEST "
    stored = io.BytesIO()
    src.save_as(stored, enforce_file_format=True)
    assert b"\x08\x00\x16\x00UN" in stored.getvalue()  # SOP Class UID written as UN

    ds = pydicom.dcmread(io.BytesIO(stored.getvalue()))
    transcode_dataset(ds, "1.2.840.10008.1.2.1")  # decompressed for a native-only receiver
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    assert b"\x08\x00\x16\x00UI" in data and b"\x08\x00\x16\x00UN" not in data
    assert b"\x10\x00\x10\x00PN" in data
