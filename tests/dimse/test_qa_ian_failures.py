"""QA of the Instance Availability Notification SCU (PS3.4 Annex R, ``ian_to``) and of the UPS
worklist page: reproductions of the failures found, against a real ``archivist serve``.

Self-contained: a pynetdicom IAN SCP as the receiver (DCMTK has none), pynetdicom C-STORE to
store. Run from the repository: ``uv run --frozen --no-sync pytest /tmp/qa-ian-tests -q``.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.net import wait_listening
from archivist.testing.server import ServerProcess, free_port

IAN = "1.2.840.10008.5.1.4.33"


class Receiver:
    """A pynetdicom SCP on `port` recording the IAN N-CREATEs it gets.

    `ian=False`: it accepts associations but only Verification (not the IAN SOP Class).
    `abort_study`: it aborts the association when the N-CREATE names that study."""

    def __init__(self, port: int, *, ian: bool = True, abort_study: str = "") -> None:
        self.port = port
        self.ian = ian
        self.abort_study = abort_study
        self.received: list[Dataset] = []
        self.associations = 0
        self._lock = threading.Lock()
        self._server: Any = None

    def _on_create(self, event: Any) -> tuple[int, Dataset | None]:
        ds = event.attribute_list
        with self._lock:
            self.received.append(ds)
        if self.abort_study and ds.StudyInstanceUID == self.abort_study:
            event.assoc.abort()
        return 0x0000, None

    def _on_request(self, event: Any) -> None:
        with self._lock:
            self.associations += 1

    def start(self) -> Receiver:
        ae = AE(ae_title="RIS")
        ae.add_supported_context(Verification)
        if self.ian:
            ae.add_supported_context(IAN)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False,
            evt_handlers=[(evt.EVT_N_CREATE, self._on_create),
                          (evt.EVT_REQUESTED, self._on_request)])
        wait_listening(self.port, what="the IAN receiver")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def of(self, study: str) -> list[Dataset]:
        with self._lock:
            return [ds for ds in self.received if ds.StudyInstanceUID == study]


def _server(data: Path, port: int) -> ServerProcess:
    return ServerProcess(data, extra_args=["--workers", "1"],
                         env={"ARCHIVIST_PEERS": f"RIS=127.0.0.1:{port}",
                              "ARCHIVIST_IAN_TO": "RIS", "ARCHIVIST_IAN_DELAY": "1"})


def _store(srv: ServerProcess, folder: Path, study: str, count: int = 2) -> None:
    folder.mkdir(parents=True)
    series = new_uid()
    datasets = []
    for n in range(count):
        path = folder / f"{n}.dcm"
        make_instance(path, study_uid=study, series_uid=series, sop_uid=new_uid(),
                      instance_number=n + 1)
        datasets.append(pydicom.dcmread(path))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status.Status == 0x0000
    finally:
        assoc.release()


def _wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return bool(condition())


@pytest.fixture
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[ServerProcess,
                                                                               Receiver]]:
    kwargs = getattr(request, "param", {})
    receiver = Receiver(free_port(), **kwargs).start()
    srv = _server(tmp_path / "data", receiver.port).start()
    try:
        yield srv, receiver
    finally:
        srv.stop()
        receiver.stop()


# -- IAN ------------------------------------------------------------------------------------


@pytest.mark.parametrize("running", [{"ian": False}], indirect=True, ids=["no-ian-context"])
def test_a_peer_accepting_no_ian_context_is_given_up_after_three_tries(
        running: tuple[ServerProcess, Receiver], tmp_path: Path) -> None:
    """README / conformance.md: 'A notification the destination refuses (a failure status, or no
    presentation context) is sent again 1 s and 2 s later, three times in all, then logged as not
    delivered and dropped.' pynetdicom aborts an association on which no context is accepted, so
    ian.py:226 raises ConnectionError ('not accepted') and the notification is retried forever
    as if the peer were unreachable (1 s doubling to 60 s, an ERROR from pynetdicom.acse each
    time); the ``accepted`` branch of ian.py:230/241 is never reached."""
    srv, receiver = running
    study = new_uid()
    _store(srv, tmp_path / "s", study)
    expected = f"IAN for study {study} not delivered to RIS after 3 attempts"
    assert _wait(lambda: expected in srv.log(), 40), srv.log()[-3000:]
    # and it stops trying once dropped
    tried = receiver.associations
    time.sleep(5)
    assert receiver.associations == tried


@pytest.mark.parametrize("running", [{"abort_study": "x"}], indirect=True, ids=["aborting"])
def test_a_study_the_peer_aborts_on_does_not_block_every_other_study(
        running: tuple[ServerProcess, Receiver], tmp_path: Path) -> None:
    """A receiver that aborts the association on the N-CREATE of one study (it cannot take that
    one) makes ian.py:245 raise ConnectionError for the whole pass; the studies due are sent
    oldest first (ian.py:202-204), so the same study is first again at every retry and no later
    study is ever notified: one study stops every notification to that peer for good."""
    srv, receiver = running
    poisoned, other = new_uid(), new_uid()
    receiver.abort_study = poisoned
    _store(srv, tmp_path / "a", poisoned)
    assert _wait(lambda: receiver.of(poisoned), 30)
    _store(srv, tmp_path / "b", other)
    assert _wait(lambda: receiver.of(other), 45), (
        f"{len(receiver.of(poisoned))} tries of the aborted study, none of the other one\n"
        + srv.log()[-2000:])


# -- the UPS worklist page (and the archive page) -----------------------------------------


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("page") / "data",
                        extra_args=["--workers", "1"]).start()
    try:
        yield srv
    finally:
        srv.stop()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.parametrize("path", ["/archive/workitems", "/archive/"], ids=["workitems", "home"])
@pytest.mark.parametrize("page", ["%C2%B2", "%E2%91%A0"], ids=["superscript-two", "circled-one"])
def test_a_page_number_of_unicode_digits_is_a_400_not_a_500(plain_server: ServerProcess,
                                                            path: str, page: str) -> None:
    """``str.isdigit()`` is true for '²' and '①', which ``int()`` refuses: ValueError, a 500
    (archive_page.py:540-541 for /archive/workitems, 384-387 for /archive/). Any other
    non-number page is a 400 with a message."""
    assert _status(f"{plain_server.url}{path}?page={page}") == 400
