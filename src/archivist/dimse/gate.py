"""Limits pynetdicom does not enforce: a pre-association gate and a PDU size cap.

The gate holds every new TCP connection in one selector thread until a complete, plausible
A-ASSOCIATE-RQ has arrived (peeked, not consumed). Connections that send nothing cost no thread and
no association slot and are closed when the ARTIM timer runs out (PS3.8 9.1.5); anything that is not
an A-ASSOCIATE-RQ is closed at once; a request for a wrong called AE title or from a calling
AE/host not on the allow-list gets an A-ASSOCIATE-RJ without reaching pynetdicom at all.

:func:`install_pdu_cap` replaces pynetdicom's PDU reader with one that reads the 6-byte header,
refuses a length over what we advertised (A-ABORT, PS3.8 9.3.1) without allocating it, and reads
the body in large chunks.
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("archivist.dimse.gate")

A_ASSOCIATE_RQ = 0x01
MAX_ASSOCIATE_RQ = 64 * 1024
MIN_ASSOCIATE_RQ = 68  # fixed fields of the A-ASSOCIATE-RQ variable part
_REPOLL_PARTIAL = 0.25


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return struct.pack(">BBLBBBB", 0x03, 0, 4, 0, result, source, reason)


def a_abort(source: int = 2, reason: int = 0) -> bytes:
    """An A-ABORT PDU (PS3.8 9.3.8); source 2 = service provider."""
    return struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, source, reason)


@dataclass
class _Pending:
    sock: socket.socket
    address: Any
    deadline: float
    retry_at: float = 0.0


class Gate:
    """Admits connections to pynetdicom only once a whole A-ASSOCIATE-RQ is waiting.

    Parameters
    ----------
    on_ready
        Called (from the gate thread) with ``(sock, address)`` for an admitted connection.
    check_aets
        Called with ``(called_aet, calling_aet, host)``; returns None to admit or an
        ``(result, source, reason)`` triple for the A-ASSOCIATE-RJ to send.
    artim_timeout
        Seconds a connection may take to send its A-ASSOCIATE-RQ.
    max_pending
        Connections held at most; further ones are closed at once.
    """

    def __init__(
        self,
        on_ready: Callable[[socket.socket, Any], None],
        check_aets: Callable[[str, str, str], tuple[int, int, int] | None],
        *,
        artim_timeout: float = 10.0,
        max_pending: int = 2000,
    ) -> None:
        self.on_ready = on_ready
        self.check_aets = check_aets
        self.artim_timeout = artim_timeout
        self.max_pending = max_pending
        self._sel = selectors.DefaultSelector()
        self._pending: dict[int, _Pending] = {}
        self._parked: dict[int, _Pending] = {}
        self._incoming: list[tuple[socket.socket, Any]] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="dimse-gate", daemon=True)

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._parked)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake()
        self._thread.join(timeout=5)

    def admit(self, sock: socket.socket, address: Any) -> None:
        """Hand a freshly accepted connection to the gate (any thread)."""
        with self._lock:
            if len(self._incoming) + self.pending >= self.max_pending:
                overflow = True
            else:
                overflow = False
                self._incoming.append((sock, address))
        if overflow:
            log.warning("too many pending connections; closing one from %s", address[0])
            _close(sock)
            return
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop:
            now = time.monotonic()
            timeout = 0.5
            if self._parked:
                timeout = min(timeout, max(0.0, min(p.retry_at for p in self._parked.values()) - now))
            events = self._sel.select(timeout)
            now = time.monotonic()
            for key, _ in events:
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                    continue
                self._inspect(key.fd, now)
            with self._lock:
                incoming, self._incoming = self._incoming, []
            for sock, address in incoming:
                try:
                    sock.setblocking(False)
                    fd = sock.fileno()
                    self._pending[fd] = _Pending(sock, address, now + self.artim_timeout)
                    self._sel.register(sock, selectors.EVENT_READ, fd)
                except (OSError, ValueError):
                    _close(sock)
            for fd, p in list(self._parked.items()):
                if p.retry_at <= now:
                    del self._parked[fd]
                    self._pending[fd] = p
                    try:
                        self._sel.register(p.sock, selectors.EVENT_READ, fd)
                    except (OSError, ValueError):
                        self._pending.pop(fd, None)
                        _close(p.sock)
            for fd, p in list(self._pending.items()) + list(self._parked.items()):
                if p.deadline <= now:
                    self._drop(fd, reason="ARTIM timeout before A-ASSOCIATE-RQ")
        for fd in list(self._pending) + list(self._parked):
            self._drop(fd, reason=None)
        self._sel.close()
        _close(self._wake_r)
        _close(self._wake_w)

    def _drop(self, fd: int, *, reason: str | None, send: bytes | None = None) -> None:
        p = self._pending.pop(fd, None) or self._parked.pop(fd, None)
        if p is None:
            return
        try:
            self._sel.unregister(p.sock)
        except (KeyError, ValueError, OSError):
            pass
        if send:
            try:
                p.sock.send(send)
            except OSError:
                pass
        if reason:
            log.info("closing connection from %s: %s", p.address[0], reason)
        _close(p.sock)

    def _inspect(self, fd: int, now: float) -> None:
        p = self._pending.get(fd)
        if p is None:
            return
        try:
            data = p.sock.recv(MAX_ASSOCIATE_RQ + 6, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            self._drop(fd, reason=None)
            return
        if not data:
            self._drop(fd, reason=None)
            return
        if data[0] != A_ASSOCIATE_RQ:
            self._drop(fd, reason=f"PDU type 0x{data[0]:02X} before association")
            return
        if len(data) >= 6:
            (length,) = struct.unpack(">L", data[2:6])
            if length > MAX_ASSOCIATE_RQ or length < MIN_ASSOCIATE_RQ:
                self._drop(fd, reason=f"A-ASSOCIATE-RQ length {length} refused",
                           send=a_abort(2, 6))
                return
            if len(data) >= 6 + length:
                called = data[10:26].decode("ascii", "replace").strip(" \0")
                calling = data[26:42].decode("ascii", "replace").strip(" \0")
                host = str(p.address[0])
                verdict = self.check_aets(called, calling, host)
                if verdict is not None:
                    self._drop(fd, reason=f"association from {calling}@{host} to {called} "
                                          f"rejected", send=associate_rj(*verdict))
                    return
                del self._pending[fd]
                try:
                    self._sel.unregister(p.sock)
                except (KeyError, ValueError):
                    pass
                try:
                    p.sock.setblocking(True)
                    self.on_ready(p.sock, p.address)
                except Exception:  # noqa: BLE001
                    log.exception("handing over a connection failed")
                    _close(p.sock)
                return
        # Incomplete request: stop watching for a moment (peeking is level-triggered).
        try:
            self._sel.unregister(p.sock)
        except (KeyError, ValueError):
            pass
        del self._pending[fd]
        p.retry_at = now + _REPOLL_PARTIAL
        self._parked[fd] = p


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


# -- PDU size cap ------------------------------------------------------------------------------

_SMALL_PDU_CAP = 1024
_ASSOC_PDU_CAP = 1024 * 1024
_CHUNK = 1024 * 1024
_MAX_QUEUED_PDUS = 4


def install_pdu_cap(hard_cap: int) -> None:
    """Replace pynetdicom's PDU reader with a bounded one (process-wide, idempotent).

    Parameters
    ----------
    hard_cap
        Largest P-DATA-TF accepted when no maximum length was negotiated.
    """
    from pynetdicom.dul import DULServiceProvider

    if getattr(DULServiceProvider, "_archivist_capped", False):
        DULServiceProvider._archivist_hard_cap = hard_cap  # type: ignore[attr-defined]
        return
    DULServiceProvider._read_pdu_data = _read_pdu_capped  # type: ignore[method-assign]
    DULServiceProvider._archivist_capped = True  # type: ignore[attr-defined]
    DULServiceProvider._archivist_hard_cap = hard_cap  # type: ignore[attr-defined]


def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        r = sock.recv_into(view[got:], min(n - got, _CHUNK))
        if r == 0:
            return None
        got += r
    return buf


def _read_pdu_capped(self: Any) -> None:
    """Bounded replacement for ``DULServiceProvider._read_pdu_data`` (same events emitted)."""
    assoc_socket = self.socket
    raw = assoc_socket.socket
    try:
        header = _recv_exact(raw, 6)
    except (OSError, TimeoutError):
        self.event_queue.put("Evt17")
        return
    if header is None:
        self.event_queue.put("Evt17")
        return
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type == 4:
        # Back-pressure: do not read further P-DATA while the association thread has not yet
        # consumed what we queued (pynetdicom's queue between the two threads is unbounded, so a
        # fast sender would otherwise fill memory with a large object before it reaches disk).
        queue = self.to_user_queue
        waited = 0.0
        while queue.qsize() > _MAX_QUEUED_PDUS and waited < 600:
            time.sleep(0.002)
            waited += 0.002
    if pdu_type not in (1, 2, 3, 4, 5, 6, 7):
        log.warning("unknown PDU type 0x%02X; aborting", pdu_type)
        self.event_queue.put("Evt19")
        return
    if pdu_type == 4:
        assoc = self.assoc
        local = assoc.acceptor if assoc.is_acceptor else assoc.requestor
        negotiated = int(local.maximum_length or 0)
        cap = negotiated + 64 if negotiated else int(type(self)._archivist_hard_cap)
    elif pdu_type in (1, 2):
        cap = _ASSOC_PDU_CAP
    else:
        cap = _SMALL_PDU_CAP
    if length > cap:
        log.warning("PDU type 0x%02X declares %d bytes, over the limit of %d; aborting",
                    pdu_type, length, cap)
        self.event_queue.put("Evt19")
        return
    try:
        body = _recv_exact(raw, length) if length else bytearray()
    except (OSError, TimeoutError):
        self.event_queue.put("Evt17")
        return
    if body is None:
        self.event_queue.put("Evt17")
        return
    try:
        pdu, event = self._decode_pdu(header + body)
    except Exception:  # noqa: BLE001 - malformed PDU: pynetdicom aborts on Evt19
        log.warning("malformed PDU type 0x%02X (%d bytes); aborting", pdu_type, length)
        self.event_queue.put("Evt19")
        return
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)
