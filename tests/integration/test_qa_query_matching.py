"""Query matching found wrong by differential QA (the same held-out data in Orthanc and here),
against a real ``archivist serve`` driven by DCMTK findscu, pynetdicom and HTTP.

- ``StudyTime=120000-`` left out a study whose StudyTime is ``1200`` (12:00, a valid TM without
  seconds, PS3.5 6.2): compared as text, ``1200`` sorts before ``120000`` (PS3.4 C.2.2.2.5).
- The UTC offset of a DT value was dropped instead of applied (PS3.4 C.2.2.2.5: it "shall be
  taken into account"): ``AcquisitionDateTime=20200101120000`` found an acquisition at
  ``20200101120000+0100`` (11:00 UTC) on an archive running in UTC.
- A value list holding a range or a wildcard (``StudyTime=-1159\\1300-``,
  ``PatientID=QQ-NOON*\\QQ-MORNING``) was matched literally, value by value: a range or a
  pattern in it matched nothing.
- QIDO-RS ``/studies?ModalitiesInStudy=CT,MR`` (what OHIF's study list sends when several
  modalities are picked) matched nothing: the comma was part of the value. A Code String
  cannot hold a comma, so it separates values there, as the backslash of C-FIND does.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import requests
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

from archivist.testing.datasets import make_instance
from archivist.testing.server import ServerProcess
from conftest import dcmtk_tool

pytestmark = pytest.mark.timeout(240)

AET = "ARCHIVIST"
#: patient id -> (StudyTime, Modality, AcquisitionDateTime)
STUDIES = {
    "QQ-NOON-HHMM": ("1200", "CT", "20200101120000+0100"),
    "QQ-NOON-HH": ("12", "MR", "20200101120000"),
    "QQ-MORNING": ("1159", "US", "20200101235959.5-0500"),
    "QQ-AFTERNOON": ("130000.25", "CT", None),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("qa_query")
    server = ServerProcess(base / "data", extra_args=["--workers", "1"],
                           env={"TZ": "UTC"}).start()
    files = []
    for pid, (study_time, modality, acquired) in STUDIES.items():
        path = base / f"{pid}.dcm"
        extra = {"AcquisitionDateTime": acquired} if acquired else {}
        make_instance(path, patient_id=pid, study_time=study_time, modality=modality,
                      extra=extra)
        files.append(str(path))
    run = subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1",
                          str(server.dicom_port), *files],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    yield server
    server.stop()


def findscu(srv: ServerProcess, *keys: str) -> list[str]:
    """The Patient IDs of a study-level DCMTK findscu query."""
    args = [dcmtk_tool("findscu"), "-S", "-aec", AET, "-k", "QueryRetrieveLevel=STUDY",
            "-k", "StudyInstanceUID="]
    if not any(key.startswith("PatientID=") for key in keys):
        args += ["-k", "PatientID=QQ-*"]
    for key in keys:
        args += ["-k", key]
    run = subprocess.run([*args, "127.0.0.1", str(srv.dicom_port)], check=False,
                         capture_output=True, text=True, timeout=60,
                         env={"TCP_NODELAY": "1"})
    assert run.returncode == 0, run.stderr
    return sorted(line.split("[")[1].split("]")[0].strip()
                  for line in run.stderr.splitlines() if "(0010,0020)" in line and "[" in line)


@pytest.mark.parametrize(("key", "hits"), [
    ("StudyTime=120000-", ["QQ-AFTERNOON", "QQ-NOON-HH", "QQ-NOON-HHMM"]),
    ("StudyTime=1200-1300", ["QQ-AFTERNOON", "QQ-NOON-HH", "QQ-NOON-HHMM"]),
    ("StudyTime=120001-", ["QQ-AFTERNOON"]),
    ("StudyTime=-115959", ["QQ-MORNING"]),
    ("StudyTime=1200", ["QQ-NOON-HHMM"]),
    ("StudyTime=-1159\\1300-", ["QQ-AFTERNOON", "QQ-MORNING"]),
    ("PatientID=QQ-NOON*\\QQ-MORNING", ["QQ-MORNING", "QQ-NOON-HH", "QQ-NOON-HHMM"]),
])
def test_time_range_finds_times_without_seconds(srv: ServerProcess, key: str,
                                                hits: list[str]) -> None:
    assert findscu(srv, key) == hits


def test_time_range_paging_over_http(srv: ServerProcess) -> None:
    """The same time range through QIDO-RS, a page at a time: no match lost or repeated."""
    seen = []
    for offset in range(4):
        r = requests.get(f"{srv.url}/dicomweb/studies", params={
            "PatientID": "QQ-*", "StudyTime": "120000-", "limit": 1, "offset": offset,
            "includefield": "PatientID"}, timeout=30)
        assert r.status_code == 200, r.text
        seen += [item["00100020"]["Value"][0] for item in r.json()]
    assert sorted(seen) == ["QQ-AFTERNOON", "QQ-NOON-HH", "QQ-NOON-HHMM"]


def _image_find(srv: ServerProcess, value: str) -> list[str]:
    ae = AE(ae_title="QAQUERY")
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
    assert assoc.is_established
    ident = Dataset()
    ident.QueryRetrieveLevel = "IMAGE"
    ident.PatientID = "QQ-*"
    ident.SOPInstanceUID = ""
    ident.AcquisitionDateTime = value
    found = []
    try:
        for status, ds in assoc.send_c_find(ident, FIND):
            if status.Status in (0xFF00, 0xFF01):
                found.append(str(ds.PatientID))
            else:
                assert status.Status == 0x0000
    finally:
        assoc.release()
    return sorted(found)


@pytest.mark.parametrize(("value", "hits"), [
    ("20200101120000", ["QQ-NOON-HH"]),
    ("20200101110000", ["QQ-NOON-HHMM"]),
    ("20200101110000+0000", ["QQ-NOON-HHMM"]),
    ("20200101000000-20200101235959", ["QQ-NOON-HH", "QQ-NOON-HHMM"]),
    ("20200102-", ["QQ-MORNING"]),
])
def test_datetime_offsets_are_applied(srv: ServerProcess, value: str, hits: list[str]) -> None:
    assert _image_find(srv, value) == hits


@pytest.mark.parametrize(("params", "hits"), [
    ({"ModalitiesInStudy": "CT,MR"}, ["QQ-AFTERNOON", "QQ-NOON-HH", "QQ-NOON-HHMM"]),
    ({"ModalitiesInStudy": "MR, US"}, ["QQ-MORNING", "QQ-NOON-HH"]),
    ({"Modality": "US,MR"}, ["QQ-MORNING", "QQ-NOON-HH"]),
    ({"ModalitiesInStudy": "CT\\US"}, ["QQ-AFTERNOON", "QQ-MORNING", "QQ-NOON-HHMM"]),
    ({"ModalitiesInStudy": "M*,U?"}, ["QQ-MORNING", "QQ-NOON-HH"]),
    # the key repeated, as dicomweb-client sends a list (search_filters={"Modality": [...]})
    ({"Modality": ["US", "MR"]}, ["QQ-MORNING", "QQ-NOON-HH"]),
    ({"ModalitiesInStudy": ["CT", "MR,US"]},
     ["QQ-AFTERNOON", "QQ-MORNING", "QQ-NOON-HH", "QQ-NOON-HHMM"]),
])
def test_qido_comma_separated_modalities(srv: ServerProcess, params: dict[str, object],
                                         hits: list[str]) -> None:
    r = requests.get(f"{srv.url}/dicomweb/studies",
                     params={"PatientID": "QQ-*", **params}, timeout=30)
    assert r.status_code == 200, r.text
    assert sorted(item["00100020"]["Value"][0] for item in r.json()) == hits


def test_qido_comma_in_a_name_stays_part_of_it(srv: ServerProcess) -> None:
    r = requests.get(f"{srv.url}/dicomweb/studies",
                     params={"PatientID": "QQ-*", "PatientName": "DOE,JOHN"}, timeout=30)
    assert (r.status_code, r.json()) == (200, [])


@pytest.mark.parametrize("query", ["SeriesNumber=99999999999999999999999",
                                   "InstanceNumber=9223372036854775808",
                                   "InstanceNumber=1,abc"])
def test_qido_integer_out_of_range_is_a_400(srv: ServerProcess, query: str) -> None:
    """It reached SQLite as an OverflowError: a 500."""
    r = requests.get(f"{srv.url}/dicomweb/instances?{query}", timeout=30)
    assert r.status_code == 400, r.text
    assert query.split("=")[0] in r.json()["error"]


def test_qido_a_repeated_key_that_is_no_list_is_a_400(srv: ServerProcess) -> None:
    """Repeated keys are a value list only where QIDO-RS takes one (UIDs, code strings);
    elsewhere the second value cannot be told from part of a value: a readable 400."""
    r = requests.get(f"{srv.url}/dicomweb/studies",
                     params={"PatientID": ["QQ-MORNING", "QQ-NOON-HH"]}, timeout=30)
    assert r.status_code == 400 and "more than once" in r.text, r.text
