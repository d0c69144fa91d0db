"""A proposal answered before is answered again without being decoded (``_Negotiated`` in
``archivist.dimse.acceptor``): the same A-ASSOCIATE-AC but for the AE titles, which are the new
request's; the AE title checks, the allow-list and ``max_associations`` still apply to every
association; a proposal that differs in anything gets its own answer. Real server, raw sockets.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from archivist.testing.rawpdu import command, proposal, read_message, read_pdu
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(180)

AET = "ARCHIVIST"
VERIFICATION = "1.2.840.10008.1.1"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
CONTEXTS = [(FIND, [EXPLICIT, IMPLICIT]), (VERIFICATION, [IMPLICIT])]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("negcache") / "data",
                        extra_args=["--workers", "1", "--allow", "GOOD@127.0.0.1",
                                    "--allow", "OTHER@127.0.0.1"],
                        env={"ARCHIVIST_MAX_ASSOCIATIONS": "3"})
    srv.start()
    yield srv
    srv.stop()


def associate(port: int, rq: bytes) -> tuple[socket.socket, int | None, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(rq)
    kind, body = read_pdu(sock)
    return sock, kind, body


def release(sock: socket.socket) -> None:
    sock.sendall(struct.pack(">BBLL", 5, 0, 4, 0))
    assert read_pdu(sock)[0] == 0x06
    sock.close()


def echo(sock: socket.socket, context_id: int) -> int:
    cmd = command({"AffectedSOPClassUID": VERIFICATION, "CommandField": 0x0030,
                   "MessageID": 7, "CommandDataSetType": 0x0101})
    pdv = struct.pack(">LBB", len(cmd) + 2, context_id, 0x03) + cmd
    sock.sendall(struct.pack(">BBL", 4, 0, len(pdv)) + pdv)
    _, cs, _ = read_message(sock)
    return int(cs.Status)


def test_same_proposal_same_answer_with_the_new_titles(server: ServerProcess) -> None:
    answers = []
    for calling in ("GOOD", "OTHER", "GOOD"):
        sock, kind, body = associate(server.dicom_port,
                                     proposal(CONTEXTS, called=AET, calling=calling))
        assert kind == 0x02
        # The AE title fields of the answer are the request's (PS3.8 9.3.3).
        assert body[4:36] == AET.ljust(16).encode() + calling.ljust(16).encode()
        assert echo(sock, 3) == 0x0000
        release(sock)
        answers.append(body)
    assert answers[0] == answers[2]
    assert answers[0][:4] + answers[0][36:] == answers[1][:4] + answers[1][36:]


def test_titles_and_allow_list_still_checked(server: ServerProcess) -> None:
    sock, kind, _ = associate(server.dicom_port, proposal(CONTEXTS, called=AET, calling="GOOD"))
    assert kind == 0x02
    release(sock)
    # The same proposal from a caller not on the allow-list, and to another called AE title.
    for called, calling, reason in ((AET, "BAD", 3), ("NOTUS", "GOOD", 7)):
        sock, kind, body = associate(server.dicom_port,
                                     proposal(CONTEXTS, called=called, calling=calling))
        sock.close()
        assert kind == 0x03, (called, calling)
        assert (body[1], body[2], body[3]) == (1, 1, reason)


def test_max_associations_still_counted(server: ServerProcess) -> None:
    rq = proposal(CONTEXTS, called=AET, calling="GOOD")
    held = []
    try:
        for _ in range(3):
            sock, kind, _ = associate(server.dicom_port, rq)
            assert kind == 0x02
            held.append(sock)
        sock, kind, body = associate(server.dicom_port, rq)
        sock.close()
        assert kind == 0x03 and (body[1], body[2], body[3]) == (2, 3, 2)
    finally:
        for sock in held:
            release(sock)


def test_a_proposal_that_differs_gets_its_own_answer(server: ServerProcess) -> None:
    def accepted_syntax(syntaxes: list[str], max_length: int = 16384) -> bytes:
        sock, kind, body = associate(
            server.dicom_port, proposal([(FIND, syntaxes)], called=AET, calling="GOOD",
                                        max_length=max_length))
        assert kind == 0x02
        release(sock)
        return body

    explicit_first = accepted_syntax([EXPLICIT, IMPLICIT])
    implicit_only = accepted_syntax([IMPLICIT])
    assert EXPLICIT.encode() in explicit_first
    assert EXPLICIT.encode() not in implicit_only and IMPLICIT.encode() in implicit_only
    assert accepted_syntax([EXPLICIT, IMPLICIT]) == explicit_first
    # Only the requestor's Maximum Length differs: the answer is the same, and the new
    # association sends within the new length (a C-ECHO response fits either way).
    sock, kind, _ = associate(server.dicom_port,
                              proposal(CONTEXTS, called=AET, calling="GOOD", max_length=4096))
    assert kind == 0x02
    assert echo(sock, 3) == 0x0000
    release(sock)
    # A Maximum Length under what the acceptor takes is refused, cached proposals or not.
    for _ in range(2):
        sock, kind, body = associate(server.dicom_port,
                                     proposal(CONTEXTS, called=AET, calling="GOOD",
                                              max_length=4))
        sock.close()
        assert kind == 0x03 and (body[1], body[2], body[3]) == (1, 1, 1)
