"""Socket options for the associations Archivist requests through pynetdicom."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

__all__ = ["no_delay"]


def no_delay(assoc: Any) -> None:
    """Set TCP_NODELAY on an established pynetdicom association's socket.

    pynetdicom sends a message with a data set as two P-DATA-TF PDUs (command, then data set)
    on a socket without TCP_NODELAY: Nagle's algorithm holds the second until the peer
    acknowledges the first, which a peer delays by up to 40 ms (Linux's delayed ACK). The
    archive's own requestor (``dimse/requestor.py``) sets it for the same reason.
    """
    sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
