"""Raw DICOM upper-layer PDUs for tests that need to see exactly what the server sends back.

pynetdicom reports an A-ASSOCIATE-RJ that arrives before its requesting thread has looked at the
socket as an abort (it finds the socket already closed), so a test that must tell a refusal from
an abort reads the answer here, on a plain socket.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import build_context
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)

VERIFICATION = "1.2.840.10008.1.1"


def item(kind: int, body: bytes) -> bytes:
    """One PS3.8 variable item: type, reserved byte, 16-bit length, body."""
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq(called: str = "ARCHIVIST", calling: str = "RAW") -> bytes:
    """A minimal valid A-ASSOCIATE-RQ proposing Verification on context 1 (PS3.8 9.3.2)."""
    app = item(0x10, b"1.2.840.10008.3.1.1.1")
    pc = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, VERIFICATION.encode())
              + item(0x40, b"1.2.840.10008.1.2"))
    user = item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.3.4"))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
            + bytes(32) + app + pc + user)
    return struct.pack(">BBL", 1, 0, len(body)) + body


def recv_pdu(s: socket.socket) -> tuple[int, bytes]:
    """The next PDU's type and body; ConnectionResetError when the peer closes first."""

    def exact(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                raise ConnectionResetError("closed")
            out += chunk
        return out

    kind, _, length = struct.unpack(">BBL", exact(6))
    return kind, exact(length)


def association_answer(port: int, *, called: str = "ARCHIVIST", calling: str = "RAW",
                       host: str = "127.0.0.1", timeout: float = 60) -> tuple[int, bytes]:
    """Propose an association and return the answer PDU (type, body), then close."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(associate_rq(called, calling))
        return recv_pdu(s)


def rejection(port: int, **kwargs: object) -> tuple[int, int, int] | None:
    """(result, source, reason) when the server answers with an A-ASSOCIATE-RJ, else None."""
    kind, body = association_answer(port, **kwargs)  # type: ignore[arg-type]
    return (body[1], body[2], body[3]) if kind == 0x03 else None


def read_pdu(sock: socket.socket) -> tuple[int | None, bytes]:
    """(PDU type, body); (None, b"") when the connection closed or was reset."""

    def exactly(n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                chunk = sock.recv(n - len(buf))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    head = exactly(6)
    if head is None:
        return None, b""
    pdu_type, _, length = struct.unpack(">BBL", head)
    return pdu_type, exactly(length) or b""


def command(values: dict[str, Any]) -> bytes:
    """An encoded DIMSE command set (Implicit VR Little Endian, group length first)."""
    cs = Dataset()
    for keyword, value in values.items():
        setattr(cs, keyword, value)
    body = bytes(encode(cs, True, True))  # type: ignore[arg-type]
    head = Dataset()
    head.CommandGroupLength = len(body)
    return bytes(encode(head, True, True)) + body  # type: ignore[arg-type]


def read_message(sock: socket.socket) -> tuple[int, Any, bytes]:
    """The next DIMSE message: (context ID, command Dataset, data set bytes); or, when another
    PDU comes (or the connection closes), (-PDU type, body, b"")."""
    return message_from(lambda: read_pdu(sock))


def message_from(next_pdu: Callable[[], tuple[int | None, bytes]]) -> tuple[int, Any, bytes]:
    """:func:`read_message` over PDUs from `next_pdu` ((type, body), as :func:`read_pdu`)."""
    cmd, data = b"", b""
    while True:
        pdu_type, body = next_pdu()
        if pdu_type != 0x04:
            return -(pdu_type or 0), body, b""
        pos = 0
        while pos < len(body):
            length, cx, control = struct.unpack(">LBB", body[pos:pos + 6])
            fragment = body[pos + 6:pos + 4 + length]
            pos += 4 + length
            if control & 0x01:
                cmd += fragment
                if control & 0x02:
                    cs = decode(BytesIO(cmd), True, True)
                    if cs.CommandDataSetType == 0x0101:
                        return cx, cs, b""
            else:
                data += fragment
                if control & 0x02:
                    return cx, decode(BytesIO(cmd), True, True), data


def proposal(contexts: list[tuple[str, list[str]]], *, called: str = "ARCHIVIST",
             calling: str = "RAW", max_length: int | None = 16384,
             extra: tuple[Any, ...] = ()) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing `contexts` ((abstract syntax, transfer syntaxes), given
    IDs 1, 3, 5...), encoded by pynetdicom; `max_length` None leaves the Maximum Length item
    out, `extra` adds user information items."""
    rq = A_ASSOCIATE()
    rq.application_context_name = UID("1.2.840.10008.3.1.1.1")
    rq.calling_ae_title = calling
    rq.called_ae_title = called
    proposed = []
    for i, (abstract, syntaxes) in enumerate(contexts):
        cx = build_context(abstract, syntaxes)
        cx.context_id = 2 * i + 1
        proposed.append(cx)
    rq.presentation_context_definition_list = proposed
    info: list[Any] = []
    if max_length is not None:
        item = MaximumLengthNotification()
        item.maximum_length_received = max_length
        info.append(item)
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = UID("1.2.826.0.1.3680043.9.9999.1")
    info.append(impl)
    info.extend(extra)
    rq.user_information = info
    return bytes(A_ASSOCIATE_RQ(rq).encode())
