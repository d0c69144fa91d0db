"""QA: a C-CANCEL must cancel only the outstanding operation it names (PS3.7 9.3.2.3).

pynetdicom sends every request with Message ID 1 unless told otherwise (``msg_id=1``), which
PS3.7 allows: a Message ID is unique among the operations *outstanding* on an association. The
acceptor records C-CANCELs in ``Association.cancelled`` (src/archivist/dimse/acceptor.py, in
``_dispatch``) and never removes them, so once Message ID 1 was canceled -- or a C-CANCEL
arrived just after the C-FIND had ended -- every later C-FIND on the association is answered
0xFE00 Canceled with no match."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset

from archivist.archive.ups import UPS_PULL, UPS_QUERY, UPS_WATCH
from archivist.testing.server import ServerProcess
from archivist.testing.ups import Scu, workitem

LABEL = "QA-CANCEL-ID"
COUNT = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("ups-cancel") / "data",
                        extra_args=["--workers", "1"])
    srv.start()
    with Scu(srv) as scu:
        for _ in range(COUNT):
            scu.create(workitem(ProcedureStepLabel=LABEL))
    yield srv
    srv.stop()


def _query() -> Dataset:
    q = Dataset()
    q.ProcedureStepLabel = LABEL
    q.SOPInstanceUID = ""
    return q


@pytest.mark.parametrize("model", [UPS_PULL, UPS_WATCH, UPS_QUERY],
                         ids=["pull", "watch", "query"])
def test_a_c_cancel_of_a_finished_find_does_not_cancel_the_next(
        server: ServerProcess, model: str) -> None:
    with Scu(server) as scu:
        final, found = scu.find(_query(), model)  # Message ID 1
        assert (final, len(found)) == (0x0000, COUNT)
        # A C-CANCEL for Message ID 1 arriving after that C-FIND ended (it names no
        # outstanding operation: nothing to cancel).
        scu.assoc.send_c_cancel(1, query_model=model)
        final, found = scu.find(_query(), model)  # Message ID 1 again, a new operation
        assert (hex(final), len(found)) == (hex(0x0000), COUNT)


def test_after_a_canceled_find_the_next_find_on_the_association_runs(
        server: ServerProcess) -> None:
    with Scu(server) as scu:
        pending = 0
        for status, _identifier in scu.assoc.send_c_find(_query(), UPS_PULL):
            if status is None:
                break
            if status.Status in (0xFF00, 0xFF01):
                pending += 1
                if pending == 1:
                    scu.assoc.send_c_cancel(1, query_model=UPS_PULL)
        final, found = scu.find(_query(), UPS_PULL)
        assert (hex(final), len(found)) == (hex(0x0000), COUNT)
