"""Storage Commitment Push Model (PS3.4 Annex J) against a real ``archivist serve``: a pynetdicom
"modality" stores with DCMTK's storescu, asks for commitment with an N-ACTION, and receives the
N-EVENT-REPORT on its own SCP (a new association, the archive in the SCP role)."""

from __future__ import annotations

import os
import queue
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from archivist.dimse.commitment import STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess, free_port

STORESCU = "/usr/bin/storescu"
pytestmark = pytest.mark.skipif(not os.path.exists(STORESCU), reason="DCMTK storescu needed")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("stgcmt")
    files = []
    study = new_uid()
    for n in range(3):
        path = tmp / f"ct{n}.dcm"
        make_instance(path, study_uid=study, instance_number=n + 1)
        files.append(path)
    listen = free_port()
    srv = ServerProcess(tmp / "data", extra_args=["--peer", f"MODALITY=127.0.0.1:{listen}"])
    srv.start()
    done = subprocess.run([STORESCU, "-aet", "MODALITY", "-aec", "ARCHIVIST", "127.0.0.1",
                           str(srv.dicom_port), *map(str, files)],
                          env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    yield {"srv": srv, "files": files, "listen": listen, "tmp": tmp}
    srv.stop()


def _modality() -> AE:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(STORAGE_COMMITMENT)
    # Accept the archive's association for the report, with the archive as SCP (role reversal).
    ae.add_supported_context(STORAGE_COMMITMENT, scu_role=True, scp_role=True)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    return ae


def _request(ae: AE, port: int, transaction: str, refs: list[tuple[str, str]],
             action: int = 1) -> Dataset:
    info = Dataset()
    info.TransactionUID = transaction
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    info.ReferencedSOPSequence = items
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(info, action, STORAGE_COMMITMENT,
                                        STORAGE_COMMITMENT_INSTANCE)
    finally:
        assoc.release()
    return status


def _refs(files: list[Path]) -> list[tuple[str, str]]:
    out = []
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        out.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    return out


def _listen(ae: AE, port: int) -> tuple[Any, queue.Queue[tuple[int, Dataset, str]]]:
    reports: queue.Queue[tuple[int, Dataset, str]] = queue.Queue()

    def on_report(event: Any) -> tuple[int, None]:
        reports.put((int(event.event_type), event.event_information,
                     str(event.request.AffectedSOPInstanceUID)))
        return 0x0000, None

    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    return server, reports


def test_committed_and_failed_instances_are_reported(setup: dict[str, Any]) -> None:
    srv, files = setup["srv"], setup["files"]
    ae = _modality()
    server, reports = _listen(ae, setup["listen"])
    try:
        refs = _refs(files)
        unknown = (refs[0][0], new_uid())
        conflict = ("1.2.840.10008.5.1.4.1.1.4", refs[1][1])  # stored as CT, named as MR
        transaction = new_uid()
        status = _request(ae, srv.dicom_port, transaction, [*refs, unknown, conflict])
        assert status.Status == 0x0000
        event_type, report, instance = reports.get(timeout=30)
    finally:
        server.shutdown()
    assert event_type == 2  # some failed
    assert instance == STORAGE_COMMITMENT_INSTANCE
    assert report.TransactionUID == transaction
    assert report.RetrieveAETitle == "ARCHIVIST"
    committed = [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID)
                 for i in report.ReferencedSOPSequence]
    assert committed == refs
    failed = {i.ReferencedSOPInstanceUID: int(i.FailureReason) for i in report.FailedSOPSequence}
    assert failed == {unknown[1]: 0x0112, conflict[1]: 0x0119}


def test_all_committed_is_event_type_1(setup: dict[str, Any]) -> None:
    srv, files = setup["srv"], setup["files"]
    ae = _modality()
    server, reports = _listen(ae, setup["listen"])
    try:
        transaction = new_uid()
        assert _request(ae, srv.dicom_port, transaction, _refs(files)).Status == 0x0000
        event_type, report, _ = reports.get(timeout=30)
    finally:
        server.shutdown()
    assert event_type == 1
    assert report.TransactionUID == transaction
    assert len(report.ReferencedSOPSequence) == 3
    assert "FailedSOPSequence" not in report


def test_report_is_retried_until_the_modality_listens(setup: dict[str, Any]) -> None:
    srv, files = setup["srv"], setup["files"]
    ae = _modality()
    transaction = new_uid()
    assert _request(ae, srv.dicom_port, transaction, _refs(files)[:1]).Status == 0x0000
    outbox = srv.data_dir / "commitment-events"
    deadline = time.monotonic() + 20
    while "not delivered" not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "storage commitment report" in srv.log()  # the first attempt failed, logged
    assert list(outbox.glob("*.json"))  # still queued on disk
    server, reports = _listen(ae, setup["listen"])
    try:
        event_type, report, _ = reports.get(timeout=30)
    finally:
        server.shutdown()
    assert (event_type, report.TransactionUID) == (1, transaction)
    deadline = time.monotonic() + 10
    while list(outbox.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(outbox.glob("*.json"))


@pytest.mark.parametrize("calling, transaction, action, expected", [
    ("NOWHERE", "1.2.3.4", 1, 0x0110),   # no address to send the report to
    ("MODALITY", "", 1, 0x0120),         # Transaction UID missing
    ("MODALITY", "1.2.x", 1, 0x0106),    # not a UID
    ("MODALITY", "1.2.3.4", 2, 0x0123),  # no such action
])
def test_refusals(setup: dict[str, Any], calling: str, transaction: str, action: int,
                  expected: int) -> None:
    srv, files = setup["srv"], setup["files"]
    ae = _modality()
    ae.ae_title = calling
    status = _request(ae, srv.dicom_port, transaction, _refs(files)[:1], action=action)
    assert status.Status == expected
    if expected == 0x0110:
        assert "--peer NOWHERE=HOST:PORT" in str(status.ErrorComment)


@pytest.mark.slow  # CI time (20 min); covered in a full run: pytest -m slow
def test_a_new_request_brings_its_queued_reports_forward(setup: dict[str, Any]) -> None:
    """A report that could not be delivered waits longer and longer between tries (up to a
    minute); when its requestor asks again, it is evidently back: what is queued for it goes
    at once, not after the wait (the new report waits behind it)."""
    srv, files = setup["srv"], setup["files"]
    ae = _modality()
    earlier = new_uid()
    assert _request(ae, srv.dicom_port, earlier, _refs(files)[:1]).Status == 0x0000
    # Tried at about 0, 1, 3 and 7 s by each worker (not quite in step), the next tries are
    # due some 5 s or more after the new request.
    time.sleep(8.5)
    server, reports = _listen(ae, setup["listen"])
    try:
        start = time.monotonic()
        later = new_uid()
        assert _request(ae, srv.dicom_port, later, _refs(files)[:1]).Status == 0x0000
        got = {str(reports.get(timeout=30)[1].TransactionUID) for _ in range(2)}
        took = time.monotonic() - start
    finally:
        server.shutdown()
    assert got == {earlier, later}
    assert took < 3.0, f"the reports came {took:.1f} s after the new request"
