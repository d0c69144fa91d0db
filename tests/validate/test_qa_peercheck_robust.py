"""check-peer against peers that misbehave (found by QA, peercheck): it must finish within its
timeout, explain what happened, keep other patients' values out of the report, say that it left
a test object on the peer, and check the C-STORE response's Affected SOP Instance UID.

Every peer is real and on a socket: raw TCP servers for what a DICOM toolkit will not do, and
pynetdicom SCPs whose handlers misbehave.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pydicom.dataset import Dataset
from typer.testing import CliRunner
from validate_peers import FIND, GET, MOVE, STORAGE, free_port

from archivist.validate import peer
from archivist.validate.peer import FAIL, INFO, PASS, SKIP, PeerOptions, PeerReport, probe_peer

TIMEOUT = 1.0


def _probe_within(options: PeerOptions, seconds: float) -> PeerReport:
    """Run the probe in a thread; fail (instead of hanging the suite) if it outlives *seconds*."""
    result: list[PeerReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(probe_peer(options))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"check-peer still running after {seconds} s"
    assert not errors, f"check-peer raised {errors[0]!r}"
    assert time.monotonic() - started < seconds
    return result[0]


@contextmanager
def _raw_peer(answer: Callable[[socket.socket], None], backlog: int = 16) -> Iterator[int]:
    """A TCP server on loopback that hands every connection to *answer*."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(backlog)
    port = server.getsockname()[1]
    kept: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            kept.append(conn)
            answer(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(2)
        for conn in kept:
            conn.close()
        server.close()


def _half_a_pdu(conn: socket.socket) -> None:
    """Read the A-ASSOCIATE-RQ, then announce a 64 KiB A-ASSOCIATE-AC and send 10 bytes of it."""
    conn.recv(65536)
    conn.sendall(struct.pack(">BBI", 0x02, 0, 65536) + bytes(10))


def _store_ok(event: Any) -> int:
    return 0x0000


def _no_matches(event: Any) -> Iterator[tuple[int, Dataset | None]]:
    yield 0x0000, None


class _OddPeer:
    """One pynetdicom Verification, Storage and Q/R SCP for the whole module (starting and
    stopping one costs half a second); each test gives it its own (misbehaving) handlers."""

    def __init__(self) -> None:
        self.ae: Any = None
        self.server: Any = None
        self.port = 0
        self.current: dict[str, Callable[[Any], Any]] = {}

    def start(self) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification

        self.ae = AE(ae_title="ODDPEER")
        self.ae.add_supported_context(Verification)
        for uid in STORAGE:
            self.ae.add_supported_context(uid, scu_role=True, scp_role=True)
        for uid in FIND + MOVE + GET:
            self.ae.add_supported_context(uid)
        self.port = free_port()
        handlers = [(evt.EVT_C_ECHO, lambda event: self.current["echo"](event)),
                    (evt.EVT_C_STORE, lambda event: self.current["store"](event)),
                    (evt.EVT_C_FIND, lambda event: self.current["find"](event))]
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False,
                                           evt_handlers=handlers)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


_ODD = _OddPeer()


@pytest.fixture(scope="module", autouse=True)
def _odd_peer() -> Iterator[None]:
    yield
    _ODD.stop()


@contextmanager
def _scp(handlers: dict[str, Callable[[Any], Any]] | None = None,
         **settings: Any) -> Iterator[int]:
    """The module's SCP answering with *handlers* ("echo", "store", "find"; the others answer
    Success) and with AE *settings* for the duration."""
    if _ODD.server is None:
        _ODD.start()
    _ODD.current = {"echo": _store_ok, "store": _store_ok, "find": _no_matches,
                    **(handlers or {})}
    saved = {name: getattr(_ODD.ae, name) for name in settings}
    for name, value in settings.items():
        setattr(_ODD.ae, name, value)
    try:
        yield _ODD.port
    finally:
        for name, value in saved.items():
            setattr(_ODD.ae, name, value)


def _options(port: int, **kwargs: Any) -> PeerOptions:
    return PeerOptions("127.0.0.1", port, "ODDPEER", timeout=TIMEOUT, **kwargs)


def _checks(report: PeerReport, prefix: str) -> list[tuple[str, str, str]]:
    return [(c.name, c.outcome, c.detail) for c in report.checks if c.name.startswith(prefix)]


