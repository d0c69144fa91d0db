"""What the acceptor refused that DCMTK's storescp and Orthanc accept (QA s23):

- a User Information sub-item of a type it does not know (PS3.8 D.2, Note 2: an acceptor
  ignores them and does not refuse the association): aborted;
- an A-ASSOCIATE-RQ over 64 KiB (120 SOP Classes with every transfer syntax): aborted;
- a C-FIND Identifier sent 2.5 s after its command set (a slow link): refused as empty, and
  the association aborted when it came."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_FIND_RQ
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode

from archivist.testing.rawpdu import VERIFICATION, item, recv_pdu
from archivist.testing.server import ServerProcess

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root C-FIND
LE = "1.2.840.10008.1.2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("tolerance") / "data",
                        extra_args=["--workers", "1"])
    srv.start()
    yield srv
    srv.stop()


def _rq(contexts: list[tuple[str, list[str]]], user_extra: bytes = b"") -> bytes:
    pcs = b"".join(
        item(0x20, bytes([2 * n + 1, 0, 0, 0]) + item(0x30, cls.encode())
             + b"".join(item(0x40, ts.encode()) for ts in syntaxes))
        for n, (cls, syntaxes) in enumerate(contexts))
    user = item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.3.4")
                + user_extra)
    body = (struct.pack(">HH", 1, 0) + b"ARCHIVIST".ljust(16) + b"RAW".ljust(16) + bytes(32)
            + item(0x10, b"1.2.840.10008.3.1.1.1") + pcs + user)
    return struct.pack(">BBL", 1, 0, len(body)) + body


def _answer(server: ServerProcess, rq: bytes) -> int:
    with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=30) as s:
        s.sendall(rq)
        return recv_pdu(s)[0]


@pytest.mark.parametrize("kind", [0x5A, 0x5F, 0x60, 0xFF])
def test_unknown_user_sub_items_are_ignored(server: ServerProcess, kind: int) -> None:
    rq = _rq([(VERIFICATION, [LE])], item(kind, b"ABCD"))
    assert _answer(server, rq) == 0x02  # A-ASSOCIATE-AC


def test_a_large_association_request(server: ServerProcess) -> None:
    syntaxes = [f"1.2.840.10008.1.2.4.{n}" for n in range(50, 89)]
    classes = [f"1.2.840.10008.5.1.4.1.1.{n}" for n in range(1, 121)]
    rq = _rq([(VERIFICATION, [LE])] + [(c, syntaxes) for c in classes])
    assert len(rq) > 100_000
    assert _answer(server, rq) == 0x02


def _pdv(cx: int, control: int, data: bytes) -> bytes:
    pdv = struct.pack(">LBB", len(data) + 2, cx, control) + data
    return struct.pack(">BBL", 4, 0, len(pdv)) + pdv


def test_an_identifier_that_comes_late_is_answered(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=60) as s:
        s.sendall(_rq([(FIND, [LE])]))
        assert recv_pdu(s)[0] == 0x02
        primitive = C_FIND()
        primitive.MessageID = 1
        primitive.AffectedSOPClassUID = FIND
        primitive.Priority = 2
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        primitive.Identifier = BytesIO(encode(identifier, True, True))
        message = C_FIND_RQ()
        message.primitive_to_message(primitive)
        command = encode(message.command_set, True, True)
        s.sendall(_pdv(1, 0x03, command))  # the command set, last fragment
        time.sleep(2.5)
        s.sendall(_pdv(1, 0x02, primitive.Identifier.getvalue()))  # the identifier
        kind, body = recv_pdu(s)
        assert kind == 0x04, kind  # a C-FIND response, no abort
        status = body[body.find(b"\x00\x00\x00\x09") + 8:][:2]
        assert int.from_bytes(status, "little") == 0x0000  # nothing stored: done at once
