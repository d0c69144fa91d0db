"""C-CANCEL over the wire: a C-FIND and a C-GET stopped part-way by a pynetdicom SCU."""

from __future__ import annotations

import pytest
import requests
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(240)

COUNT = 200


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    srv = ServerProcess(tmp_path_factory.mktemp("cancel") / "data")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def study(server, tmp_path_factory: pytest.TempPathFactory) -> str:  # type: ignore[no-untyped-def]
    """COUNT small instances in one study, stored with one STOW-RS request."""
    tmp_path = tmp_path_factory.mktemp("cancel-files")
    uid, series = new_uid(), new_uid()
    body = b""
    for i in range(COUNT):
        path = tmp_path / f"{i}.dcm"
        make_instance(path, study_uid=uid, series_uid=series, instance_number=i + 1)
        body += b"--B\r\nContent-Type: application/dicom\r\n\r\n" + path.read_bytes() + b"\r\n"
    body += b"--B--\r\n"
    r = requests.post(f"{server.url}/dicomweb/studies", data=body, timeout=120, headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=B'})
    assert r.status_code == 200, r.text
    return uid


def _context_id(assoc, uid: str) -> int:  # type: ignore[no-untyped-def]
    return next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == uid)


def _find_and_cancel(assoc, query: Dataset, msg_id: int) -> tuple[int | None, int]:  # type: ignore[no-untyped-def]
    """A C-FIND with a C-CANCEL sent on its first pending response: (final status, matches)."""
    pending = 0
    final = None
    for status, _identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind,
                                                 msg_id=msg_id):
        if status is None:
            break
        if status.Status in (0xFF00, 0xFF01):
            pending += 1
            if pending == 1:
                assoc.send_c_cancel(msg_id, _context_id(
                    assoc, StudyRootQueryRetrieveInformationModelFind))
        else:
            final = int(status.Status)
    return final, pending


def test_c_find_cancelled(server, study: str) -> None:  # type: ignore[no-untyped-def]
    ae = AE(ae_title="CANCELLER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study
    query.SOPInstanceUID = ""
    # The server answers the COUNT matches in a few milliseconds: on a loaded machine it may
    # have sent them all before the C-CANCEL arrives, and then Success after every match is the
    # right answer (PS3.7 9.3.2.3: a cancel after the final response is ignored). So each try
    # gets either outcome, whole; the cancel must take effect in one of them.
    outcomes = []
    for attempt in range(5):
        final, pending = _find_and_cancel(assoc, query, msg_id=10 + attempt)
        outcomes.append((final, pending))
        if final == 0xFE00:
            assert pending < COUNT, outcomes
            break
        assert (final, pending) == (0x0000, COUNT), outcomes
    assert outcomes[-1][0] == 0xFE00, f"the cancel never took effect: {outcomes}"
    # The association still works after the cancel.
    again = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind, msg_id=99))
    assoc.release()
    assert int(again[-1][0].Status) == 0 and len(again) == COUNT + 1


def test_c_get_cancelled(server, study: str) -> None:  # type: ignore[no-untyped-def]
    received: list[str] = []
    state: dict[str, object] = {}

    def on_store(event):  # type: ignore[no-untyped-def]
        received.append(str(event.request.AffectedSOPInstanceUID))
        if len(received) == 5:
            assoc = state["assoc"]
            assoc.send_c_cancel(  # type: ignore[attr-defined]
                9, _context_id(assoc, StudyRootQueryRetrieveInformationModelGet))
        return 0x0000

    ae = AE(ae_title="CANCELLER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="ARCHIVIST",
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    state["assoc"] = assoc
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    statuses = [int(s.Status) for s, _ in assoc.send_c_get(
        query, StudyRootQueryRetrieveInformationModelGet, msg_id=9) if s is not None]
    assoc.release()
    assert statuses[-1] == 0xFE00, statuses[-3:]
    assert 5 <= len(received) < COUNT


