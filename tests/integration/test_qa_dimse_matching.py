"""C-FIND matching and C-GET transfer syntaxes found wrong by black-box QA, against a real
``archivist serve`` driven by DCMTK and pynetdicom.

- Range matching on dates, times and date-times that have no indexed column (PS3.4 C.2.2.2.5):
  ``AcquisitionDateTime=2011-`` matched nothing (the value was compared as text).
- Timezone Offset From UTC in a request states the time zone of its dates and times (PS3.4
  C.4.1.1.3.1); it filtered the studies as a matching key.
- Wildcards on Modalities in Study (PS3.4 C.2.2.2.4): ``ModalitiesInStudy=C*`` matched nothing.
- A time range whose low end has a fraction (``101500.000-``) left out a stored ``101500``.
- Instance Availability and Retrieve AE Title came back empty (PS3.4 C.4.1.1.3.2, Table C.6-1
  ...); Available Transfer Syntax UID is the stored syntax.
- A return key with an ambiguous VR (Pixel Data, ``OB or OW``) made the whole C-FIND fail
  (0xC311).
- C-GET by DCMTK ``getscu +xr`` (one context per SOP Class, RLE first): an uncompressed object
  failed as a sub-operation although the archive encodes RLE.
"""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from archivist.archive import jpeg_plugin
from archivist.testing.datasets import make_instance, pydicom_test_file
from archivist.testing.server import ServerProcess
from conftest import dcmtk_tool

jpeg_plugin.register()  # this process reads the JPEG Lossless it receives

AET = "ARCHIVIST"
FIND = StudyRootQueryRetrieveInformationModelFind
CT_SMALL_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("qa_dimse")
    server = ServerProcess(base / "data", extra_args=["--workers", "1"]).start()
    files = []
    for i, (modality, acquired, tz, time) in enumerate([
        ("CT", "20110525145628.350000", "+0100", "101500"),
        ("MR", "20130125105919", "-0500", "101500.5"),
        ("US", None, None, "093000"),
    ]):
        extra: dict[str, object] = {"AcquisitionDate": "19970430", "AcquisitionTime": "112936"}
        if acquired:
            extra["AcquisitionDateTime"] = acquired
        if tz:
            extra["TimezoneOffsetFromUTC"] = tz
        path = base / f"qa{i}.dcm"
        make_instance(path, patient_id=f"QA{i}", modality=modality, study_time=time, extra=extra)
        files.append(str(path))
    files.append(str(pydicom_test_file("CT_small.dcm")))
    run = subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1",
                          str(server.dicom_port), *files],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    yield server
    server.stop()


def find(srv: ServerProcess, level: str, **keys: object) -> tuple[list[Dataset], int]:
    ident = Dataset()
    ident.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ident, keyword, value)
    ae = AE(ae_title="QAFIND")
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
    assert assoc.is_established
    found, final = [], -1
    try:
        for status, ds in assoc.send_c_find(ident, FIND):
            if int(status.Status) in (0xFF00, 0xFF01):
                found.append(ds)
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    return found, final


def uids(found: list[Dataset], keyword: str = "PatientID") -> list[str]:
    return sorted(str(ds.get(keyword, "")) for ds in found)


@pytest.mark.parametrize(("value", "hits"), [
    ("2011-", ["QA0", "QA1"]),
    ("20110101-", ["QA0", "QA1"]),
    ("-20120101", ["QA0"]),
    ("-2011", ["QA0"]),
    ("20130125-20130126", ["QA1"]),
    ("20110525145628.35-20110525145628.35", ["QA0"]),
    ("2014-", []),
])
def test_datetime_range_on_a_key_without_column(srv: ServerProcess, value: str,
                                                 hits: list[str]) -> None:
    found, final = find(srv, "IMAGE", SOPInstanceUID="", PatientID="QA*",
                        AcquisitionDateTime=value)
    assert final == 0x0000
    assert uids(found) == hits


