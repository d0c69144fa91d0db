"""An A-ASSOCIATE-RQ proposing two presentation contexts with one ID (QA s22: 130 contexts
whose IDs wrapped past 255, or ID 1 twice) was accepted, its answer listing ID 1 accepted
twice and the later context silently in place of the first. Context IDs are unique within an
association (PS3.8 9.3.2.2): the request is aborted (A-ABORT, invalid PDU parameter), as one
with an even ID is, and the server goes on serving others."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from archivist.testing.rawpdu import proposal, read_pdu
from archivist.testing.server import ServerProcess

IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
ECHO = str(Verification)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("dupids") / "data", extra_args=["--workers", "1"])
    srv.start()
    yield srv
    srv.stop()


def _with_ids(rq: bytes, ids: list[int]) -> bytes:
    """`rq` with its presentation context items' IDs set to `ids`, in order."""
    out = bytearray(rq)
    pos, n = 6 + 68, 0
    while pos + 4 <= len(out):
        item_type, length = out[pos], int.from_bytes(out[pos + 2:pos + 4], "big")
        if item_type == 0x20:
            out[pos + 4] = ids[n]
            n += 1
        pos += 4 + length
    assert n == len(ids)
    return bytes(out)


def _answer(port: int, rq: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(rq)
        return read_pdu(sock)


@pytest.mark.parametrize("ids", [[1, 1], [1, 3, 1]])
def test_a_context_id_proposed_twice_is_aborted(server: ServerProcess, ids: list[int]) -> None:
    rq = proposal([(ECHO, [IMPLICIT]), (ECHO, [EXPLICIT]), (ECHO, [IMPLICIT])][:len(ids)])
    pdu_type, body = _answer(server.dicom_port, _with_ids(rq, ids))
    assert pdu_type == 0x07, (pdu_type, body)  # A-ABORT
    assert body[2:4] == bytes([2, 6])  # service provider, invalid PDU parameter value
    ae = AE("OTHER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()


def test_distinct_ids_are_accepted(server: ServerProcess) -> None:
    rq = proposal([(ECHO, [IMPLICIT]), (ECHO, [EXPLICIT])])
    pdu_type, _ = _answer(server.dicom_port, _with_ids(rq, [1, 3]))
    assert pdu_type == 0x02  # A-ASSOCIATE-AC