class TestTimeoutsHonoured:
    def test_half_sent_pdu_does_not_hang(self) -> None:
        # pynetdicom read the rest of the PDU with a blocking recv and no timeout: check-peer
        # hung for ever (killed after 120 s with --timeout 3).
        with _raw_peer(_half_a_pdu) as port:
            report = _probe_within(_options(port), 8)
        assert report.outcome("association") == FAIL
        assert "no A-ASSOCIATE response" in report.checks[0].detail

    def test_unanswered_tcp_connect_does_not_hang(self) -> None:
        # A listener whose accept queue is full drops the SYN, as a firewall does: the TCP
        # connect had no timeout (the kernel gives up after about two minutes).
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            time.sleep(0.2)
            report = _probe_within(_options(port), 8)
        finally:
            for filler in fillers:
                filler.close()
            server.close()
        assert report.outcome("association") == FAIL
        # (under load the handshake may complete after all: then it is the A-ASSOCIATE wait)
        assert "within 1 s" in report.checks[0].detail

    def test_peer_that_never_stops_answering_a_find_is_cancelled_then_aborted(self) -> None:
        def endless(event: Any) -> Iterator[tuple[int, Dataset]]:
            while True:  # ignores C-CANCEL
                ds = Dataset()
                ds.QueryRetrieveLevel = event.identifier.QueryRetrieveLevel
                ds.PatientID = "SOMEONE-ELSE"
                yield 0xFF00, ds


        with _scp({"find": endless}) as port:
            report = _probe_within(_options(port), 15)
        finds = _checks(report, "C-FIND")
        assert finds[0][1] == FAIL
        assert "C-CANCEL" in finds[0][2] and "aborted the association" in finds[0][2]
        assert all(outcome == SKIP for _, outcome, _ in finds[1:])


class TestPeerEndsTheAssociation:
    def test_abort_during_find_is_reported_not_raised(self) -> None:
        # The probe used to raise RuntimeError from pynetdicom (the association had ended) and
        # print a traceback instead of a report.

        def abort(event: Any) -> Iterator[tuple[int, Dataset | None]]:
            event.assoc.abort()
            yield 0x0000, None

        with _scp({"find": abort}) as port:
            report = _probe_within(_options(port), 15)
        finds = _checks(report, "C-FIND")
        # pynetdicom usually sees the A-ABORT at once, but may only time out under load
        assert finds[0][1] == FAIL
        assert "association ended" in finds[0][2] or "No C-FIND response" in finds[0][2]
        assert [outcome for _, outcome, _ in finds[1:]] == [SKIP] * (len(finds) - 1)
        assert report.outcome("C-STORE") == PASS

    def test_unanswered_echo_times_out_and_the_rest_is_skipped(self) -> None:

        release = threading.Event()

        def silent(event: Any) -> int:
            release.wait(10)
            return 0x0000

        try:
            with _scp({"echo": silent}) as port:
                report = _probe_within(_options(port), 15)
                release.set()
        finally:
            release.set()
        assert report.outcome("C-ECHO") == FAIL
        echo = next(c for c in report.checks if c.name == "C-ECHO")
        assert "No C-ECHO response within 1 s" in echo.detail
        assert report.outcome("C-STORE") == SKIP


