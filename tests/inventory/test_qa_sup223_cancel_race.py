"""Inventory Creation: a Cancel (or Pause) that arrives while the SCP stores the finished
inventory, as a third-party pynetdicom SCU sends it to a real ``archivist serve`` (found by QA).

The Cancel was answered 0x0000 and the job set CANCELED, then the worker's store finished
anyway: every Inventory instance was stored (although Retain Instances was NO), the job stayed
CANCELED without a root, and neither event 11 nor 13 was ever sent, so the requester waited
forever. A Pause there ended the job in FAILURE ("internal error: JobError") with the inventory
stored. Now the job refuses Pause and Cancel once it stores (0x0110), or honours them before.
"""

from __future__ import annotations

import json
import queue
import time
import urllib.request
from typing import Any

import pytest
from inventory_helpers import fill
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import InventoryCreation, InventoryFind

from archivist.testing.server import ServerProcess, free_port

WELL_KNOWN = "1.2.840.10008.5.1.4.1.1.201.1.1"
STUDIES = 120


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from archivist.archive.archive import Archive
    from archivist.config import load_settings

    tmp = tmp_path_factory.mktemp("sup223race")
    data = tmp / "data"
    archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
    try:
        fill(archive, tmp / "in", studies=STUDIES)
    finally:
        archive.close()
    events: queue.Queue[tuple[int, Dataset]] = queue.Queue()

    def on_event(event: Any) -> tuple[int, None]:
        events.put((int(event.request.EventTypeID), event.event_information))
        return 0x0000, None

    listener = AE(ae_title="QARACE")
    listener.add_supported_context(InventoryCreation)
    port = free_port()
    server = listener.start_server(("127.0.0.1", port), block=False,
                                   evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event)])
    # one study per leaf: storing the finished inventory takes a while
    srv = ServerProcess(data, extra_args=["--workers", "1", "--peer", f"QARACE=127.0.0.1:{port}"],
                        env={"ARCHIVIST_INVENTORY_STUDIES_PER_INSTANCE": "1"}).start()
    try:
        yield srv, events
    finally:
        srv.stop()
        server.shutdown()


def _action(port: int, action_type: int, **keys: Any) -> int:
    info = Dataset()
    for keyword, value in keys.items():
        setattr(info, keyword, value)
    ae = AE(ae_title="QARACE")
    ae.add_requested_context(InventoryCreation)
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(info, action_type, InventoryCreation, WELL_KNOWN)
    finally:
        assoc.release()
    assert status is not None and "Status" in status
    return int(status.Status)


def _job(srv: ServerProcess, uid: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{srv.http_port}/api/inventories/jobs/{uid}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _final_event(events: queue.Queue[tuple[int, Dataset]], uid: str) -> tuple[int, Dataset]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            event_type, info = events.get(timeout=0.5)
        except queue.Empty:
            continue
        if str(info.TransactionUID) == uid and event_type in (11, 13):
            return event_type, info
    raise AssertionError("no Inventory Terminated event (11 or 13) for the transaction")


def _stored(srv: ServerProcess, uid: str) -> int:
    ae = AE(ae_title="QARACE")
    ae.add_requested_context(InventoryFind)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    ident = Dataset()
    ident.TransactionUID = uid
    ident.SOPInstanceUID = ""
    try:
        return sum(1 for s, _ in assoc.send_c_find(ident, InventoryFind)
                   if s is not None and int(s.Status) == 0xFF00)
    finally:
        assoc.release()


def _when_storing(srv: ServerProcess, uid: str) -> None:
    """Wait until every leaf is built: the worker then stores the inventory."""
    deadline = time.monotonic() + 120
    while True:
        job = _job(srv, uid)
        if job["state"] != "PROCESSING" or (job["studies_total"] == STUDIES
                                             and job["studies_done"] == STUDIES):
            return
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def test_cancel_while_storing(setup: Any) -> None:
    srv, events = setup
    uid = generate_uid()
    assert _action(srv.dicom_port, 11, TransactionUID=uid, InventoryLevel="SERIES") == 0x0000
    _when_storing(srv, uid)
    status = _action(srv.dicom_port, 13, TransactionUID=uid, RetainInstances="NO")
    event_type, info = _final_event(events, uid)  # never came when the cancel won the race
    job = _job(srv, uid)
    if status == 0x0000:  # in time: nothing kept
        assert (event_type, job["state"], _stored(srv, uid)) == (13, "CANCELED", 0)
    else:
        assert status == 0x0110
        assert (event_type, str(info.TransactionStatus), job["state"]) == (
            11, "COMPLETE", "COMPLETE")
        assert _stored(srv, uid) == STUDIES + 1 and job["root"] == info.ReferencedSOPInstanceUID


def test_pause_while_storing(setup: Any) -> None:
    srv, events = setup
    uid = generate_uid()
    assert _action(srv.dicom_port, 11, TransactionUID=uid, InventoryLevel="SERIES") == 0x0000
    _when_storing(srv, uid)
    status = _action(srv.dicom_port, 14, TransactionUID=uid)
    if status == 0x0000:  # in time: paused before storing, nothing stored yet
        assert _job(srv, uid)["state"] == "PAUSED" and _stored(srv, uid) == 0
        assert _action(srv.dicom_port, 15, TransactionUID=uid) == 0x0000
    else:
        assert status == 0x0110
    event_type, info = _final_event(events, uid)
    job = _job(srv, uid)
    assert (event_type, str(info.TransactionStatus), job["state"]) == (11, "COMPLETE", "COMPLETE")
    assert _stored(srv, uid) == STUDIES + 1


def test_one_content_datetime_per_inventory(setup: Any) -> None:
    """Content Date and Time is when the creation began (C.38.1.1.1), the same in the root and
    every leaf of one inventory (each leaf had carried the time it was built, the root the time
    it was stored)."""
    import io
    import zipfile

    import pydicom

    srv, events = setup
    uid = generate_uid()
    before = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() - 1))
    assert _action(srv.dicom_port, 11, TransactionUID=uid, InventoryLevel="STUDY") == 0x0000
    event_type, info = _final_event(events, uid)
    assert event_type == 11
    url = (f"http://127.0.0.1:{srv.http_port}/api/inventories/{info.ReferencedSOPInstanceUID}"
           "?format=dicom")
    with urllib.request.urlopen(url, timeout=60) as resp:
        archive = zipfile.ZipFile(io.BytesIO(resp.read()))
    instances = [pydicom.dcmread(io.BytesIO(archive.read(n))) for n in archive.namelist()]
    assert len(instances) == STUDIES + 1
    stamps = {(str(d.ContentDate), str(d.ContentTime)) for d in instances}
    assert len(stamps) == 1
    (date, time_), = stamps
    began = date + time_.split(".")[0]
    assert began >= before
    items = [str(s.ItemInventoryDateTime)[:14] for d in instances
             for s in d.InventoriedStudiesSequence]
    assert len(items) == STUDIES and min(items) >= began
