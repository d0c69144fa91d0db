# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""Inventory Creation survives a crash of the server: a job initiated over N-ACTION on a real
``archivist serve``, the server killed with SIGKILL part-way, started again on the same data
directory; the job resumes from its committed leaves once the lease (the setting
``inventory_lease_seconds``) has expired, completes, the inventory is stored and matches the
archive, and the N-EVENT-REPORTs reach a pynetdicom SCP playing the requester: also those the
killed process had queued and could not deliver (the requester was not listening yet), in the
order they were queued."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from inventory_helpers import (  # noqa: F401
    fill,
    initiate_job,
    job_row,
    make_server,
    open_archive,
    wait_until,
)
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from archivist.inventory import INVENTORY_CREATION, STORAGE_MANAGEMENT_INSTANCE
from archivist.inventory.catalogue import Catalogue
from archivist.inventory.diff import diff
from archivist.inventory.model import Inventory
from archivist.inventory.sources import of_archive
from archivist.testing.server import free_port

STUDIES = 150


def test_job_resumes_after_the_server_is_killed(open_archive, make_server,
                                                tmp_path: Path) -> None:
    data = tmp_path / "srv"
    archive = open_archive(data)
    fill(archive, tmp_path / "in", studies=STUDIES)
    archive.close()

    events: list[tuple[int, Dataset]] = []
    done = threading.Event()

    def on_event(event: Any) -> tuple[int, None]:
        events.append((int(event.event_type), event.event_information))
        if int(event.event_type) in (11, 13):
            done.set()
        return 0x0000, None

    listen = free_port()
    requester = AE(ae_title="INVREQ")
    requester.add_supported_context(INVENTORY_CREATION, scu_role=True, scp_role=True)
    requester.add_requested_context(INVENTORY_CREATION)
    events_server = None  # the requester listens for events only once the server is dead
    # One study per leaf: the job commits its progress after every study, and takes a few
    # seconds (~30 ms a leaf), long enough to be killed part-way. A 2 s lease.
    env = {"ARCHIVIST_INVENTORY_STUDIES_PER_INSTANCE": "1",
           "ARCHIVIST_INVENTORY_LEASE_SECONDS": "2"}
    peer = ("--peer", f"INVREQ=127.0.0.1:{listen}")
    uid = "2.25.4242"
    try:
        srv = make_server(*peer, data=data, env=env)
        assoc = requester.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
        assert assoc.is_established
        try:
            assert initiate_job(assoc, uid) == 0x0000
            wait_until(lambda: (job_row(data, uid) or {}).get("studies_done", 0) >= 5)
            ask = Dataset()
            ask.TransactionUID = uid
            status, _ = assoc.send_n_action(ask, 12, INVENTORY_CREATION,  # Request Status
                                            STORAGE_MANAGEMENT_INSTANCE)
            assert status.Status == 0x0000
        finally:
            assoc.release()
        wait_until(lambda: (job_row(data, uid) or {}).get("studies_done", 0) >= 10)
        # Both Inventory Status events are queued on disk, undelivered (nobody listens).
        outbox = data / "inventory-events"
        wait_until(lambda: len(list(outbox.glob("*.json"))) == 2)
        srv.kill()  # SIGKILL: no release of the job, no last heartbeat
        killed = job_row(data, uid)
        assert killed is not None and killed["state"] == "PROCESSING"
        assert 10 <= killed["studies_done"] < STUDIES == killed["studies_total"], killed
        before = json.loads(killed["leaves"])
        assert len(before) == killed["studies_done"]
        assert len(list(outbox.glob("*.json"))) == 2
        assert not events

        events_server = requester.start_server(
            ("127.0.0.1", listen), block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event)])
        make_server(*peer, data=data, env=env)  # the same data directory
        assert done.wait(120), events
        wait_until(lambda: not list(outbox.glob("*.json")))  # each removed once delivered
    finally:
        if events_server is not None:
            events_server.shutdown()

    # Every event, in the order queued: the two the killed process left, then the resumed
    # job's own. None was delivered before the kill, so none is repeated.
    kinds = [(e, str(ds.TransactionStatus)) for e, ds in events]
    assert kinds == [(12, "PROCESSING"), (12, "PROCESSING"), (12, "COMPLETE"),
                     (11, "COMPLETE")], kinds
    assert all(ds.TransactionUID == uid for _, ds in events)
    final = events[-1][1]
    assert final.TransactionUID == uid and final.TotalNumberOfStudyRecords == STUDIES

    finished = job_row(data, uid)
    assert finished is not None and finished["state"] == "COMPLETE"
    leaves = json.loads(finished["leaves"])
    assert leaves[:len(before)] == before and len(leaves) == STUDIES  # resumed, not restarted
    assert finished["root_uid"] == final.ReferencedSOPInstanceUID
    archive = open_archive(data)
    tree = Catalogue(archive).datasets(finished["root_uid"])
    root = tree[0]
    assert root.InventoryCompletionStatus == "COMPLETE" and root.TransactionUID == uid
    assert [r.ReferencedSOPInstanceUID for r in root.IncorporatedInventoryInstanceSequence] \
        == leaves == [ds.SOPInstanceUID for ds in tree[1:]]
    inventory = Inventory.from_datasets(tree)
    assert inventory.counts()["studies"] == STUDIES
    assert diff(inventory, of_archive(archive)).identical
    assert not (data / "inventory-staging" / "job-1").exists()