class TestReport:
    def test_rejection_reason_is_given(self) -> None:
        with _scp(require_calling_aet=["SOMEONE"]) as port:
            report = _probe_within(_options(port), 8)
        assert report.outcome("association") == FAIL
        assert "Calling AE title not recognised" in report.checks[0].detail

    def test_foreign_records_are_summarised_without_their_values(self) -> None:
        # A peer that ignores matching answers with other patients: the report listed every one
        # of them with its Patient ID (1,500 values, 247 KB, for 300 records).

        def everyone(event: Any) -> Iterator[tuple[int, Dataset | None]]:
            for number in range(60):
                if event.is_cancelled:
                    yield 0xFE00, None
                    return
                ds = Dataset()
                ds.QueryRetrieveLevel = event.identifier.QueryRetrieveLevel
                for elem in event.identifier:
                    if elem.keyword != "QueryRetrieveLevel":
                        setattr(ds, elem.keyword, "")
                ds.PatientName = f"SECRET^PERSON{number}"
                ds.PatientID = f"MRN{number:06d}"
                ds.StudyInstanceUID = ds.SeriesInstanceUID = ds.SOPInstanceUID = f"1.2.3.{number}"
                yield 0xFF00, ds
            yield 0x0000, None

        with _scp({"find": everyone}) as port:
            report = _probe_within(_options(port), 15)
        text = json.dumps(report.to_dict())
        assert "SECRET" not in text and "MRN0" not in text
        finds = _checks(report, "C-FIND")
        assert all(outcome == FAIL for _, outcome, _ in finds)
        first = finds[0][2]
        assert "C-CANCEL" in first
        assert f"{peer.MAX_PENDING} responses" in first and len(first) < 600

    def test_wrong_affected_sop_instance_uid_in_store_response(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        from pynetdicom import dimse

        send = dimse.DIMSEServiceProvider.send_msg
        lying: set[int] = set()

        def send_msg(provider: Any, primitive: Any, context_id: int) -> None:
            if id(provider.assoc) in lying and type(primitive).__name__ == "C_STORE":
                primitive.AffectedSOPInstanceUID = "1.2.3.4.5.6.7"
            send(provider, primitive, context_id)

        def store(event: Any) -> int:
            lying.add(id(event.assoc))
            return 0x0000

        monkeypatch.setattr(dimse.DIMSEServiceProvider, "send_msg", send_msg)
        with _scp({"store": store}) as port:
            report = _probe_within(_options(port), 15)
        assert report.outcome("C-STORE response") == FAIL
        detail = next(c.detail for c in report.checks if c.name == "C-STORE response")
        assert "AffectedSOPInstanceUID 1.2.3.4.5.6.7" in detail

    def test_test_object_left_on_the_peer_is_named(self) -> None:

        with _scp() as port:
            report = _probe_within(_options(port), 15)
        note = next(c for c in report.checks if c.name == "test object left on the peer")
        assert note.outcome == INFO
        pid = report.stored_object["PatientID"]
        assert pid.startswith("ARCHIVIST-PROBE-") and pid in note.detail
        assert report.stored_object["StudyInstanceUID"] in note.detail

    def test_undefined_echo_status_is_a_failure(self) -> None:
        # 0x0107 is not a C-ECHO status (PS3.7 9.1.5.1.4): it was reported as a warning only,
        # so check-peer exited 0.

        with _scp({"echo": lambda event: 0x0107}) as port:
            report = _probe_within(_options(port, store=False), 15)
        assert report.outcome("C-ECHO") == FAIL
        assert not report.ok
        assert report.stored_object == {}  # --no-store: nothing written, nothing announced
        assert report.outcome("test object left on the peer") is None


def _own_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


class TestMoveDestination:
    def test_move_listener_is_reachable_at_the_address_the_peer_sees(self) -> None:
        # The C-MOVE Storage SCP listened on 127.0.0.1 only: a peer reached over the network
        # could never deliver (Orthanc at this machine's own address answered 0xC000).
        address = _own_address()
        if address is None:
            pytest.skip("no non-loopback IPv4 address")
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification

        stored: dict[str, Dataset] = {}
        move_port = free_port()

        def on_store(event: Any) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            stored[str(ds.SOPInstanceUID)] = ds
            return 0x0000

        def on_move(event: Any) -> Iterator[Any]:
            yield address, move_port
            yield len(stored)
            for ds in stored.values():
                yield 0xFF00, ds

        ae = AE(ae_title="ODDPEER")
        ae.add_supported_context(Verification)
        for uid in STORAGE:
            ae.add_supported_context(uid)
            ae.add_requested_context(uid)
        for uid in MOVE:
            ae.add_supported_context(uid)
        port = free_port()
        server = ae.start_server((address, port), block=False,
                                 evt_handlers=[(evt.EVT_C_STORE, on_store),
                                               (evt.EVT_C_MOVE, on_move)])
        try:
            report = _probe_within(PeerOptions(address, port, "ODDPEER", timeout=3,
                                               move_aet="PROBE", move_port=move_port), 20)
        finally:
            server.shutdown()
        move = next(c for c in report.checks if c.name == "C-MOVE")
        assert move.outcome == PASS, move.detail


class TestCommandLine:
    @pytest.mark.parametrize(("args", "message"), [
        (["--timeout", "-1"], "--timeout must be a positive"),
        (["--timeout", "nan"], "--timeout must be a positive"),
        (["--timeout", "inf"], "--timeout must be a positive"),
        (["--aet", "A" * 17], "at most 16 characters"),
        (["--calling-aet", ""], "cannot be empty"),
    ])
    def test_bad_options_are_usage_errors(self, args: list[str], message: str) -> None:
        # -1 and nan switched pynetdicom's timeouts off (no limit at all), inf and bad AE
        # titles ended in a traceback.
        from archivist.cli.main import app

        base = ["check-peer", "127.0.0.1", str(free_port()), "--aet", "PEER"]
        result = CliRunner().invoke(app, base + args)
        assert result.exit_code == 2, result.output
        assert message in result.output

    def test_port_out_of_range_is_a_usage_error(self) -> None:
        from archivist.cli.main import app

        result = CliRunner().invoke(app, ["check-peer", "127.0.0.1", "70000", "--aet", "PEER"])
        assert result.exit_code == 2

    def test_unknown_host_is_a_finding_not_a_traceback(self) -> None:
        from archivist.cli.main import app

        result = CliRunner().invoke(app, ["check-peer", "no-such-host.invalid", "104", "--aet",
                                          "PEER", "--timeout", "2", "--json"])
        assert result.exit_code == 1, result.output
        data = json.loads(result.output)
        assert data["checks"][0]["outcome"] == FAIL
        assert "no-such-host.invalid" in data["checks"][0]["detail"]

    def test_text_output_warns_before_storing(self) -> None:

        from archivist.cli.main import app

        with _scp() as port:
            result = CliRunner().invoke(app, ["check-peer", "127.0.0.1", str(port), "--aet",
                                              "ODDPEER", "--timeout", "2"])
        assert "stores one test object" in result.output
        assert "test object left on the peer" in result.output
