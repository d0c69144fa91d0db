"""The acceptor's service paths over real sockets: C-CANCEL, and the registration seam for extra
services (N-ACTION with an N-EVENT-REPORT back to the requestor, C-FIND on a registered class)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.config import load_settings
from archivist.core.levels import QueryLevel
from archivist.dimse.handlers import Handlers
from archivist.dimse.server import DimseServer
from archivist.dimse.services import Service
from archivist.testing.datasets import make_instance
from archivist.testing.server import free_port

AET = "ARCHIVIST"
# SOP classes the core does not serve, registered by the tests as a feature module would.
TEST_CLASS = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model (N-ACTION, N-EVENT-REPORT)
TEST_FIND_CLASS = "1.2.840.10008.5.1.4.31"  # Modality Worklist Information Model - FIND
PRIVATE_CLASS = "1.2.826.0.1.3680043.10.999.1"


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    settings = load_settings(env={}, overrides={
        "data_dir": tmp_path / "data", "dicom_port": free_port(),
        "dimse_engine": "asyncio"})
    a = Archive.open(settings)
    study, series = generate_uid(), generate_uid()
    for i in range(120):
        p = tmp_path / f"{i}.dcm"
        make_instance(p, study_uid=study, series_uid=series, instance_number=i, rows=4,
                      columns=4)
        a.ingest.store_file(p, Origin("import"), consume=True)
    yield a
    a.close()


def serve(archive: Archive, extra: list[Service]) -> DimseServer:
    server = DimseServer(archive)
    server.handlers = Handlers(archive, extra=extra)
    server.start()
    assert server.wait_listening()
    return server


def image_query() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.SOPInstanceUID = ""
    return ds


class TestCancel:
    def test_c_cancel_stops_a_c_find(self, archive: Archive,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
        # A C-FIND answers the fixture's 120 matches in a few ms: the whole answer could be
        # sent before the C-CANCEL arrives (a race, not a failure; 600 more matches only made
        # it less likely, and a loaded machine more). Each match now takes 50 ms to come out
        # of the index: the C-CANCEL, sent after the third response, has about 6 s to be seen
        # before the last match, and when it is seen the rest is not sent.
        find = archive.search.find

        def slow_find(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for ds in find(*args, **kwargs):
                time.sleep(0.05)
                yield ds

        monkeypatch.setattr(archive.search, "find", slow_find)
        server = serve(archive, [])
        try:
            ae = AE(ae_title="CANCELLER")
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
            assoc = ae.associate("127.0.0.1", server.port, ae_title=AET)
            assert assoc.is_established
            cx = assoc.accepted_contexts[0].context_id
            statuses = []
            for status, _ in assoc.send_c_find(image_query(),
                                               StudyRootQueryRetrieveInformationModelFind,
                                               msg_id=7):
                statuses.append(int(status.Status))
                if len(statuses) == 3:
                    assoc.send_c_cancel(7, cx)
            assoc.release()
        finally:
            server.stop()
        assert statuses[-1] == 0xFE00, [hex(s) for s in statuses[-3:]]
        assert 3 <= statuses.count(0xFF00) < 120

    def test_c_cancel_stops_a_c_get(self, archive: Archive, tmp_path: Path) -> None:
        from pynetdicom import build_role

        server = serve(archive, [])
        received: list[str] = []
        try:
            ae = AE(ae_title="GETTER")
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
            ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
            state: dict[str, Any] = {}

            def on_store(event: Any) -> int:
                received.append(str(event.request.AffectedSOPInstanceUID))
                if len(received) == 3:
                    state["assoc"].send_c_cancel(9, state["cx"])
                return 0

            assoc = ae.associate("127.0.0.1", server.port, ae_title=AET,
                                 ext_neg=[build_role(CTImageStorage, scp_role=True)],
                                 evt_handlers=[(evt.EVT_C_STORE, on_store)])
            assert assoc.is_established
            state["assoc"] = assoc
            state["cx"] = next(c.context_id for c in assoc.accepted_contexts
                               if c.abstract_syntax == StudyRootQueryRetrieveInformationModelGet)
            # The fixture's study, by its Unique Key (a C-GET without one is refused): its 120
            # instances, of which the cancel must stop the rest.
            study = Dataset()
            study.QueryRetrieveLevel = "STUDY"
            study.StudyInstanceUID = next(archive.search.rows(archive.search.query_from_pairs(
                QueryLevel.STUDY, [])))["study.study_instance_uid"]
            finals = [int(s.Status) for s, _ in assoc.send_c_get(
                study, StudyRootQueryRetrieveInformationModelGet, msg_id=9)
                if int(s.Status) != 0xFF00]
            assoc.release()
        finally:
            server.stop()
        assert finals == [0xFE00]
        assert 3 <= len(received) < 120


class TestRegistrationSeam:
    def test_n_action_and_n_event_report_through_a_registered_service(
            self, archive: Archive) -> None:
        seen: dict[str, Any] = {}

        def on_action(event: Any) -> tuple[int, Dataset]:
            seen["type"] = event.action_type
            seen["info"] = str(event.action_information.get("TextValue", ""))
            seen["aet"] = event.assoc.requestor.ae_title
            report = Dataset()
            report.TextValue = "done"
            reply = event.assoc.send_n_event_report(report, 2, TEST_CLASS, "1.2.3.4.5")
            seen["report_status"] = int(reply.Status)
            out = Dataset()
            out.TextValue = "accepted"
            return 0x0000, out

        def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
            for i in range(3):
                ds = Dataset()
                ds.TextValue = f"r{i}"
                yield 0xFF00, ds
            yield 0xB001, None  # a Warning ends the responses (as Supplement 223 does)

        server = serve(archive, [Service(TEST_CLASS, "N-ACTION", on_action),
                                 Service(TEST_FIND_CLASS, "C-FIND", on_find)])
        reports: list[str] = []
        try:
            def on_report(event: Any) -> tuple[int, None]:
                reports.append(str(event.event_information.TextValue))
                return 0x0000, None

            ae = AE(ae_title="SEAMSCU")
            ae.add_requested_context(TEST_CLASS)
            ae.add_requested_context(TEST_FIND_CLASS)
            assoc = ae.associate("127.0.0.1", server.port, ae_title=AET,
                                 evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
            assert assoc.is_established
            info = Dataset()
            info.TextValue = "please"
            status, reply = assoc.send_n_action(info, 1, TEST_CLASS, "1.2.3.4.5")
            find = [(int(s.Status), ds) for s, ds in assoc.send_c_find(
                info, TEST_FIND_CLASS)]
            assoc.release()
        finally:
            server.stop()
        assert int(status.Status) == 0
        assert str(reply.TextValue) == "accepted"
        assert seen == {"type": 1, "info": "please", "aet": "SEAMSCU", "report_status": 0}
        assert reports == ["done"]
        assert [s for s, _ in find] == [0xFF00, 0xFF00, 0xFF00, 0xB001]

    def test_unregistered_n_service_is_no_such_sop_class(self, archive: Archive) -> None:
        server = serve(archive, [Service(PRIVATE_CLASS, "N-ACTION", lambda e: (0, None))])
        try:
            ae = AE(ae_title="SEAMSCU")
            ae.add_requested_context(PRIVATE_CLASS)
            assoc = ae.associate("127.0.0.1", server.port, ae_title=AET)
            status, _ = assoc.send_n_get([0x00100010], PRIVATE_CLASS, "1.2.3")
            assoc.release()
        finally:
            server.stop()
        assert int(status.Status) == 0x0118


def test_stop_waits_for_running_association(archive: Archive) -> None:
    server = serve(archive, [])
    ae = AE(ae_title="SLOW")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=AET)
    assert assoc.is_established
    stopper = threading.Thread(target=server.stop, kwargs={"grace": 2})
    stopper.start()
    stopper.join(15)
    assert not stopper.is_alive()
    deadline = time.monotonic() + 30  # pynetdicom's reactor notices; later when loaded
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted, "an idle association should be aborted when the server stops"
