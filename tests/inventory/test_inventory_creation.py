# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""Inventory Creation (PS3.4 Annex KK): the job engine (states, staging, resume after a
restart, cancel with and without Retain Instances) and the SCP over loopback (N-ACTION 11-15,
0xB010 with Attribute Identifier List, N-EVENT-REPORT 11/12/13 on a new association)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from inventory_helpers import fill, make_server, open_archive  # noqa: F401
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from archivist.inventory import INVENTORY_CREATION, STORAGE_MANAGEMENT_INSTANCE
from archivist.inventory.builder import InventorySpec
from archivist.inventory.catalogue import Catalogue
from archivist.inventory.creation import (
    CANCELED,
    COMPLETE,
    PAUSED,
    PROCESSING,
    InventoryCreation,
    JobError,
)
from archivist.inventory.diff import diff
from archivist.inventory.model import Inventory
from archivist.inventory.remote import install_n_action_fix
from archivist.inventory.sources import of_archive
from archivist.testing.server import free_port


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, str]] = []
        self.datasets: list[Dataset] = []

    def __call__(self, job: Any, event_type: int, ds: Dataset) -> None:
        self.events.append((job.transaction_uid, event_type, str(ds.TransactionStatus)))
        self.datasets.append(ds)


def _wait(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class TestEngine:
    def test_complete_with_events(self, open_archive, tmp_path: Path) -> None:
        archive = open_archive()
        fill(archive, tmp_path / "in", studies=7, series=2, instances=2)
        rec = Recorder()
        engine = InventoryCreation(archive, rec, studies_per_instance=3)
        try:
            engine.initiate("2.25.1", InventorySpec(level="INSTANCE", purpose="p"),
                            requester_aet="SCU")
            _wait(lambda: engine.get("2.25.1").state == COMPLETE)  # type: ignore[union-attr]
            engine.drain_events()
        finally:
            engine.stop()
        assert [(e, s) for _, e, s in rec.events] == [
            (12, PROCESSING), (12, COMPLETE), (11, COMPLETE)]
        final = rec.datasets[-1]
        job = engine.get("2.25.1")
        assert job is not None and final.ReferencedSOPInstanceUID == job.root_uid
        assert final.TotalNumberOfStudyRecords == 7 and final.RetrieveAETitle == "ARCHIVIST"
        cat = Catalogue(archive)
        tree = cat.datasets(job.root_uid)  # type: ignore[arg-type]
        assert len(tree) == 4 and all(ds.TransactionUID == "2.25.1" for ds in tree)
        assert diff(Inventory.from_datasets(tree), of_archive(archive)).identical
        assert not (Path(archive.settings.data_dir) / "inventory-staging" / "job-1").exists()
        with pytest.raises(JobError):
            engine.initiate("2.25.1", InventorySpec(), requester_aet="SCU")

    def test_pause_restart_resume(self, open_archive, tmp_path: Path) -> None:
        data = tmp_path / "data"
        archive = open_archive(data)
        fill(archive, tmp_path / "in", studies=12, series=1, instances=1)
        rec = Recorder()
        first = InventoryCreation(archive, rec, studies_per_instance=4, autostart=False)
        first.initiate("2.25.2", InventorySpec(level="SERIES"), requester_aet="SCU")
        job = first.claim()
        assert job is not None
        first.run_job(job, max_leaves=1)  # the process stops after one leaf
        first.pause("2.25.2")
        job = first.get("2.25.2")
        assert job is not None and job.state == PAUSED and job.studies_done == 4
        assert len(job.leaves) == 1
        # Studies stored after the job started are not in its scope (PS3.17 YYYY.3.2).
        fill(archive, tmp_path / "late", studies=2)
        first.stop()
        archive.close()
        # "Restart": a new archive object and engine over the same data directory.
        archive = open_archive(data)
        second = InventoryCreation(archive, rec, studies_per_instance=4)
        try:
            assert second.pending()
            second.resume("2.25.2")
            _wait(lambda: second.get("2.25.2").state == COMPLETE)  # type: ignore[union-attr]
            second.drain_events()
        finally:
            second.stop()
        job = second.get("2.25.2")
        assert job is not None
        tree = Catalogue(archive).datasets(job.root_uid)  # type: ignore[arg-type]
        root = tree[0]
        assert root.TotalNumberOfStudyRecords == 12 and root.InventoryCompletionStatus == "COMPLETE"
        assert [r.ReferencedSOPInstanceUID for r in root.IncorporatedInventoryInstanceSequence] \
            == [ds.SOPInstanceUID for ds in tree[1:]]
        assert tree[1].SOPInstanceUID == job.leaves[0]
        inv = Inventory.from_datasets(tree)
        assert inv.counts()["studies"] == 12
        assert [e for _, e, _ in rec.events][-2:] == [12, 11]

    def test_cancel_retain_or_not(self, open_archive, tmp_path: Path) -> None:
        archive = open_archive()
        fill(archive, tmp_path / "in", studies=6)
        rec = Recorder()
        engine = InventoryCreation(archive, rec, studies_per_instance=2, autostart=False)
        for uid, retain in (("2.25.3", True), ("2.25.4", False)):
            engine.initiate(uid, InventorySpec(), requester_aet="SCU")
            job = engine.claim()
            assert job is not None and job.transaction_uid == uid
            engine.run_job(job, max_leaves=1)
            engine.cancel(uid, retain)
            assert engine.get(uid).state == CANCELED  # type: ignore[union-attr]
        engine.drain_events()
        engine.stop()
        kept = engine.get("2.25.3")
        assert kept is not None and kept.root_uid
        tree = Catalogue(archive).datasets(kept.root_uid)
        assert tree[0].InventoryCompletionStatus == "PARTIAL" and len(tree) == 2
        assert engine.get("2.25.4").root_uid is None  # type: ignore[union-attr]
        by_uid: dict[str, list[int]] = {}
        for uid, event, _ in rec.events:
            by_uid.setdefault(uid, []).append(event)
        assert by_uid["2.25.3"][-1] == 11 and by_uid["2.25.4"][-1] == 13
        assert len(Catalogue(archive).roots()) == 1
        with pytest.raises(JobError):
            engine.resume("2.25.3")


    def test_events_are_retried_and_survive_the_engine(self, open_archive,
                                                       tmp_path: Path) -> None:
        """Events are queued on disk before they are sent: one that cannot be delivered is
        retried in order (the final 11 never overtakes the 12 before it), and what an engine
        leaves undelivered (as a crashed process would) another engine on the same data
        directory delivers."""
        data = tmp_path / "data"
        archive = open_archive(data)
        fill(archive, tmp_path / "in", studies=3)
        down = Recorder()
        calls: list[int] = []

        def unreachable(job: Any, event_type: int, ds: Dataset) -> None:
            calls.append(event_type)
            raise ConnectionError("requester not listening")

        first = InventoryCreation(archive, unreachable, studies_per_instance=2)
        first.initiate("2.25.5", InventorySpec(), requester_aet="SCU")
        _wait(lambda: first.get("2.25.5").state == COMPLETE)  # type: ignore[union-attr]
        first.drain_events()
        first.stop()
        assert calls and set(calls) == {12}  # the 12 first in line held the others back
        assert not down.events
        outbox = data / "inventory-events"
        assert len(list(outbox.glob("*.json"))) == 3

        flaky = Recorder()
        failures = [2]

        def sometimes(job: Any, event_type: int, ds: Dataset) -> None:
            if failures[0]:
                failures[0] -= 1
                raise ConnectionError("requester busy")
            flaky(job, event_type, ds)

        second = InventoryCreation(archive, sometimes)
        try:
            second.start_events()
            _wait(lambda: len(flaky.events) == 3)  # after two failed attempts (1 s, 2 s)
        finally:
            second.stop()
        assert [(e, s) for _, e, s in flaky.events] == [
            (12, PROCESSING), (12, COMPLETE), (11, COMPLETE)]
        assert flaky.datasets[-1].ReferencedSOPInstanceUID == second.get("2.25.5").root_uid  # type: ignore[union-attr]
        assert not list(outbox.glob("*.json"))


# -- the SCP over loopback -------------------------------------------------------------------


def test_n_action_and_n_event_report_over_the_network(open_archive, make_server,
                                                      tmp_path: Path) -> None:
    data = tmp_path / "srv"
    archive = open_archive(data)
    fill(archive, tmp_path / "in", studies=4, series=1, instances=2, modality="MR")
    archive.close()
    events: list[tuple[int, Dataset]] = []
    got = threading.Event()

    def on_event(event: Any) -> tuple[int, None]:
        events.append((int(event.event_type), event.event_information))
        if int(event.event_type) in (11, 13):
            got.set()
        return 0x0000, None

    install_n_action_fix()  # our SCU side: pynetdicom drops Attribute Identifier List
    listen = free_port()
    scu = AE(ae_title="INVSCU")
    scu.add_supported_context(INVENTORY_CREATION, scu_role=True, scp_role=True)
    scu.add_requested_context(INVENTORY_CREATION)
    events_server = scu.start_server(("127.0.0.1", listen), block=False,
                                     evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event)])
    srv = make_server("--peer", f"INVSCU=127.0.0.1:{listen}", data=data)
    try:
        assoc = scu.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
        assert assoc.is_established
        try:
            info = Dataset()
            info.TransactionUID = "2.25.77"
            info.InventoryLevel = "INSTANCE"
            info.InventoryPurpose = "check"
            scope = Dataset()
            general = Dataset()
            general.Modality = "MR"
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator = "10200004", "SCT"
            general.ProcedureCodeSequence = [code]  # a sequence key: not supported here
            empty = Dataset()
            empty.InstitutionName = None  # Empty Value Matching: absent in all 4 studies
            scope.GeneralMatchingSequence = [general]
            scope.EmptyValueMatchingSequence = [empty]
            info.ScopeOfInventorySequence = [scope]
            status, _ = assoc.send_n_action(info, 11, INVENTORY_CREATION,
                                            STORAGE_MANAGEMENT_INSTANCE)
            assert status.Status == 0xB010
            assert status["AttributeIdentifierList"].VM == 1
            assert status.AttributeIdentifierList == 0x00081032  # Procedure Code Sequence
            assert got.wait(30), events
            # Unknown transaction, missing Transaction UID, a second Initiate with the same UID.
            other = Dataset()
            other.TransactionUID = "2.25.404"
            status, _ = assoc.send_n_action(other, 12, INVENTORY_CREATION,
                                            STORAGE_MANAGEMENT_INSTANCE)
            assert status.Status == 0x0112
            no_uid = Dataset()
            no_uid.RequestedStatusInterval = 5
            status, _ = assoc.send_n_action(no_uid, 12, INVENTORY_CREATION,
                                            STORAGE_MANAGEMENT_INSTANCE)
            assert status.Status == 0x0120
            status, _ = assoc.send_n_action(info, 11, INVENTORY_CREATION,
                                            STORAGE_MANAGEMENT_INSTANCE)
            assert status.Status == 0x0111
            # Request Status on the finished job: one more Inventory Status event.
            before = len(events)
            ask = Dataset()
            ask.TransactionUID = "2.25.77"
            status, _ = assoc.send_n_action(ask, 12, INVENTORY_CREATION,
                                            STORAGE_MANAGEMENT_INSTANCE)
            assert status.Status == 0x0000
            _wait(lambda: len(events) > before)
        finally:
            assoc.release()
    finally:
        events_server.shutdown()
    kinds = [e for e, _ in events]
    assert kinds[:1] == [12] and 11 in kinds and kinds[-1] == 12
    final = next(ds for e, ds in events if e == 11)
    assert final.TransactionStatus == "COMPLETE" and final.TotalNumberOfStudyRecords == 4
    assert final.RetrieveAETitle == "ARCHIVIST"
    assert final.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.201.1"


