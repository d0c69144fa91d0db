"""What a real ``archivist serve`` writes in its log: no patient data, no line of any length.

pydicom's warnings quote element values. ``archivist serve`` sets pydicom's logger to ERROR, but
importing pydicom sets it back to WARNING, and the worker processes import it after the logging
is set up: their log had lines such as ``WARNING pydicom[...]: Invalid value for VR UI: '...'``
with the value received.

pynetdicom's checks of A-ASSOCIATE-RQ values quote the whole value refused: a 60 KB
Implementation Version Name, which any client may send, wrote a 60 KB line per connection.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as StudyFind

from archivist.testing.datasets import make_instance
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(180)

CANARY_NAME, CANARY_ID = "CANARY^PHI^7731", "CANARYID7731"


def test_workers_keep_values_out_of_the_log(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv: ServerProcess = make_server("--workers", "2")
    good, bad = tmp_path / "good.dcm", tmp_path / "bad.dcm"
    make_instance(good, patient_name=CANARY_NAME, patient_id=CANARY_ID)
    # A SOP Instance UID that is no UID (the command set carries it too): refused, and pydicom
    # warns about the value while the request is decoded.
    make_instance(bad, patient_name=CANARY_NAME, patient_id=CANARY_ID,
                  sop_uid="1.2.3.NOT-A-UID", validate_uids=False)
    ae = AE(ae_title="LOGSCU")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    ae.add_requested_context(StudyFind)
    for _ in range(2):  # each worker at least once, most likely
        assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
        assert assoc.is_established
        with pytest.warns(UserWarning):
            assert assoc.send_c_store(bad).Status != 0
        assert assoc.send_c_store(good).Status == 0
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientName, query.PatientID, query.StudyInstanceUID = "CANARY*", CANARY_ID, ""
        statuses = [status.Status for status, _ in assoc.send_c_find(query, StudyFind)]
        assert statuses[-1] == 0
        assoc.release()
    log = srv.log()
    assert "LOGSCU" in log  # the associations were logged
    assert "CANARY" not in log, "patient data in the log"
    leaked = [line for line in log.splitlines() if " pydicom[" in line]
    assert not leaked, leaked[:3]


def _associate_rq(implementation_version: bytes) -> bytes:
    """An A-ASSOCIATE-RQ for Verification whose Implementation Version Name (PS3.7 D.3.3.2,
    at most 16 characters) is `implementation_version`."""

    def item(kind: int, body: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(body)) + body

    pc = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1")
              + item(0x40, b"1.2.840.10008.1.2"))
    user = item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.3.4")
                + item(0x55, implementation_version))
    body = (struct.pack(">HH", 1, 0) + b"ARCHIVIST".ljust(16) + b"HUGEVERSION".ljust(16)
            + bytes(32) + item(0x10, b"1.2.840.10008.3.1.1.1") + pc + user)
    return struct.pack(">BBL", 1, 0, len(body)) + body


def test_a_huge_value_in_an_association_request_is_not_copied_to_the_log(
        server: ServerProcess) -> None:
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=10) as s:
            s.sendall(_associate_rq(b"V" * 60000))
            assert s.recv(1) == b"\x07"  # A-ABORT: the value is refused
    log = server.log()
    assert "HUGEVERSION" in log or "Implementation Version Name" in log
    longest = max(len(line) for line in log.splitlines())
    assert longest < 1000, f"a log line of {longest} characters"
