"""QA: one unreachable UPS subscriber must not stop the events of every other subscriber.

PS3.4 CC.2.4 / CC.2.3.2: each subscriber gets the events of the workitems it subscribed to. The
sender's ``Workitems.due_events`` reads only the oldest ``limit * 4`` (= 400) rows of
``ups_event`` and then skips the held subscriber's, so once a subscriber that is down has 400
undelivered events (one global subscription and 400 new workitems), no other DIMSE subscriber
receives anything (for up to EVENT_KEEP, a day)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from archivist.archive.ups import GLOBAL_SUBSCRIPTION, UPS_EVENT
from archivist.testing.net import wait_listening
from archivist.testing.server import ServerProcess, free_port
from archivist.testing.ups import Scu, workitem

WAIT = 60
#: More than Workitems.due_events reads in one pass (BATCH * 4 = 400).
BACKLOG = 420


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"DOWN": free_port(), "UP": free_port()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           ports: dict[str, int]) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("ups-starve")
    # DOWN has an address where nobody listens; UP is a real subscriber (started in the test).
    srv = ServerProcess(tmp / "data", extra_args=[
        "--workers", "1",
        "--peer", f"DOWN=127.0.0.1:{ports['DOWN']}",
        "--peer", f"UP=127.0.0.1:{ports['UP']}"])
    srv.start()
    yield srv
    srv.stop()


class Subscriber:
    def __init__(self, port: int, aet: str) -> None:
        self.reports: queue.Queue[tuple[int, str, Dataset]] = queue.Queue()

        def on_report(event: Any) -> tuple[int, None]:
            self.reports.put((int(event.event_type),
                              str(event.request.AffectedSOPInstanceUID),
                              event.event_information))
            return 0x0000, None

        self.ae = AE(ae_title=aet)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 30
        self.ae.add_supported_context(UPS_EVENT, scu_role=True, scp_role=True)
        self.server = self.ae.start_server(("127.0.0.1", port), block=False,
                                           evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
        wait_listening(port, what="the subscriber")

    def stop(self) -> None:
        self.server.shutdown()


def test_a_dead_subscribers_backlog_does_not_starve_the_others(
        server: ServerProcess, ports: dict[str, int]) -> None:
    with Scu(server) as scu:
        assert int(scu.subscribe(GLOBAL_SUBSCRIPTION, "DOWN").Status) == 0x0000
        for _ in range(BACKLOG):  # one State Report each for DOWN, which never answers
            status, _ = scu.create(workitem())
            assert int(status.Status) in (0x0000, 0xB300)
        status, uid = scu.create(workitem())
        up = Subscriber(ports["UP"], "UP")
        try:
            assert int(scu.subscribe(uid, "UP").Status) == 0x0000
            try:
                kind, got_uid, info = up.reports.get(timeout=WAIT)
            except queue.Empty:
                pytest.fail(f"UP got no event within {WAIT} s: DOWN's {BACKLOG} undelivered "
                            "events hide it from the sender (Workitems.due_events)")
            assert (kind, got_uid, info.ProcedureStepState) == (1, uid, "SCHEDULED")
        finally:
            up.stop()