@pytest.mark.slow  # CI time (20 min); covered in a full run: pytest -m slow
def test_n_action_with_an_empty_data_set_is_answered(make_server, tmp_path: Path) -> None:
    """pynetdicom 3.0.4 announces a data set it does not send when the Action Information is an
    empty Dataset; the acceptor takes it as empty and answers (here 0x0120: no Transaction UID)
    instead of waiting for the SCU's DIMSE timeout. The association stays usable."""
    srv = make_server(data=tmp_path / "srv")
    scu = AE(ae_title="EMPTYSCU")
    scu.dimse_timeout = 20  # without the fix each request below would end here, unanswered
    scu.add_requested_context(INVENTORY_CREATION)
    assoc = scu.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        for action in (12, 13, 11):  # Request Status, Cancel, Initiate
            status, _ = assoc.send_n_action(Dataset(), action, INVENTORY_CREATION,
                                            STORAGE_MANAGEMENT_INSTANCE)
            assert "Status" in status, f"action {action}: no response"
            assert status.Status == 0x0120, f"action {action}: 0x{status.Status:04X}"
        # A request with a data set right after: still read correctly on the same association.
        ask = Dataset()
        ask.TransactionUID = "2.25.404"
        status, _ = assoc.send_n_action(ask, 12, INVENTORY_CREATION, STORAGE_MANAGEMENT_INSTANCE)
        assert status.Status == 0x0112
        assert assoc.is_established
    finally:
        assoc.release()