def test_date_and_time_ranges_on_keys_without_column(srv: ServerProcess) -> None:
    found, final = find(srv, "IMAGE", SOPInstanceUID="", PatientID="QA*",
                        AcquisitionDate="-20040101")
    assert (final, uids(found)) == (0x0000, ["QA0", "QA1", "QA2"])
    found, _ = find(srv, "IMAGE", SOPInstanceUID="", PatientID="QA*",
                    AcquisitionTime="1129-1130")
    assert uids(found) == ["QA0", "QA1", "QA2"]
    found, _ = find(srv, "IMAGE", SOPInstanceUID="", PatientID="QA*",
                    AcquisitionDate="19980101-")
    assert found == []


def test_datetime_range_with_findscu(srv: ServerProcess) -> None:
    run = subprocess.run([dcmtk_tool("findscu"), "-S", "-aec", AET,
                          "-k", "QueryRetrieveLevel=IMAGE", "-k", "SOPInstanceUID=",
                          "-k", "PatientID=QA*", "-k", "AcquisitionDateTime=20130101-",
                          "127.0.0.1", str(srv.dicom_port)],
                         check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("Find Response:") == 1, run.stderr[-2000:]
    assert "QA1" in run.stderr


def test_timezone_offset_in_the_request_is_not_a_matching_key(srv: ServerProcess) -> None:
    found, final = find(srv, "STUDY", StudyInstanceUID="", PatientID="QA*",
                        TimezoneOffsetFromUTC="+0900")
    assert final == 0x0000
    assert uids(found) == ["QA0", "QA1", "QA2"]
    # ...and as a return key it gives the stored value
    found, _ = find(srv, "STUDY", StudyInstanceUID="", PatientID="QA1",
                    TimezoneOffsetFromUTC="")
    assert [str(ds.TimezoneOffsetFromUTC) for ds in found] == ["-0500"]


@pytest.mark.parametrize(("value", "hits"), [
    ("C*", ["QA0"]), ("?R", ["QA1"]), ("*", ["QA0", "QA1", "QA2"]), ("X*", []),
    ("US", ["QA2"]),
])
def test_wildcard_on_modalities_in_study(srv: ServerProcess, value: str,
                                         hits: list[str]) -> None:
    found, final = find(srv, "STUDY", StudyInstanceUID="", PatientID="QA*",
                        ModalitiesInStudy=value)
    assert final == 0x0000
    assert uids(found) == hits


def test_time_range_low_end_with_a_fraction(srv: ServerProcess) -> None:
    found, _ = find(srv, "STUDY", StudyInstanceUID="", PatientID="QA*", StudyTime="101500.000-")
    assert uids(found) == ["QA0", "QA1"]
    found, _ = find(srv, "STUDY", StudyInstanceUID="", PatientID="QA*", StudyTime="101500.2-")
    assert uids(found) == ["QA1"]


def test_location_keys_are_returned(srv: ServerProcess) -> None:
    for level, key in (("STUDY", "StudyInstanceUID"), ("SERIES", "SeriesInstanceUID"),
                       ("IMAGE", "SOPInstanceUID")):
        found, final = find(srv, level, **{key: ""}, PatientID="QA0", InstanceAvailability="",
                            RetrieveAETitle="")
        assert final == 0x0000 and len(found) == 1, level
        assert found[0].InstanceAvailability == "ONLINE", level
        assert found[0].RetrieveAETitle == AET, level
    found, _ = find(srv, "IMAGE", SOPInstanceUID="", PatientID="QA0",
                    AvailableTransferSyntaxUID="")
    assert found[0].AvailableTransferSyntaxUID == ExplicitVRLittleEndian
    # As matching keys: this archive's values match everything, any other nothing
    found, _ = find(srv, "STUDY", StudyInstanceUID="", PatientID="QA*",
                    InstanceAvailability="ONLINE", RetrieveAETitle=AET)
    assert len(found) == 3
    found, final = find(srv, "STUDY", StudyInstanceUID="", PatientID="QA*",
                        InstanceAvailability="OFFLINE")
    assert (final, found) == (0x0000, [])


def test_return_key_with_an_ambiguous_vr(srv: ServerProcess) -> None:
    ident = Dataset()
    ident.QueryRetrieveLevel = "IMAGE"
    ident.SOPInstanceUID = ""
    ident.PatientID = "QA0"
    ident.add_new(0x7FE00010, "OB", None)  # Pixel Data: "OB or OW" in the dictionary
    ident.add_new(0x00280106, "US", None)  # Smallest Image Pixel Value: "US or SS"
    ae = AE(ae_title="QAFIND")
    # Implicit VR (the archive must resolve both VRs without the pixel attributes), and
    # Explicit VR (so that pynetdicom can decode the response without them)
    ae.add_requested_context(FIND, ["1.2.840.10008.1.2"])
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
    try:
        statuses = [int(s.Status) for s, _ in assoc.send_c_find(ident, FIND)]
    finally:
        assoc.release()
    # pynetdicom cannot decode "US or SS" in an Implicit VR response without Pixel
    # Representation: only the statuses are checked here
    assert statuses in ([0xFF00, 0x0000], [0xFF00, 0xFF00, 0x0000])
    assert statuses[-1] == 0x0000
    ae = AE(ae_title="QAFIND")
    ae.add_requested_context(FIND, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
    try:
        results = list(assoc.send_c_find(ident, FIND))
    finally:
        assoc.release()
    assert [int(s.Status) for s, _ in results] == [0xFF00, 0x0000]
    assert results[0][1].PatientID == "QA0" and 0x7FE00010 in results[0][1]


@pytest.mark.parametrize(("option", "syntax"), [
    ("+xr", "1.2.840.10008.1.2.5"),        # RLE Lossless
    ("+xv", "1.2.840.10008.1.2.4.90"),     # JPEG 2000 lossless
    ("+xs", "1.2.840.10008.1.2.4.70"),     # JPEG Lossless SV1
])
def test_getscu_preferring_a_syntax_the_archive_encodes(srv: ServerProcess, tmp_path: Path,
                                                       option: str, syntax: str) -> None:
    # getscu proposes one context per SOP Class with the preferred syntax first, and the
    # archive accepts that one: an uncompressed CT must be encoded in it, not fail.
    run = subprocess.run([dcmtk_tool("getscu"), "-S", option, "-aec", AET, "-od", str(tmp_path),
                          "-k", "QueryRetrieveLevel=STUDY",
                          "-k", f"StudyInstanceUID={CT_SMALL_STUDY}", "127.0.0.1",
                          str(srv.dicom_port)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    got = list(tmp_path.iterdir())
    assert len(got) == 1, run.stderr[-2000:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        received = pydicom.dcmread(got[0])
        original = pydicom.dcmread(pydicom_test_file("CT_small.dcm"))
        assert received.file_meta.TransferSyntaxUID == syntax
        assert received.SOPInstanceUID == original.SOPInstanceUID
        assert (received.pixel_array == original.pixel_array).all()
    if option == "+xs":
        # DCMTK decodes our JPEG Lossless to the same pixels (signed 16-bit CT).
        plain = tmp_path / "plain.dcm"
        subprocess.run([dcmtk_tool("dcmdjpeg"), str(got[0]), str(plain)], check=True,
                       capture_output=True, timeout=60)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert (pydicom.dcmread(plain).pixel_array == original.pixel_array).all()


def test_getscu_default_still_gets_uncompressed(srv: ServerProcess, tmp_path: Path) -> None:
    run = subprocess.run([dcmtk_tool("getscu"), "-S", "-aec", AET, "-od", str(tmp_path),
                          "-k", "QueryRetrieveLevel=STUDY",
                          "-k", f"StudyInstanceUID={CT_SMALL_STUDY}", "127.0.0.1",
                          str(srv.dicom_port)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    got = list(tmp_path.iterdir())
    assert len(got) == 1
    assert pydicom.dcmread(got[0]).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian

