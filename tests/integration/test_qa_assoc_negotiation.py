"""Association handling of the DIMSE acceptor under unusual but valid negotiation (PS3.7, PS3.8),
driven over real sockets by pynetdicom, DCMTK and a hand-built client for what those cannot send:
tiny and absurd Maximum Lengths, many presentation contexts, DIMSE requests on a context of
another SOP Class, a C-MOVE to a configured destination that is not listening, and an
A-RELEASE-RQ sent while a C-GET waits for a sub-operation's C-STORE response."""

from __future__ import annotations

import contextlib
import functools
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu_primitives import (
    AsynchronousOperationsWindowNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.rawpdu import command, proposal, read_message, read_pdu
from archivist.testing.server import ServerProcess, free_port

pytestmark = pytest.mark.timeout(300)

AET = "ARCHIVIST"
SC = str(SecondaryCaptureImageStorage)
FIND = str(StudyRootQueryRetrieveInformationModelFind)
GET = str(StudyRootQueryRetrieveInformationModelGet)
MOVE = str(StudyRootQueryRetrieveInformationModelMove)
VERIFICATION = str(Verification)
EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
COUNT = 40  # small instances in one study
HEADER = struct.Struct(">BBL")


# -- a minimal hand-built DICOM UL client -----------------------------------------------------

#: An A-ASSOCIATE-RQ PDU (contexts get IDs 1, 3, 5...).
associate_rq = functools.partial(proposal, called=AET, calling="QAASSOC")






def connect(port: int, rq: bytes) -> tuple[socket.socket, int | None, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(rq)
    pdu_type, body = read_pdu(sock)
    return sock, pdu_type, body




def p_data(context_id: int, cmd: bytes, data: bytes | None = None) -> bytes:
    """A message as two P-DATA-TF PDUs (command, then data set), each one PDV."""
    out = b""
    for payload, control in ((cmd, 0x03), (data, 0x02)):
        if payload is None:
            continue
        out += HEADER.pack(0x04, 0, len(payload) + 6)
        out += struct.pack(">LBB", len(payload) + 2, context_id, control) + payload
    return out




def query(level: str, **keys: str) -> bytes:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return bytes(encode(ds, True, True))  # type: ignore[arg-type]


# -- a proxy that records the PDUs the server sends -------------------------------------------


class PduRecorder:
    """A TCP proxy in front of the server recording (type, length) of every PDU it sends."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.down: list[tuple[int, int]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection(self.target)
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        pending = b""
        while True:
            try:
                chunk = src.recv(1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            if record:
                pending += chunk
                while len(pending) >= 6:
                    pdu_type, _, length = HEADER.unpack(pending[:6])
                    if len(pending) < 6 + length:
                        break
                    self.down.append((pdu_type, length))
                    pending = pending[6 + length:]
            try:
                dst.sendall(chunk)
            except OSError:
                return


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # DEAD is a configured C-MOVE destination where nothing listens. A short DIMSE timeout so
    # that a server waiting for an answer that cannot come shows up as a slow test, not a hang.
    srv = ServerProcess(tmp_path_factory.mktemp("assoc") / "data",
                        extra_args=["--peer", f"DEAD=127.0.0.1:{free_port()}", "--workers", "1"],
                        env={"ARCHIVIST_DIMSE_TIMEOUT": "20"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stored(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """COUNT small Secondary Capture instances in one study, and one of ~4 MB in another."""
    tmp = tmp_path_factory.mktemp("assoc-files")
    small, series = new_uid(), new_uid()
    body = b""
    sops = []
    for i in range(COUNT):
        path = tmp / f"{i}.dcm"
        ds = make_instance(path, study_uid=small, series_uid=series, instance_number=i + 1,
                           sop_class_uid=SC, modality="OT")
        sops.append(str(ds.SOPInstanceUID))
        body += b"--B\r\nContent-Type: application/dicom\r\n\r\n" + path.read_bytes() + b"\r\n"
    big = new_uid()
    big_path = tmp / "big.dcm"
    big_ds = make_instance(big_path, study_uid=big, sop_class_uid=SC, modality="OT", rows=512,
                           columns=512, frames=16)
    body += b"--B\r\nContent-Type: application/dicom\r\n\r\n" + big_path.read_bytes() + b"\r\n"
    body += b"--B--\r\n"
    r = requests.post(f"{server.url}/dicomweb/studies", data=body, timeout=120, headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=B'})
    assert r.status_code == 200, r.text
    return {"small": small, "sops": sops, "big": big, "big_pixels": big_ds.PixelData}


# -- Maximum Length ----------------------------------------------------------------------------


@pytest.mark.parametrize("max_length", [1, 6, 7, 100, 255])
def test_absurd_maximum_length_is_rejected(server: ServerProcess, max_length: int) -> None:
    # Under 7 bytes a P-DATA-TF cannot carry a byte of a message: the acceptor looped for ever
    # cutting the first response into empty PDUs, holding the event loop (every association of
    # the worker stalled) and eating memory until MemoryError. Such lengths are refused:
    # A-ASSOCIATE-RJ rejected-permanent, service user, no reason given.
    sock, pdu_type, body = connect(server.dicom_port,
                                   associate_rq([(VERIFICATION, [IMPLICIT])], max_length=max_length))
    sock.close()
    assert (pdu_type, body[1:4]) == (0x03, bytes([1, 1, 1]))
    # ...and the server answers the next client at once.
    ae = AE("QAOTHER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=AET)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


@pytest.mark.parametrize("max_length", [256, 1024])
def test_small_maximum_length_is_honoured(server: ServerProcess, stored: dict[str, Any],
                                          max_length: int) -> None:
    """Every P-DATA-TF the server sends fits the requestor's Maximum Length: C-FIND responses
    and the C-STORE of a C-GET sub-operation of a 4 MB object, which arrives intact."""
    proxy = PduRecorder(server.dicom_port)
    received: list[Any] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0

    ae = AE("QAASSOC")
    for uid in (FIND, GET, SC):
        ae.add_requested_context(uid)
    assoc = ae.associate("127.0.0.1", proxy.port, ae_title=AET, max_pdu=max_length,
                         ext_neg=[build_role(SC, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = stored["small"]
    ds.SOPInstanceUID = ""
    matches = [i for s, i in assoc.send_c_find(ds, FIND) if s and s.Status in (0xFF00, 0xFF01)]
    assert len(matches) == COUNT
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = stored["big"]
    final = list(assoc.send_c_get(ds, GET))[-1][0]
    assoc.release()
    assert final.Status == 0 and final.NumberOfCompletedSuboperations == 1
    assert received[0].PixelData == stored["big_pixels"]
    lengths = [n for t, n in proxy.down if t == 0x04]
    assert len(lengths) > 4 * 1024 * 1024 // max_length
    assert max(lengths) <= max_length


# -- presentation contexts, extended negotiation -----------------------------------------------


def test_many_contexts_unknown_syntaxes_and_duplicates(server: ServerProcess,
                                                       stored: dict[str, Any]) -> None:
    """128 contexts: unknown abstract syntaxes refused with result 3, a known one proposed only
    in unknown transfer syntaxes with result 4, the others accepted; SC proposed in three
    contexts of different syntaxes gets each accepted, and the C-GET sub-operation goes on the
    one of the stored syntax (sent as stored). Asynchronous operations window answered 1/1, a
    user identity (positive response requested) ignored (PS3.7 D.3.3.7)."""
    ae = AE("QAASSOC")
    contexts = [
        build_context(Verification),
        build_context("1.2.3.4.5.6.7.8.9", [IMPLICIT]),
        build_context(SC, ["1.2.3.999"]),
        build_context(SC, ["1.2.3.999", IMPLICIT]),
        build_context(SC, ["1.2.840.10008.1.2.4.80"]),
        build_context(SC, [EXPLICIT]),
        build_context(GET),
    ]
    contexts += [build_context(f"1.2.3.4.{i}", [IMPLICIT]) for i in range(128 - len(contexts))]
    ae.requested_contexts = contexts
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 8
    window.maximum_number_operations_performed = 8
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 1
    identity.primary_field = b"alice"
    identity.positive_response_requested = True
    used: list[tuple[int, str]] = []

    def on_store(event: Any) -> int:
        used.append((event.context.context_id, event.context.transfer_syntax))
        return 0

    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=AET,
                         ext_neg=[build_role(SC, scp_role=True), window, identity],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        results = {cx.context_id: cx.result for cx in assoc.rejected_contexts}
        accepted = {cx.context_id: cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
        assert results[3] == 0x03 and results[5] == 0x04
        assert all(results[i] == 0x03 for i in range(15, 256, 2))
        assert accepted == {1: IMPLICIT, 7: IMPLICIT, 9: "1.2.840.10008.1.2.4.80",
                            11: EXPLICIT, 13: IMPLICIT}
        assert assoc.acceptor.asynchronous_operations == (1, 1)
        assert assoc.acceptor.user_identity is None
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = stored["big"]
        final = list(assoc.send_c_get(ds, GET))[-1][0]
        assert final.Status == 0
        assert used == [(11, EXPLICIT)]  # make_instance writes Explicit VR Little Endian
    finally:
        assoc.release()


# -- DIMSE requests on a context of another SOP Class ------------------------------------------


def _one_request(port: int, context_index: int, values: dict[str, Any],
                 data: bytes | None) -> list[int]:
    """Statuses answered to one request sent on the given context (Verification, SC, FIND,
    GET, MOVE proposed in this order)."""
    names = [VERIFICATION, SC, FIND, GET, MOVE]
    sock, pdu_type, _ = connect(port, associate_rq([(n, [IMPLICIT]) for n in names]))
    assert pdu_type == 0x02
    values = dict(values, CommandDataSetType=0x0001 if data else 0x0101)
    try:
        sock.sendall(p_data(2 * context_index + 1, command(values), data))
        statuses = []
        while True:
            cx, cs, _ = read_message(sock)
            assert cx > 0, f"PDU type {-cx} instead of a response"
            statuses.append(int(cs.Status))
            if cs.Status not in (0xFF00, 0xFF01):
                return statuses
    finally:
        sock.close()


def test_query_retrieve_on_a_context_of_another_sop_class(server: ServerProcess,
                                                          stored: dict[str, Any]) -> None:
    # A C-FIND naming SC on the SC context was answered as a Patient Root query (its matches
    # sent), a C-GET on the Verification context retrieved: the SOP Class defines no such
    # operation, so: Refused, SOP Class not supported (0x0122), as DCMTK's dcmqrscp answers.
    port = server.dicom_port
    find_rq = {"CommandField": 0x0020, "MessageID": 1, "Priority": 0}
    ident = query("STUDY", StudyInstanceUID=stored["small"])
    assert _one_request(port, 1, dict(find_rq, AffectedSOPClassUID=SC), ident) == [0x0122]
    assert _one_request(port, 0, dict(find_rq, AffectedSOPClassUID=VERIFICATION),
                        ident) == [0x0122]
    get_rq = {"CommandField": 0x0010, "MessageID": 2, "Priority": 0}
    assert _one_request(port, 0, dict(get_rq, AffectedSOPClassUID=VERIFICATION),
                        ident) == [0x0122]
    assert _one_request(port, 2, dict(get_rq, AffectedSOPClassUID=FIND), ident) == [0x0122]
    move_rq = {"CommandField": 0x0021, "MessageID": 3, "Priority": 0, "MoveDestination": "DEAD"}
    assert _one_request(port, 1, dict(move_rq, AffectedSOPClassUID=SC), ident) == [0x0122]
    # The right context still works, and C-ECHO is answered on any context (as DCMTK does).
    assert _one_request(port, 2, dict(find_rq, AffectedSOPClassUID=FIND), ident)[-2:] == [
        0xFF00, 0x0000]
    echo_rq = {"CommandField": 0x0030, "MessageID": 4}
    assert _one_request(port, 1, dict(echo_rq, AffectedSOPClassUID=VERIFICATION), None) == [0]


# -- C-MOVE to a configured destination that does not answer -----------------------------------


def test_move_to_a_destination_not_listening_is_a702(server: ServerProcess,
                                                     stored: dict[str, Any]) -> None:
    # 0xA801 "Move Destination unknown" said the destination was not configured; it is, but
    # cannot be reached: every sub-operation fails, 0xA702 with the counts and the Failed SOP
    # Instance UID List (DCMTK dcmqrscp, dcm4chee: UnableToPerformSubOperations).
    ae = AE("QAASSOC")
    ae.add_requested_context(MOVE)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=AET)
    assert assoc.is_established
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = stored["small"]
    responses = list(assoc.send_c_move(ds, "DEAD", MOVE))
    assoc.release()
    status, identifier = responses[-1]
    assert status.Status == 0xA702
    assert status.NumberOfFailedSuboperations == COUNT
    assert status.NumberOfCompletedSuboperations == 0
    assert status.NumberOfWarningSuboperations == 0
    assert "DEAD" in status.ErrorComment
    assert sorted(identifier.FailedSOPInstanceUIDList) == sorted(stored["sops"])


def test_movescu_to_a_destination_not_listening(server: ServerProcess,
                                                stored: dict[str, Any]) -> None:
    run = subprocess.run(
        ["/usr/bin/movescu", "-v", "-S", "-aec", AET, "-aem", "DEAD",
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={stored['small']}",
         "127.0.0.1", str(server.dicom_port)],
        check=False, capture_output=True, text=True, timeout=60, env={"TCP_NODELAY": "1"})
    assert "Refused: OutOfResourcesSubOperations" in run.stdout + run.stderr


# -- A-RELEASE-RQ while a C-GET runs -----------------------------------------------------------


def test_release_while_get_waits_for_a_sub_operation(server: ServerProcess,
                                                     stored: dict[str, Any]) -> None:
    # The requestor answers three sub-operations, then sends A-RELEASE-RQ instead of the fourth
    # C-STORE response; having asked for release it may send no more P-DATA (PS3.8 Sta7). The
    # acceptor stopped reading and waited dimse_timeout (120 s by default) for that response,
    # then aborted. Now: the C-GET ends at once, the rest counted failed, then A-RELEASE-RP.
    sock, pdu_type, _ = connect(server.dicom_port, associate_rq(
        [(GET, [IMPLICIT]), (SC, [EXPLICIT, IMPLICIT])],
        extra=(build_role(SC, scp_role=True),)))
    assert pdu_type == 0x02
    try:
        get_rq = command({"CommandField": 0x0010, "MessageID": 7, "Priority": 0,
                          "AffectedSOPClassUID": GET, "CommandDataSetType": 0x0001})
        sock.sendall(p_data(1, get_rq, query("STUDY", StudyInstanceUID=stored["small"])))
        answered = 0
        finals = []
        started = None
        while True:
            cx, cs, data = read_message(sock)
            if cx < 0:
                break
            if cs.CommandField == 0x0001:
                if answered == 3:
                    started = time.monotonic()
                    sock.sendall(HEADER.pack(0x05, 0, 4) + b"\0" * 4)
                    continue
                answered += 1
                rsp = command({"CommandField": 0x8001, "MessageIDBeingRespondedTo": cs.MessageID,
                               "AffectedSOPClassUID": SC,
                               "AffectedSOPInstanceUID": cs.AffectedSOPInstanceUID,
                               "Status": 0, "CommandDataSetType": 0x0101})
                sock.sendall(p_data(cx, rsp))
            elif cs.Status not in (0xFF00, 0xFF01):
                finals.append((cs, data))
        assert started is not None
        assert -cx == 0x06, f"PDU type {-cx} instead of A-RELEASE-RP"
        # Not after waiting out the fixture's 20 s DIMSE timeout for the fourth response (10 s
        # leaves a loaded machine room).
        assert time.monotonic() - started < 10
    finally:
        sock.close()
    assert len(finals) == 1
    final, data = finals[0]
    assert final.Status == 0xB000
    assert final.NumberOfCompletedSuboperations == 3
    assert final.NumberOfFailedSuboperations == COUNT - 3
    failed = decode(BytesIO(data), True, True).FailedSOPInstanceUIDList
    assert len(failed) == COUNT - 3 and set(failed) <= set(stored["sops"])


def test_received_files_are_what_was_stored(server: ServerProcess, stored: dict[str, Any],
                                            tmp_path: Path) -> None:
    """getscu with DCMTK's smallest Maximum Length (4096) receives the 4 MB object intact."""
    run = subprocess.run(
        ["/usr/bin/getscu", "-aec", AET, "-pdu", "4096", "-od", str(tmp_path),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={stored['big']}",
         "127.0.0.1", str(server.dicom_port)],
        check=False, capture_output=True, text=True, timeout=120, env={"TCP_NODELAY": "1"})
    assert run.returncode == 0, run.stderr
    (got,) = list(tmp_path.iterdir())
    assert pydicom.dcmread(got).PixelData == stored["big_pixels"]


def test_fragmenting_for_a_length_that_cannot_carry_a_pdv_raises() -> None:
    """The C-MOVE requestor side shares the fragmenter: a destination announcing a Maximum
    Length of 6 bytes or less makes it raise (a failed sub-operation) instead of looping."""
    from archivist.dimse.acceptor_pdu import fragment_message

    for max_length in (1, 6):
        with pytest.raises(ValueError):
            fragment_message(b"\0" * 10, 1, max_length)
    assert len(fragment_message(b"\0" * 10, 1, 7)) == 10
