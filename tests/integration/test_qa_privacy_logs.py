"""Refusals in the log of a real ``archivist serve`` name the reason, never the values
(README: "Patient names and IDs never appear in logs at INFO or above").

QA (privacy): the log lines of refused requests quoted the values that were refused, at
WARNING: ``C-FIND from X refused: PatientBirthDate: '...' is not a date`` (C-FIND, Repository
Query, Inventory FIND keys; C-MOVE and C-GET alike, while they matched every key), and, with
``validation_policy = reject``, ``C-STORE from X refused: dict.value-invalid: Value 1 of Patient's Birth Date (DA) = '...'``
(C-STORE and STOW-RS: the first validation finding, which quotes the object's value). The
requestor still gets the whole reason (Error Comment, STOW-RS response, HTTP body); the log
keeps its head (the key or rule), which names no value.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests
from pydicom.dataset import Dataset
from pynetdicom import AE

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess, free_port
from conftest import dcmtk_tool

pytestmark = pytest.mark.timeout(240)

CANARY = "PRIVCNRY"  # 8 characters: written in place of a birth date, an invalid DA value
REPOSITORY_QUERY = "1.2.840.10008.5.1.4.1.1.201.6"
INVENTORY_FIND = "1.2.840.10008.5.1.4.1.1.201.2"
ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}


def _dcmtk(tool: str, srv: ServerProcess, *args: str, files: tuple[str, ...] = ()
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk_tool(tool), "-aet", "PRIVSCU", "-aec", "ARCHIVIST", *args, "127.0.0.1",
         str(srv.dicom_port), *files], check=False, capture_output=True, text=True,
        timeout=60, env=ENV)


def _object_with_canary(path: Path, study: str) -> None:
    """A CT image whose Patient's Birth Date is the canary (not a date: a finding quoting it)."""
    make_instance(path, patient_name="PRIVCANARY^NAME", patient_id="PRIVCANARYID",
                  study_uid=study, extra={"PatientBirthDate": "19000101",
                                          # the CT Image Module's bit depths: the canary's
                                          # finding is the first error named
                                          "BitsAllocated": 16, "BitsStored": 12,
                                          "HighBit": 11})
    path.write_bytes(path.read_bytes().replace(b"19000101", CANARY.encode()))


def _query(srv: ServerProcess, sop_class: str, **keys: str) -> int:
    ae = AE(ae_title="PRIVRQ")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    last = -1
    try:
        for status, _ in assoc.send_c_find(query, sop_class):
            if status:
                last = int(status.Status)
    finally:
        assoc.release()
    return last


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the invalid DA values we send
def test_refusals_log_no_values(make_server, dcmtk: None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv: ServerProcess = make_server(
        "--workers", "1", "--peer", f"NOWHERE=127.0.0.1:{free_port()}",
        env={"ARCHIVIST_VALIDATION_POLICY": "reject"})
    study = new_uid()
    bad = tmp_path / "bad.dcm"
    _object_with_canary(bad, study)

    # Refused by the validation (reject): DCMTK storescu, then STOW-RS.
    assert "Error" in _dcmtk("storescu", srv, "-v", files=(str(bad),)).stderr
    boundary = "PRIVQA"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + bad.read_bytes() + f"\r\n--{boundary}--\r\n".encode())
    rsp = requests.post(f"{srv.url}/dicomweb/studies", data=body, timeout=60, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert rsp.status_code == 409
    assert "dict.value-invalid" in rsp.text  # the requestor is told why

    # Query keys that cannot be matched: C-FIND (DCMTK), Repository Query and Inventory FIND
    # (pynetdicom).
    key = f"PatientBirthDate={CANARY}"
    _dcmtk("findscu", srv, "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", key,
           "-k", "StudyInstanceUID=")
    # A retrieve reads its Unique Keys only: refused for a list of Patient IDs (PS3.4
    # C.4.2.2.1), the other keys (the canary birth date) ignored.
    for tool, extra in (("movescu", ("-aem", "NOWHERE")), ("getscu", ("-od", str(tmp_path)))):
        _dcmtk(tool, srv, "-P", *extra, "-k", "QueryRetrieveLevel=PATIENT",
               "-k", f"PatientID={CANARY}\\PRIVCANARYID", "-k", key)
        _dcmtk(tool, srv, "-S", *extra, "-k", "QueryRetrieveLevel=STUDY",
               "-k", f"StudyInstanceUID={study}", "-k", key)
    assert _query(srv, REPOSITORY_QUERY, PatientBirthDate=CANARY) == 0xA900
    assert _query(srv, INVENTORY_FIND, ContentDate=CANARY) == 0xA900

    log = srv.log()
    for what in ("C-STORE from PRIVSCU refused: dict.value-invalid", "STOW-RS part refused",
                 "C-FIND from PRIVSCU refused: PatientBirthDate",
                 "C-MOVE from PRIVSCU refused", "C-GET from PRIVSCU refused",
                 "Repository Query from PRIVRQ refused", "Inventory FIND from PRIVRQ refused"):
        assert what in log, f"{what!r} not logged:\n{log}"
    leaked = [line for line in log.splitlines() if "PRIVC" in line]
    assert not leaked, "patient data in the log:\n" + "\n".join(leaked)
