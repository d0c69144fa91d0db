"""Raw DICOM upper-layer PDUs for tests that need to see exactly what the server sends back.

pynetdicom reports an A-ASSOCIATE-RJ that arrives before its requesting thread has looked at the
socket as an abort (it finds the socket already closed), so a test that must tell a refusal from
an abort reads the answer here, on a plain socket.
"""

from __future__ import annotations

import socket
import struct

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
