"""QA of the acceptor's two fast paths, black-box over real sockets: the negotiation cache
(``_Negotiated`` in ``archivist.dimse.acceptor``: a proposal answered before is not negotiated
again) and the command sets decoded with ``struct`` (``decode_request`` in
``archivist.dimse.acceptor_pdu``: anything unusual takes pynetdicom's way, whose checks decide).

What is pinned: an association answered from the cache keeps its own SCP/SCU roles (C-GET);
C-FIND command sets of unusual but valid shape are answered as the plain one, invalid ones as
before; C-CANCEL still cancels; a Move Destination is resolved as pynetdicom did,
and a NUL-padded one (no AE title, PS3.5 6.2) gets the same answer whatever the shape of the
rest of the command set.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.rawpdu import command, proposal, read_message, read_pdu
from archivist.testing.server import ServerProcess, free_port

pytestmark = pytest.mark.timeout(240)

AET = "ARCHIVIST"
VERIFICATION = "1.2.840.10008.1.1"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
# Context IDs 1, 3, 5, 7, 9 in this order (rawpdu.proposal).
CONTEXTS = [(VERIFICATION, [IMPLICIT]), (FIND, [IMPLICIT]), (MOVE, [IMPLICIT]),
            (GET, [IMPLICIT]), (CT, [EXPLICIT, IMPLICIT])]
CX_ECHO, CX_FIND, CX_MOVE, CX_GET, CX_CT = 1, 3, 5, 7, 9
MANY = 120  # studies of patient MANY: a C-FIND of them is still running when cancelled


class Archive:
    def __init__(self, server: ServerProcess, study: str, received: list[str]) -> None:
        self.server = server
        self.port = server.dicom_port
        self.study = study  # one study of one CT instance (patient ONE)
        self.received = received  # SOP Instance UIDs the C-MOVE destination got


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    tmp = tmp_path_factory.mktemp("fastpath")
    received: list[str] = []
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        with lock:
            received.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    dest_port = free_port()
    dest = AE(ae_title="DEST")
    dest.add_supported_context(CT, [EXPLICIT, IMPLICIT])
    scp = dest.start_server(("127.0.0.1", dest_port), block=False,
                            evt_handlers=[(evt.EVT_C_STORE, on_store)])
    server = ServerProcess(tmp / "data", extra_args=[
        "--workers", "1", "--peer", f"DEST=127.0.0.1:{dest_port}",
        "--peer", "SIXTEEN-CHARS-AE=127.0.0.1:9"])
    server.start()
    try:
        study = new_uid()
        datasets = [make_instance(tmp / "one.dcm", patient_id="ONE", study_uid=study)]
        datasets += [make_instance(tmp / f"m{i}.dcm", patient_id="MANY", accession_number=f"A{i}")
                     for i in range(MANY)]
        ae = AE(ae_title="STORER")
        ae.add_requested_context(CT, EXPLICIT)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=AET)
        assert assoc.is_established
        try:
            for ds in datasets:
                assert assoc.send_c_store(ds).Status == 0x0000
        finally:
            assoc.release()
        yield Archive(server, study, received)
    finally:
        server.stop()
        scp.shutdown()


# -- raw DIMSE over a plain socket ----------------------------------------------------------------

def associate(port: int, rq: bytes | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(rq or proposal(CONTEXTS, called=AET))
    kind, body = read_pdu(sock)
    assert kind == 0x02, (kind, body[:4])
    return sock


def release(sock: socket.socket) -> None:
    sock.sendall(struct.pack(">BBLL", 5, 0, 4, 0))
    assert read_pdu(sock)[0] == 0x06
    sock.close()


def pdus(cx: int, cmd: bytes, data: bytes | None = None) -> list[bytes]:
    """A message as P-DATA-TF PDUs: its command set in one, its data set (if any) in another."""
    out = []
    for control, fragment in ((0x03, cmd), (0x02, data)):
        if fragment is None:
            continue
        pdv = struct.pack(">LBB", len(fragment) + 2, cx, control) + fragment
        out.append(struct.pack(">BBL", 4, 0, len(pdv)) + pdv)
    return out


def send(sock: socket.socket, cx: int, cmd: bytes, data: bytes | None = None) -> None:
    for pdu in pdus(cx, cmd, data):
        sock.sendall(pdu)


def receive(sock: socket.socket) -> tuple[int, Dataset | None, bytes]:
    """The next message (context ID, command set, data set), or (-PDU type, None, b"") when
    another PDU comes (an A-ABORT: -7) or the connection closes (0)."""
    cx, cs, data = read_message(sock)
    return (cx, None, b"") if cx <= 0 else (cx, cs, data)


def element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0, tag, len(value)) + value


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def command_set(field: int, sop_class: str, *, message_id: int | None = 5,
                priority: int | None = 0, data_set: int = 0x0001,
                destination: bytes | None = None,
                replace: dict[int, bytes] | None = None,
                order: list[int] | None = None, group_length: int | None | str = "right"
                ) -> bytes:
    """A request command set element by element (Implicit VR Little Endian), so that its shape
    can be anything: `replace` gives raw values, `order` the element order, `group_length`
    ``"right"``, None (left out) or a value."""
    values = {0x0002: uid(sop_class), 0x0100: us(field), 0x0800: us(data_set)}
    if message_id is not None:
        values[0x0110] = us(message_id)
    if priority is not None:
        values[0x0700] = us(priority)
    if destination is not None:
        values[0x0600] = destination
    values.update(replace or {})
    body = b"".join(element(tag, values[tag]) for tag in (order or sorted(values)))
    if group_length is None:
        return body
    length = len(body) if group_length == "right" else int(group_length)
    return element(0x0000, struct.pack("<L", length)) + body


def identifier(**values: Any) -> bytes:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return bytes(encode(ds, True, True))  # type: ignore[arg-type]


def answer(port: int, cx: int, cmd: bytes, data: bytes | None) -> list[Any]:
    """Send one request on a new association; the statuses of its responses (with the
    Study Instance UIDs of C-FIND matches), or "abort" when the association is aborted."""
    sock = associate(port)
    try:
        send(sock, cx, cmd, data)
        out: list[Any] = []
        while True:
            got, cs, payload = receive(sock)
            if cs is None:
                out.append("abort" if got == -7 else f"pdu {-got}")
                return out
            status = int(cs.Status)
            if payload:
                out.append((status, str(decode(BytesIO(payload), True, True).get(
                    "StudyInstanceUID", ""))))
            else:
                out.append(status)
            if status not in (0xFF00, 0xFF01):
                release(sock)
                return out
    finally:
        sock.close()


# -- C-MOVE: Move Destination --------------------------------------------------------------------

def move(archive: Archive, destination: bytes, **shape: Any) -> list[Any]:
    cmd = command_set(0x0021, MOVE, destination=destination, data_set=0x0102, **shape)
    return answer(archive.port, CX_MOVE, cmd,
                  identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=archive.study))


class TestMoveDestination:
    def test_nul_padded_destination_answered_alike_whatever_the_shape(
            self, archive: Archive) -> None:
        # An AE title is padded with spaces (PS3.5 6.2); NUL padding made pynetdicom refuse
        # the command set (A-ABORT). The struct decoder stripped it and moved the study when
        # the rest of the command set was of the usual shape, but a request without Priority
        # (which pynetdicom takes) went pynetdicom's way and was aborted: the same destination
        # accepted or not by an unrelated element. It is pynetdicom's answer in both now.
        usual = move(archive, b"DEST\0\0")
        without_priority = move(archive, b"DEST\0\0", priority=None)
        assert usual == without_priority == ["abort"]
        assert move(archive, b"SIXTEEN-CHARS-AE\0\0") == ["abort"]

    def test_destination_values_resolved_as_before(self, archive: Archive) -> None:
        before = len(archive.received)
        # Leading and trailing spaces are not significant in an AE title (PS3.5 6.2).
        assert move(archive, b"  DEST")[-1] == 0x0000
        assert move(archive, b"DEST  ", priority=2)[-1] == 0x0000
        assert len(archive.received) == before + 2
        # Exactly 16 characters: an AE title, unknown here (Move Destination unknown); 17:
        # no AE title, refused by pynetdicom's checks as before.
        assert move(archive, b"ABCDEFGHIJKLMNOP") == [0xA801]
        assert move(archive, b"ABCDEFGHIJKLMNOPQ ") == ["abort"]


# -- C-FIND and C-ECHO command sets --------------------------------------------------------------

@pytest.mark.parametrize("shape", [
    {},
    {"group_length": None},
    {"group_length": 7},
    {"order": [0x0800, 0x0110, 0x0100, 0x0700, 0x0002]},
    {"replace": {0x0002: FIND.encode() + b"\0"}, "priority": 2},
    {"replace": {0x0002: FIND.encode() + b" "}, "priority": 1, "data_set": 0xFEFE},
], ids=["plain", "no-group-length", "wrong-group-length", "odd-order", "uid-nul-low",
        "uid-space-high-data-set-type-fefe"])
def test_find_of_unusual_but_valid_shape_answered_as_the_plain_one(
        archive: Archive, shape: dict[str, Any]) -> None:
    query = identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=archive.study)
    got = answer(archive.port, CX_FIND, command_set(0x0020, FIND, **shape), query)
    assert got == [(0xFF00, archive.study), 0x0000]


@pytest.mark.parametrize(("cx", "cmd", "data", "expected"), [
    (CX_FIND, command_set(0x0020, FIND, message_id=None), b"", ["abort"]),
    (CX_FIND, command_set(0x0020, FIND, replace={0x0002: b""}), b"", ["abort"]),
    (CX_ECHO, command_set(0x0030, VERIFICATION, message_id=None, priority=None,
                          data_set=0x0101), None, ["abort"]),
    # No identifier (Command Data Set Type 0x0101): pynetdicom takes it, the query fails.
    (CX_FIND, command_set(0x0020, FIND, data_set=0x0101), None, [0xA900]),
], ids=["find-no-message-id", "find-empty-sop-class", "echo-no-message-id", "find-no-data-set"])
def test_invalid_command_sets_answered_as_before(archive: Archive, cx: int, cmd: bytes,
                                                 data: bytes | None, expected: list[Any]
                                                 ) -> None:
    assert answer(archive.port, cx, cmd, data) == expected


def test_cancel_during_find(archive: Archive) -> None:
    """A C-CANCEL sent right after the request ends the query early with 0xFE00. A cancel that
    comes after the last match was sent is one for an operation that has ended, which the
    archive ignores (the query's Success stands). Request and cancel go in one write, so the
    archive reads the cancel while the query runs even when this process is descheduled
    after sending (a loaded CI machine: sent one after the other, the server had answered all
    120 matches before the cancel came, ten times in a row); a few tries all the same."""
    sock = associate(archive.port)
    outcomes: list[tuple[int, int]] = []
    try:
        for message_id in range(42, 52):
            # At once (PS3.7 9.3.2.3: any time after the request): the query's first match
            # is on its way then, the others not yet.
            sock.sendall(b"".join(
                pdus(CX_FIND, command_set(0x0020, FIND, message_id=message_id),
                     identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="",
                                PatientID="MANY"))
                + pdus(CX_FIND, command({"CommandField": 0x0FFF,
                                         "MessageIDBeingRespondedTo": message_id,
                                         "CommandDataSetType": 0x0101}))))
            pending = 0
            while True:
                _, cs, _ = receive(sock)
                assert cs is not None
                assert int(cs.MessageIDBeingRespondedTo) == message_id
                if int(cs.Status) != 0xFF00:
                    break
                pending += 1
            outcomes.append((int(cs.Status), pending))
            if int(cs.Status) == 0xFE00:
                break
        status, pending = outcomes[-1]
        assert status == 0xFE00 and pending < MANY, outcomes
        # The ones before (if any) ran to the end: every match, then Success.
        assert all(o == (0x0000, MANY) for o in outcomes[:-1]), outcomes
        release(sock)
    finally:
        sock.close()


# -- the negotiation cache and C-GET roles --------------------------------------------------------

def role(sop_class: str, scu: bool, scp: bool) -> SCP_SCU_RoleSelectionNegotiation:
    item = SCP_SCU_RoleSelectionNegotiation()
    item.sop_class_uid = sop_class
    item.scu_role, item.scp_role = scu, scp
    return item


def test_get_on_a_cached_association_follows_its_own_roles(archive: Archive) -> None:
    """The same contexts proposed with the SCP role for CT, without it, with the SCU role only,
    and with it again (each answered from the cache after its first time): the C-STORE
    sub-operation goes on the CT context only where the role was proposed (PS3.4 C.4.3)."""
    query = identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=archive.study)
    roles = {"scp": (role(CT, True, True),), "none": (), "scu": (role(CT, True, False),)}

    def get(which: str) -> tuple[list[int], list[int]]:
        sock = associate(archive.port, proposal(CONTEXTS, called=AET, extra=roles[which]))
        sub_contexts: list[int] = []
        statuses: list[int] = []
        try:
            send(sock, CX_GET, command_set(0x0010, GET, data_set=0x0102), query)
            while True:
                cx, cs, _ = receive(sock)
                assert cs is not None, cx
                if int(cs.CommandField) == 0x0001:
                    sub_contexts.append(cx)
                    send(sock, cx, command({
                        "CommandField": 0x8001, "MessageIDBeingRespondedTo": int(cs.MessageID),
                        "AffectedSOPClassUID": CT,
                        "AffectedSOPInstanceUID": str(cs.AffectedSOPInstanceUID),
                        "CommandDataSetType": 0x0101, "Status": 0}))
                    continue
                statuses.append(int(cs.Status))
                if statuses[-1] != 0xFF00:
                    break
            release(sock)
        finally:
            sock.close()
        return sub_contexts, statuses

    for _ in range(2):
        assert get("scp") == ([CX_CT], [0xFF00, 0x0000])
        assert get("none") == ([], [0xFF00, 0xA702])
        assert get("scu") == ([], [0xFF00, 0xA702])


def test_cache_churned_then_first_proposal_again(archive: Archive) -> None:
    """More distinct proposals than the cache holds, a large one (not remembered), then the
    first again: the same answer each time, and an association that works."""
    def answer_to(rq: bytes) -> bytes:
        sock = socket.create_connection(("127.0.0.1", archive.port), timeout=30)
        try:
            sock.sendall(rq)
            kind, body = read_pdu(sock)
            assert kind == 0x02
            send(sock, CX_ECHO, command_set(0x0030, VERIFICATION, priority=None,
                                            data_set=0x0101))
            _, cs, _ = receive(sock)
            assert cs is not None and int(cs.Status) == 0x0000
            release(sock)
            return body
        finally:
            sock.close()

    first = answer_to(proposal(CONTEXTS, called=AET))
    for i in range(40):
        answer_to(proposal(CONTEXTS, called=AET, max_length=20000 + i))
    syntaxes = [IMPLICIT, EXPLICIT] + [f"1.2.840.10008.1.2.4.{n}" for n in range(50, 100)]
    large = proposal([*CONTEXTS, *((f"1.2.840.10008.5.1.4.1.1.{n}", syntaxes)
                                   for n in range(1, 40))], called=AET)
    assert len(large) > 32 * 1024
    assert answer_to(large) == answer_to(large)
    assert answer_to(proposal(CONTEXTS, called=AET)) == first
