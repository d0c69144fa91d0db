"""AE titles as they come on the wire (PS3.8 9.3.2, PS3.5 Table 6.2-1): NUL padding, which
older modalities send, is read as the spaces it stands for (it was aborted); a title holding a
backslash or a character outside the default repertoire is rejected as not recognized
(A-ASSOCIATE-RJ 1/1/3 or 1/1/7), not aborted with an ERROR in the log."""

from __future__ import annotations

import pytest
from tests.integration.test_qa_assoc_negotiation import (
    EXPLICIT,
    VERIFICATION,
    associate_rq,
    connect,
)

from archivist.testing.server import ServerProcess

ASSOCIATE_AC, ASSOCIATE_RJ = 0x02, 0x03


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("qaaet") / "data")
    server.start()
    yield server
    server.stop()


def _with_titles(called: bytes | None = None, calling: bytes | None = None) -> bytes:
    rq = bytearray(associate_rq([(VERIFICATION, [EXPLICIT])]))
    if called is not None:
        rq[10:26] = called.ljust(16, b" ")
    if calling is not None:
        rq[26:42] = calling.ljust(16, b" ")
    return bytes(rq)


@pytest.mark.parametrize("called, calling", [
    (b"ARCHIVIST".ljust(16, b"\0"), None),
    (None, b"OLDMODALITY".ljust(16, b"\0")),
    (b"ARCHIVIST\0", b"CT01\0\0"),
])
def test_nul_padded_titles_are_accepted(srv: ServerProcess, called: bytes | None,
                                        calling: bytes | None) -> None:
    sock, pdu_type, body = connect(srv.dicom_port, _with_titles(called, calling))
    sock.close()
    assert pdu_type == ASSOCIATE_AC, (pdu_type, body[:8].hex())
    # the answer carries the titles without the NULs
    assert b"\0" not in body[4:36].strip(b" ")


@pytest.mark.parametrize("called, calling, reason", [
    (None, b"\xe9\xe9", 3),
    (None, b"A\\B", 3),
    (None, b"TAB\tHERE", 3),
    (b"ARCHIVIST\\X", None, 7),
])
def test_titles_with_forbidden_characters_are_rejected(srv: ServerProcess,
                                                       called: bytes | None,
                                                       calling: bytes | None,
                                                       reason: int) -> None:
    sock, pdu_type, body = connect(srv.dicom_port, _with_titles(called, calling))
    sock.close()
    assert pdu_type == ASSOCIATE_RJ, (pdu_type, body[:8].hex())
    assert body[1:4] == bytes([1, 1, reason])  # permanent, service user, the reason


def test_the_server_keeps_serving_and_logs_no_error(srv: ServerProcess) -> None:
    sock, pdu_type, _ = connect(srv.dicom_port, _with_titles(calling=b"\xff\xfe"))
    sock.close()
    sock, pdu_type, _ = connect(srv.dicom_port, _with_titles())
    sock.close()
    assert pdu_type == ASSOCIATE_AC
    log = srv.log()
    assert "ERROR" not in log and "Invalid 'C" not in log
