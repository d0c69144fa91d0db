"""UPS Event reports (PS3.4 CC.2.4) from a real ``archivist serve`` to a real subscriber: a
pynetdicom AE listening on a free port, configured as ``--peer``, that subscribes with N-ACTION
on UPS Watch and receives the N-EVENT-REPORTs on associations the archive opens (the archive in
the SCP role of the UPS Event SOP Class), in order, across a restart of the archive too."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt

from archivist.archive.ups import GLOBAL_SUBSCRIPTION, UPS_EVENT, UPS_PULL, UPS_PUSH, UPS_WATCH
from archivist.testing.datasets import new_uid
from archivist.testing.net import wait_listening
from archivist.testing.server import ServerProcess, free_port
from archivist.testing.ups import Scu, completion, workitem

#: A report expected within this time (generous: returns as soon as it arrives).
WAIT = 60


class Subscriber:
    """A UPS Event SCU (it receives the reports) listening on `port` as `aet`."""

    def __init__(self, port: int, aet: str = "WATCHER") -> None:
        self.port = port
        self.reports: queue.Queue[tuple[int, str, str, Dataset]] = queue.Queue()
        self.requestors: list[str] = []

        def on_report(event: Any) -> tuple[int, None]:
            req = event.request
            self.requestors.append(str(event.assoc.requestor.ae_title).strip())
            self.reports.put((int(event.event_type), str(req.AffectedSOPClassUID),
                              str(req.AffectedSOPInstanceUID), event.event_information))
            return 0x0000, None

        self.ae = AE(ae_title=aet)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 30
        # The archive proposes UPS Event in the SCP role (role selection): accept it.
        self.ae.add_supported_context(UPS_EVENT, scu_role=True, scp_role=True)
        self.server = self.ae.start_server(("127.0.0.1", port), block=False,
                                           evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
        wait_listening(port, what="the subscriber")

    def stop(self) -> None:
        self.server.shutdown()

    def next(self) -> tuple[int, str, str, Dataset]:
        try:
            return self.reports.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no UPS event within {WAIT} s") from None

    def events(self, count: int) -> list[tuple[int, str, str, Dataset]]:
        return [self.next() for _ in range(count)]


def _wait_for(condition: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _summary(events: list[tuple[int, str, str, Dataset]]) -> list[tuple[int, str, str]]:
    """(event type, workitem, state or what the event says) of each report."""
    out = []
    for kind, _, uid, info in events:
        what = str(info.get("ProcedureStepState", "") or "")
        if kind == 2:
            what = str(info.get("RequestingAE", ""))
        out.append((kind, uid, what))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ups-events")
    port = free_port()
    srv = ServerProcess(tmp / "data", extra_args=["--peer", f"WATCHER=127.0.0.1:{port}"])
    srv.start()
    subscriber = Subscriber(port)
    yield {"srv": srv, "subscriber": subscriber}
    subscriber.stop()
    srv.stop()


def test_a_subscriber_receives_the_life_of_a_workitem_in_order(
        setup: dict[str, Any]) -> None:
    srv, subscriber = setup["srv"], setup["subscriber"]
    with Scu(srv, aet="WATCHER") as scu:
        _, uid = scu.create(workitem())
        assert int(scu.subscribe(uid).Status) == 0x0000
        transaction = new_uid()
        assert int(scu.state(uid, "IN PROGRESS", transaction).Status) == 0x0000
        progress = Dataset()
        progress.ProcedureStepProgress = 40
        mods = Dataset()
        mods.ProcedureStepProgressInformationSequence = Sequence([progress])
        assert int(scu.set(uid, mods, transaction).Status) == 0x0000
        assert int(scu.cancel(uid, "Wrong patient", via=UPS_WATCH).Status) == 0x0000
        assert int(scu.set(uid, completion(), transaction).Status) == 0x0000
        assert int(scu.state(uid, "COMPLETED", transaction).Status) == 0x0000
    events = subscriber.events(5)
    assert _summary(events) == [(1, uid, "SCHEDULED"), (1, uid, "IN PROGRESS"),
                                (3, uid, "IN PROGRESS"), (2, uid, "WATCHER"),
                                (1, uid, "COMPLETED")]
    # The Affected SOP Class is the instance's, UPS Push (CC.2.4.3), on the UPS Event context.
    assert {e[1] for e in events} == {UPS_PUSH}
    assert events[0][3].InputReadinessState == "READY"
    progress_info = events[2][3].ProcedureStepProgressInformationSequence[0]
    assert progress_info.ProcedureStepProgress == 40
    assert events[3][3].ReasonForCancellation == "Wrong patient"
    assert set(subscriber.requestors) == {"ARCHIVIST"}
    log = srv.log()
    assert "Müller" not in log and "UPS-PID-1" not in log


def test_a_global_subscriber_hears_of_new_workitems(setup: dict[str, Any]) -> None:
    srv, subscriber = setup["srv"], setup["subscriber"]
    with Scu(srv) as scu:
        # (every workitem already there is reported first: the subscriber's queue is drained)
        assert int(scu.subscribe(GLOBAL_SUBSCRIPTION, lock="TRUE").Status) == 0x0000
        info = Dataset()
        info.ReceivingAE = "WATCHER"
        marker = scu.create(workitem())[1]
        while subscriber.next()[2] != marker:
            pass
        _, uid = scu.create(workitem())
        assert _summary([subscriber.next()]) == [(1, uid, "SCHEDULED")]
        assert int(scu.action(GLOBAL_SUBSCRIPTION, 4, info, UPS_WATCH).Status) == 0x0000
        _, quiet = scu.create(workitem())
        _, loud = scu.create(workitem())
        assert int(scu.subscribe(loud).Status) == 0x0000
        # Unsubscribed from everything: the next report is the new subscription's.
        assert _summary([subscriber.next()]) == [(1, loud, "SCHEDULED")]
        assert quiet != loud


@pytest.mark.slow
def test_events_wait_for_a_subscriber_that_is_down_across_a_restart(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("ups-restart")
    port = free_port()
    srv = ServerProcess(tmp / "data", extra_args=["--peer", f"LATE=127.0.0.1:{port}"])
    srv.start()
    try:
        with Scu(srv, (UPS_PUSH, UPS_PULL, UPS_WATCH)) as scu:
            _, uid = scu.create(workitem())
            assert int(scu.subscribe(uid, "LATE").Status) == 0x0000
            transaction = new_uid()
            assert int(scu.state(uid, "IN PROGRESS", transaction).Status) == 0x0000
            assert int(scu.set(uid, completion(), transaction).Status) == 0x0000
            assert int(scu.state(uid, "COMPLETED", transaction).Status) == 0x0000
        # Tried at once (the changes wake the sender), and refused: LATE is not listening.
        _wait_for(lambda: f"UPS event 1 of {uid} to LATE not delivered" in srv.log())
        srv.stop()  # nothing reached LATE: its three events wait in the index
        srv.start()
        subscriber = Subscriber(port, "LATE")
        try:
            events = subscriber.events(3)
        finally:
            subscriber.stop()
    finally:
        srv.stop()
    assert _summary(events) == [(1, uid, "SCHEDULED"), (1, uid, "IN PROGRESS"),
                                (1, uid, "COMPLETED")]
    assert subscriber.reports.empty()  # each once


def test_a_subscriber_that_never_answers_does_not_hold_back_the_others(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    import socket

    tmp = tmp_path_factory.mktemp("ups-blackhole")
    good_port = free_port()
    # A peer whose port accepts connections but never answers an A-ASSOCIATE-RQ.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    hole_port = hole.getsockname()[1]
    srv = ServerProcess(tmp / "data", extra_args=[
        "--peer", f"WATCHER=127.0.0.1:{good_port}", "--peer", f"HOLE=127.0.0.1:{hole_port}",
        "--workers", "1"])  # one sender: another worke's would hide the wait
    srv.start()
    subscriber = Subscriber(good_port)
    try:
        with Scu(srv, aet="WATCHER") as scu:
            _, uid = scu.create(workitem())
            # The hole subscribes first, so its (never answered) delivery comes first.
            assert int(scu.subscribe(uid, receiving="HOLE").Status) == 0x0000
            assert int(scu.subscribe(uid).Status) == 0x0000
            started = time.monotonic()
            assert _summary(subscriber.events(1)) == [(1, uid, "SCHEDULED")]
            waited = time.monotonic() - started
        # The association with the hole waits for the ACSE timeout (30 s by default): the
        # good subscriber's report does not wait behind it.
        assert waited < 15, waited
        # Nor does a stop (one process: the interpreter waited for the blocked sender thread).
        started = time.monotonic()
        assert srv.stop() == 0
        stopping = time.monotonic() - started
        assert stopping < 15, stopping
    finally:
        subscriber.stop()
        srv.stop()
        hole.close()
