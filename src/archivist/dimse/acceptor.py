"""The event-driven DIMSE acceptor: one asyncio event loop waits on every socket, none polls.

How a connection is served (PS3.8 9 and Annex E; PS3.7 for the DIMSE layer):

1. **Before association** the connection only costs a coroutine waiting on its socket. It must send
   a whole A-ASSOCIATE-RQ within the ARTIM timeout (PS3.8 9.1.5), no larger than 64 KiB;
   anything else (another PDU type, HTTP, TLS) is closed at once, an oversized length gets an
   A-ABORT without being read. Such connections never take an association slot; at most
   ``max_pending_connections`` wait at a time.
2. **Negotiation** uses pynetdicom: the request is decoded by :class:`pynetdicom.pdu.A_ASSOCIATE_RQ`,
   presentation contexts and SCP/SCU roles by :func:`pynetdicom.presentation.negotiate_as_acceptor`
   (then the requestor's preferred transfer syntax is taken, PS3.8 9.3.2.2, so objects are stored
   as sent), the answer encoded by :class:`pynetdicom.pdu.A_ASSOCIATE_AC`. The called AE title, the
   allow-list and ``max_associations`` are checked first (A-ASSOCIATE-RJ). The asynchronous
   operations window is always answered as 1/1. A proposal identical (but for its AE titles) to
   one answered lately gets the same answer without being decoded again (:class:`_Negotiated`).
3. **Established**: a reader reads each PDU by its 6-byte header. P-DATA larger than our Maximum
   Length is refused without reading (A-ABORT); PDVs are checked (item lengths, accepted context
   IDs, command before data) and a malformed one aborts the association. Command sets of the
   usual C-STORE, C-ECHO, C-FIND, C-GET and C-MOVE requests are decoded with ``struct``
   (:func:`archivist.dimse.acceptor_pdu.decode_request`), any other by pynetdicom's DIMSE
   message classes; C-STORE data sets are written to a temporary file as
   they arrive. Complete requests go to one *performer* per association (window of 1), which runs
   the service (:mod:`archivist.dimse.acceptor_services`); the reader keeps reading meanwhile, so
   C-CANCEL, C-STORE responses of C-GET sub-operations and A-ABORT are seen at once.
4. Blocking work (fsync, SQLite, pydicom, outbound associations of C-MOVE) runs in bounded thread
   pools; the loop only moves bytes. Writes wait for the socket to drain (back-pressure).

Timeouts: ARTIM (pre-association; after an A-ABORT we send, the connection is cut once it has
run out), ``network_timeout`` (no PDU from an association that has no operation running),
``dimse_timeout`` (a message left half-sent, a C-STORE response of a C-GET sub-operation counted
from when the request has gone, a write the peer takes nothing of: a requestor that stops reading
responses). A single timer per connection, re-armed lazily, implements them: nothing wakes up
while a connection is merely idle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import select
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from archivist.config import Settings, event_loop_kind
from archivist.dimse.acceptor_pdu import (
    A_ABORT,
    A_RELEASE_RP_PDU,
    A_RELEASE_RQ,
    ABORT_INVALID_PARAMETER,
    ABORT_UNEXPECTED_PDU,
    ABORT_UNRECOGNIZED_PDU,
    HEADER,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    ITEM,
    MAX_ASSOCIATE_RQ,
    MAX_COMMAND_SET,
    MIN_ASSOCIATE_RQ,
    MIN_PEER_MAX_PDU,
    P_DATA_TF,
    FileSink,
    MemorySink,
    Message,
    ProtocolError,
    ReleaseRequested,
    StreamedMessage,
    WriteStalled,
    a_abort,
    associate_rj,
    file_meta_prefix,
    known_sub_items_only,
    quick_ack_for,
    to_the_end,
    write_pdus,
)
from archivist.dimse.acceptor_pdu import (
    A_ASSOCIATE_RQ as RQ_TYPE,
)
from archivist.dimse.listen import listen

log = logging.getLogger("archivist.dimse.acceptor")

#: How Archivist names itself in A-ASSOCIATE-AC (PS3.7 D.3.3.2) and in the File Meta of what it
#: receives: IMPLEMENTATION_CLASS_UID / IMPLEMENTATION_VERSION_NAME of acceptor_pdu.


#: The longest message pynetdicom's value checks may put in our log (see _QuietValueChecks).
MAX_LIBRARY_LOG_MESSAGE = 200


class _QuietValueChecks(logging.Filter):
    """pynetdicom's value checks, kept to one short line each.

    pynetdicom logs a traceback for every AE title that is not ASCII; the acceptor answers
    such a request itself (A-ABORT or A-ASSOCIATE-RJ), one line in our log is enough. Its
    other checks quote the whole value they refuse (``Invalid 'Implementation Version Name'
    value 'VVV...'``): a 60 KB value in an A-ASSOCIATE-RQ, which any client can send before
    it is known, wrote 60 KB to the log per connection. Such lines are cut short.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.funcName == "decode_bytes":
            return False
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: let logging report it
            return True
        if len(message) > MAX_LIBRARY_LOG_MESSAGE:
            record.msg = (f"{message[:MAX_LIBRARY_LOG_MESSAGE]}... "
                          f"({len(message)} characters, cut)")
            record.args = None
        return True


logging.getLogger("pynetdicom.utils").addFilter(_QuietValueChecks())

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
_CHUNK = 1 << 20
#: How long a worker holding more connections than another leaves new ones to the others, and
#: how often it looks again meanwhile.
_BALANCE_WAIT = 0.05
_BALANCE_POLL = 0.001
_SEND_CAP = 1 << 20  # we never send PDUs larger than this, whatever the peer accepts


def new_event_loop(settings: Settings) -> asyncio.AbstractEventLoop:
    """The acceptor's event loop: uvloop's unless `settings` say ``event_loop = "asyncio"``
    or it is not installed. With libuv the loop's own work per PDU, per callback and per
    hand-over from the thread pool is done in C: tiny-object ingest ~+15-35 %, CT ~+8-17 %
    in interleaved pairs against asyncio's loop (docs/performance.md, session 7)."""
    if event_loop_kind(settings) == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


_C_STORE_RQ, _C_CANCEL_RQ = 0x0001, 0x0FFF
#: Requests whose data set is optional (N-EVENT-REPORT, N-ACTION, N-CREATE; PS3.7 10.1), and
#: those whose Identifier may come empty from a faulty SCU (C-FIND, C-GET, C-MOVE). For an
#: empty one pynetdicom 3.0.4 declares a data set (Command Data Set Type 0x0001) and sends none,
#: so its SCU and our reader would wait for each other until a timeout. When such a request's
#: command set ends a PDU and nothing follows within this many seconds, the data set is taken
#: as empty (a sender writes command and data back to back; Nagle + delayed ACK is ~40 ms): an
#: empty Identifier is then refused with a status (no Query/Retrieve Level) instead of never
#: being answered. Long enough for a slow link: TCP's retransmissions wait 1, 2, 4 s (QA s23:
#: an Identifier 2.5 s late was refused as empty, and the association aborted when it came).
_OPTIONAL_DATA_SET = (0x0100, 0x0130, 0x0140, 0x0020, 0x0010, 0x0021)
EMPTY_DATA_SET_GRACE = 10.0

CheckAets = Callable[[str, str, str], "tuple[int, int, int] | None"]


class AssociationCount:
    """How many associations run, in this process or across the worker processes that share
    one listening socket (``max_associations`` is a limit for the whole server), and how many
    connections each worker holds (to spread new ones over the workers).

    Each process writes its own counts into its own cells of a shared array (no lock: one
    writer per cell): associations in the first `workers` cells, open connections in the next
    `workers`, or -1 while the worker is not accepting (set by the supervisor before it starts
    and after it dies). The total is a sum; the supervisor zeroes the association cell of a
    worker that died. Two workers admitting at the same instant may overshoot the limit by one
    each. Without `workers`, every cell is an association count (no connection counts).

    `stamps` (one float per worker, shared the same way) holds when each worker's association
    count last changed (``time.monotonic()``, one clock for every process), so background work
    can tell how long the whole server has been without DICOM traffic (:meth:`quiet_for`).
    """

    def __init__(self, cells: Any = None, index: int = 0, workers: int | None = None,
                 stamps: Any = None) -> None:
        self._cells = cells
        self._index = index
        self._stamps = stamps
        self._stamp = 0.0
        if workers is None:
            workers = len(cells) if cells is not None else 1
        self._workers = workers
        self._mine = 0
        #: Connection counts are kept only when the array has room for them.
        self._loads = cells is not None and len(cells) >= 2 * workers and workers > 1

    def set(self, n: int) -> None:
        self._mine = n
        if self._cells is not None:
            self._cells[self._index] = n
        self._stamp = time.monotonic()
        if self._stamps is not None:
            self._stamps[self._index] = self._stamp

    def quiet_for(self) -> float:
        """Seconds since the last association anywhere in the server ended; 0 while one is
        open."""
        if self.total() > 0:
            return 0.0
        last = max(self._stamps[:]) if self._stamps is not None else self._stamp
        return max(0.0, time.monotonic() - last)

    def total(self) -> int:
        if self._cells is None:
            return self._mine
        return int(sum(self._cells[:self._workers]))

    def set_connections(self, n: int) -> None:
        if self._loads:
            self._cells[self._workers + self._index] = n

    def busier_than_another(self) -> bool:
        """True when this worker holds more connections than another one."""
        if not self._loads:
            return False
        loads = self._cells[self._workers:2 * self._workers]
        mine = loads[self._index]
        # A negative count is a worker not accepting (starting, or dead and being replaced).
        return any(0 <= n < mine for i, n in enumerate(loads) if i != self._index)


class Acceptor:
    """Listens for DICOM associations on one asyncio loop running in its own thread.

    Parameters
    ----------
    settings
        Limits, timeouts, AE title, port.
    services
        The service runner (:class:`archivist.dimse.acceptor_services.Services`) that performs
        complete DIMSE requests.
    supported
        Presentation contexts we accept (abstract syntax, transfer syntaxes, roles).
    check_aets
        ``(called, calling, host) -> None`` to admit, or the A-ASSOCIATE-RJ (result, source,
        reason).
    """

    def __init__(self, settings: Settings, services: Any, supported: list[PresentationContext],
                 check_aets: CheckAets, *, listen_socket: socket.socket | None = None,
                 count: AssociationCount | None = None) -> None:
        self.settings = settings
        self.listen_socket = listen_socket
        self.count = count or AssociationCount()
        self.services = services
        self.supported = supported
        # Per abstract syntax, the transfer syntaxes we take: built once, not per association
        # (with ~150 supported SOP classes that was ~10 % of a new association's CPU).
        self._allowed: dict[str, set[str]] = {}
        for cx in supported:
            self._allowed.setdefault(cx.abstract_syntax, set()).update(cx.transfer_syntax)
        self.check_aets = check_aets
        # What was answered to the proposals seen last (see _Negotiated), by their bytes.
        self._negotiated: OrderedDict[bytes, _Negotiated] = OrderedDict()
        self.loop = new_event_loop(settings)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(4, min(16, settings.max_associations)),
            thread_name_prefix="dimse-work")
        # C-MOVE holds a thread for its whole run (pynetdicom's SCU is blocking); a pool of its
        # own keeps moves, even moves to ourselves, from starving the stores they cause.
        self.move_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="dimse-move")
        self.associations: set[Association] = set()
        self.pending = 0
        self._sock: socket.socket | None = None
        self.connections = 0  # open connections (negotiating or associated)
        self._deferred_since: float | None = None  # leaving connections to other workers
        self._thread: threading.Thread | None = None
        self._closing = False
        # DICOM over TLS (core/tls.py): the handshake, within the ARTIM timeout, comes first
        from archivist.core.tls import server_context

        self._tls = server_context(settings)

    # -- life cycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        """Bind (errors raise :class:`OSError` here), or take the listening socket given (a
        worker process shares its parent's), and serve in a background thread."""
        sock = self.listen_socket or listen(self.settings.host, self.settings.dicom_port)
        sock.setblocking(False)
        self._sock = sock
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.count.set_connections(self.connections)
            self.loop.add_reader(sock.fileno(), self._accept_ready)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="dimse-loop", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; running associations get `grace` seconds, then are aborted.

        Running: performing a request, or one waiting, or a PDU came or went in the last
        second (a modality between two C-STOREs of a series, which waited only for the request
        in hand and was cut before the next). An association idle for longer is aborted at
        once.
        """
        if self._thread is None:
            return

        def running(a: Association) -> bool:
            return a.busy or not a.queue.empty() or \
                self.loop.time() - a.last_activity < _RUNNING_WITHIN

        async def shutdown() -> None:
            self._closing = True
            self._stop_accepting()
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(map(running, self.associations)):
                await asyncio.sleep(0.05)
            for a in list(self.associations):
                a.abort_now("server stopping")
            for _ in range(40):
                if not self.associations:
                    break
                await asyncio.sleep(0.05)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(grace + 10)
        except Exception:
            log.exception("stopping the DIMSE acceptor")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self._thread = None
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.move_pool.shutdown(wait=False, cancel_futures=True)

    # -- connections -----------------------------------------------------------------------

    def _accept_ready(self) -> None:
        """The listening socket is readable: take ONE connection (asyncio's own server takes
        up to its backlog at once, so the first worker to wake took a whole burst of clients
        and the other worker idled). A worker holding more connections than another leaves new
        ones to the others, looking again every millisecond; after `_BALANCE_WAIT` it takes
        the connection anyway (the other worker may be stuck)."""
        if self._closing or self._sock is None:
            return
        if self.count.busier_than_another():
            now = self.loop.time()
            if self._deferred_since is None:
                self._deferred_since = now
            if now - self._deferred_since < _BALANCE_WAIT:
                self._pause_accepting(_BALANCE_POLL)
                return
        self._deferred_since = None
        try:
            conn, _addr = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:  # out of descriptors or buffers: try again shortly
            log.warning("cannot accept a connection: %s", exc.strerror or exc)
            self._pause_accepting(0.5)
            return
        conn.setblocking(False)
        self.connections += 1
        self.count.set_connections(self.connections)
        self.loop.create_task(self._serve_socket(conn))

    def _pause_accepting(self, seconds: float) -> None:
        assert self._sock is not None
        self.loop.remove_reader(self._sock.fileno())
        self.loop.call_later(seconds, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self._closing or self._sock is None:
            return
        if self._deferred_since is not None and not select.select([self._sock], [], [], 0)[0]:
            self._deferred_since = None  # another worker took what was waiting
        self.loop.add_reader(self._sock.fileno(), self._accept_ready)

    def _stop_accepting(self) -> None:
        if self._sock is not None:
            self.loop.remove_reader(self._sock.fileno())

    async def _serve_socket(self, conn: socket.socket) -> None:
        try:
            try:
                if self._tls is None:
                    reader, writer = await asyncio.open_connection(sock=conn, limit=2 * _CHUNK)
                else:  # the server side of the handshake, on the accepted socket
                    loop = asyncio.get_running_loop()
                    reader = asyncio.StreamReader(limit=2 * _CHUNK, loop=loop)
                    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
                    transport, _ = await loop.connect_accepted_socket(
                        lambda: protocol, conn, ssl=self._tls,
                        ssl_handshake_timeout=self.settings.artim_timeout)
                    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                if self._tls is not None:
                    # A peer that closed without a word (a port probe: serve's own readiness
                    # check at every start) is no failed handshake worth a line at INFO.
                    log.log(logging.DEBUG if isinstance(exc, ConnectionError) else logging.INFO,
                            "closing connection: TLS handshake failed (%s)",
                            getattr(exc, "reason", None) or type(exc).__name__)
                conn.close()
                return
            await self._on_connection(reader, writer, conn)
        finally:
            self.connections -= 1
            self.count.set_connections(self.connections)

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter, sock: socket.socket) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        if self._closing or self.pending >= self.settings.max_pending_connections:
            log.warning("too many pending connections; closing one from %s", peer[0])
            writer.transport.abort()
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending += 1
        try:
            rq = await self._read_associate_rq(reader, writer, peer)
        finally:
            self.pending -= 1
        if rq is None:
            return
        assoc = self._negotiate(rq, reader, writer, peer)
        if assoc is None:
            return
        assoc.sock = sock
        try:
            await assoc.run()
        finally:
            self.associations.discard(assoc)
            self.count.set(len(self.associations))

    async def _read_associate_rq(self, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter, peer: Any) -> _Proposal | None:
        """The A-ASSOCIATE-RQ, read within the ARTIM timeout (PS3.8 9.1.5), or None (closed).

        A proposal of the same bytes (but the AE titles) as one answered lately is not decoded
        again: it gets the same answer (see :class:`_Negotiated`).
        """
        host = str(peer[0])
        try:
            async with asyncio.timeout(self.settings.artim_timeout):
                header = await reader.readexactly(6)
                pdu_type, _, length = HEADER.unpack(header)
                if pdu_type != RQ_TYPE:
                    log.info("closing connection from %s: PDU type 0x%02X before association",
                             host, pdu_type)
                    writer.transport.abort()
                    return None
                if length > MAX_ASSOCIATE_RQ or length < MIN_ASSOCIATE_RQ:
                    log.info("closing connection from %s: A-ASSOCIATE-RQ length %d refused",
                             host, length)
                    await _send_and_close(writer, a_abort(2, ABORT_INVALID_PARAMETER))
                    return None
                body = await reader.readexactly(length)
        except TimeoutError:
            log.info("closing connection from %s: ARTIM timeout before A-ASSOCIATE-RQ", host)
            writer.transport.abort()
            return None
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            writer.transport.abort()
            return None
        if not body[1] & 0x01:
            # Protocol Version without bit 0 (version 1, the only one): the receiver "shall only
            # test that bit 0 is set" (PS3.8 9.3.2), and refuses it as
            # protocol-version-not-supported (permanent, service provider ACSE, reason 2).
            log.info("association from %s rejected: protocol version 0x%04X", host,
                     int.from_bytes(body[:2], "big"))
            await _send_and_close(writer, associate_rj(1, 2, 2))
            return None
        # The AE titles are checked on the raw bytes first (PS3.8 9.3.2: called at offset 4,
        # calling at 20 of the body), so a request that is refused anyway is never decoded.
        # NUL padding (older modalities send it) is read as the spaces it stands for; a title
        # with other characters outside the default repertoire, or a backslash (PS3.5 Table
        # 6.2-1, AE), is rejected as not recognized rather than aborted.
        titles = body[4:36].replace(b"\0", b" ")
        called = titles[:16].decode("ascii", "replace").strip(" ")
        calling = titles[16:].decode("ascii", "replace").strip(" ")
        verdict = self.check_aets(called, calling, host)
        if verdict is None:
            bad_called, bad_calling = (any(b < 0x20 or b > 0x7E or b == 0x5C for b in half)
                                       for half in (titles[:16], titles[16:]))
            if bad_called or bad_calling:
                log.info("association from %s rejected: %s AE title with characters an AE "
                         "title may not hold", host, "called" if bad_called else "calling")
                verdict = (1, 1, 7 if bad_called else 3)
        if verdict is None and titles != body[4:36]:
            body = body[:4] + titles + body[36:]
        if verdict is not None:
            log.info("association from %s@%s to %s rejected", calling, host, called)
            await _send_and_close(writer, associate_rj(*verdict))
            return None
        body = known_sub_items_only(body)  # ignored, as PS3.8 D.2 says (pynetdicom raises)
        header = HEADER.pack(RQ_TYPE, 0, len(body))
        # Everything after the AE titles and the reserved field: what the answer depends on.
        key = body[NEGOTIATED_FROM:]
        known = self._negotiated.get(key)
        if known is not None:
            self._negotiated.move_to_end(key)
            return _Proposal(called, calling, titles, key, None, known)
        try:
            pdu = A_ASSOCIATE_RQ()
            pdu.decode(header + body)
            primitive = pdu.to_primitive()
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the peer's
            log.info("closing connection from %s: malformed A-ASSOCIATE-RQ (%s)", host,
                     type(exc).__name__)
            await _send_and_close(writer, a_abort(2, ABORT_INVALID_PARAMETER))
            return None
        return _Proposal(str(primitive.called_ae_title).strip(),
                         str(primitive.calling_ae_title).strip(), titles, key, primitive, None)

    def _negotiate(self, proposal: _Proposal, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter, peer: Any) -> Association | None:
        host = str(peer[0])
        called, calling, rq = proposal.called, proposal.calling, proposal.rq
        verdict: tuple[int, int, int] | None = None
        # The AE titles were checked by _read_associate_rq, on the bytes these came from.
        if rq is not None and str(rq.application_context_name or "") != APPLICATION_CONTEXT:
            verdict = (1, 1, 2)  # application context name not supported
        if verdict is None and self.count.total() >= self.settings.max_associations:
            log.warning("association from %s@%s refused: %d associations already", calling, host,
                        self.count.total())
            verdict = (2, 3, 2)  # transient, service provider (presentation), local limit
        if verdict is not None:
            writer.write(associate_rj(*verdict))
            asyncio.ensure_future(_close_after_drain(writer))
            return None
        known = proposal.known
        if known is None:
            assert rq is not None
            try:
                contexts, roles, peer_max, async_ops = self._contexts(rq)
                ac = self._associate_ac(rq, contexts, roles, async_ops)
            except Exception as exc:  # noqa: BLE001
                log.info("association from %s@%s aborted: cannot negotiate (%s)", calling, host,
                         type(exc).__name__)
                writer.write(a_abort(2, ABORT_INVALID_PARAMETER))
                asyncio.ensure_future(_close_after_drain(writer))
                return None
            if 0 < peer_max < MIN_PEER_MAX_PDU:
                # Every message would go out in PDUs of a few bytes (none at all under 7):
                # refused, permanent, by the service user, no reason given (PS3.8 9.3.4).
                log.warning("association from %s@%s refused: Maximum Length %d is under %d "
                            "bytes", calling, host, peer_max, MIN_PEER_MAX_PDU)
                writer.write(associate_rj(1, 1, 1))
                asyncio.ensure_future(_close_after_drain(writer))
                return None
            known = _Negotiated({int(cx.context_id): cx for cx in contexts if cx.result == 0x00},
                                peer_max, ac)
            self._remember(proposal.key, known)
        accepted, peer_max = dict(known.accepted), known.peer_max
        # The AE title fields of the answer are those of the request (PS3.8 9.3.3).
        ac = known.ac[:AC_TITLES] + proposal.titles + known.ac[AC_TITLES + 32:]
        assoc = Association(self, reader, writer, peer, calling, called, accepted, peer_max)
        # Counted before the A-ASSOCIATE-AC leaves: a peer that has its AC may open the next
        # association at once, and the worker taking that one must see this one in the total.
        self.associations.add(assoc)
        self.count.set(len(self.associations))
        writer.write(ac)
        log.info("association accepted from %s@%s:%s (%d contexts)", calling, host, peer[1],
                 len(accepted))
        return assoc

    def _remember(self, key: bytes, known: _Negotiated) -> None:
        if len(key) > MAX_REMEMBERED_PROPOSAL:
            return
        self._negotiated[key] = known
        while len(self._negotiated) > REMEMBERED_PROPOSALS:
            self._negotiated.popitem(last=False)

    def _contexts(self, rq: A_ASSOCIATE) -> tuple[list[PresentationContext], list[Any], int,
                                                  bool]:
        """Negotiate contexts and roles (pynetdicom), then prefer the requestor's syntax order."""
        peer_max = 0
        async_ops = False
        rq_roles: dict[str, tuple[bool, bool]] = {}
        for item in rq.user_information:
            if isinstance(item, MaximumLengthNotification):
                peer_max = int(item.maximum_length_received or 0)
            elif isinstance(item, AsynchronousOperationsWindowNegotiation):
                async_ops = True
            elif isinstance(item, SCP_SCU_RoleSelectionNegotiation):
                rq_roles[str(item.sop_class_uid)] = (bool(item.scu_role), bool(item.scp_role))
        rq_contexts = rq.presentation_context_definition_list
        if not rq_contexts:
            raise ProtocolError("no presentation contexts proposed")
        ids = [cx.context_id for cx in rq_contexts]
        if len(set(ids)) != len(ids):
            # Each context's ID is unique within the association (PS3.8 9.3.2.2): a later one
            # of the same ID silently took the place of the first.
            raise ProtocolError("a presentation context ID proposed twice")
        # pynetdicom indexes every context it is given, per call: it gets those whose abstract
        # syntax is proposed (the others could not match), in our order.
        proposed_syntaxes = {cx.abstract_syntax for cx in rq_contexts}
        relevant = [cx for cx in self.supported if cx.abstract_syntax in proposed_syntaxes]
        result, ac_roles = negotiate_as_acceptor(rq_contexts, relevant, rq_roles)
        allowed = self._allowed
        by_id = {cx.context_id: cx for cx in rq_contexts}
        for cx in result:
            proposed = by_id.get(cx.context_id)
            if cx.result != 0x00 or proposed is None:
                continue
            for ts in proposed.transfer_syntax:
                if ts in allowed.get(cx.abstract_syntax, ()):
                    cx.transfer_syntax = [ts]
                    break
        return result, ac_roles, peer_max, async_ops

    def _associate_ac(self, rq: A_ASSOCIATE, contexts: list[PresentationContext],
                      roles: list[Any], async_ops: bool) -> bytes:
        ac = A_ASSOCIATE()
        ac.application_context_name = UID(APPLICATION_CONTEXT)
        ac.calling_ae_title = rq.calling_ae_title
        ac.called_ae_title = rq.called_ae_title
        ac.result = 0x00
        ac.result_source = 0x01
        ac.presentation_context_definition_results_list = contexts
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = self.settings.max_pdu
        impl_uid = ImplementationClassUIDNotification()
        impl_uid.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        impl_name = ImplementationVersionNameNotification()
        impl_name.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        info: list[Any] = [max_length, impl_uid, impl_name, *roles]
        if async_ops:
            window = AsynchronousOperationsWindowNegotiation()
            window.maximum_number_operations_invoked = 1
            window.maximum_number_operations_performed = 1
            info.append(window)
        ac.user_information = info
        return bytes(A_ASSOCIATE_AC(ac).encode())


#: At a stop, an association that read or wrote a PDU this many seconds ago is still running.
_RUNNING_WITHIN = 1.0

#: Where what an A-ASSOCIATE-RQ's answer depends on starts in its body (after the protocol
#: version, a reserved field, the called and calling AE titles and 32 reserved bytes: PS3.8
#: 9.3.2), and where the AE titles start in an A-ASSOCIATE-AC PDU (header included, 9.3.3).
NEGOTIATED_FROM = 68
AC_TITLES = 10
#: How many answered proposals are remembered, and the largest remembered (bytes after the
#: titles; DCMTK's storescu proposes ~15 KB).
REMEMBERED_PROPOSALS = 32
MAX_REMEMBERED_PROPOSAL = 32 * 1024


@dataclass(frozen=True)
class _Negotiated:
    """The outcome of negotiating one proposal: the accepted presentation contexts (by ID),
    the requestor's Maximum Length, the A-ASSOCIATE-AC sent.

    A modality or a viewer proposes the same contexts, roles and user information every time
    it connects: decoding and negotiating them again (pynetdicom checks every UID of every
    context) was ~1 ms of CPU per association. The answer depends on nothing else (our
    settings do not change while we run; the AE titles and ``max_associations`` are checked
    for each association), so an identical proposal is answered from here: the same contexts
    (read-only, shared by the associations), the same A-ASSOCIATE-AC but for its AE titles.
    """

    accepted: dict[int, PresentationContext]
    peer_max: int
    ac: bytes


@dataclass(frozen=True)
class _Proposal:
    """A received A-ASSOCIATE-RQ whose AE titles passed: decoded (`rq`), or answered before
    (`known`). `titles`: its called and calling AE title fields (32 bytes, NUL as space);
    `key`: the rest of it after the titles (what :class:`_Negotiated` is remembered by)."""

    called: str
    calling: str
    titles: bytes
    key: bytes
    rq: A_ASSOCIATE | None
    known: _Negotiated | None


async def _send_and_close(writer: asyncio.StreamWriter, data: bytes) -> None:
    try:
        writer.write(data)
        async with asyncio.timeout(2):
            await writer.drain()
    except (TimeoutError, ConnectionError, OSError):
        pass
    writer.transport.abort()


def _cut(transport: asyncio.BaseTransport) -> None:
    """Close a connection at once, dropping what it had yet to send (after an A-ABORT the peer
    did not take in time)."""
    with contextlib.suppress(Exception):
        transport.abort()  # type: ignore[attr-defined]


async def _close_after_drain(writer: asyncio.StreamWriter) -> None:
    try:
        async with asyncio.timeout(5):
            await writer.drain()
            writer.close()
            await writer.wait_closed()
    except (TimeoutError, ConnectionError, OSError):
        writer.transport.abort()


class Association:
    """One established association: a reader, a performer, a timer."""

    def __init__(self, acceptor: Acceptor, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: Any, calling: str, called: str,
                 accepted: dict[int, PresentationContext], peer_max: int) -> None:
        self.acceptor = acceptor
        self.settings = acceptor.settings
        self.loop = acceptor.loop
        self.reader = reader
        self.writer = writer
        self.sock: socket.socket | None = None  # the accepted socket (set by the acceptor)
        self.address = str(peer[0])
        self.port = int(peer[1]) if len(peer) > 1 else 0
        self.calling = calling
        self.called = called
        self.accepted = accepted
        self.peer_max = peer_max
        self.send_max = min(peer_max or _SEND_CAP, _SEND_CAP)
        self.recv_cap = self.settings.max_pdu + 64
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)
        self.cancelled: set[int] = set()
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.busy = False
        self.releasing = False  # the peer sent A-RELEASE-RQ
        self.idle = asyncio.Event()
        self.current: Message | None = None
        self.last_activity = self.loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._closed = False
        self._aborting = False  # abort_now was called: the A-ABORT is on its way
        self._sending = 0  # writes waiting for the socket to drain (see send)
        self._next_message_id = 1
        self.stored = 0  # C-STOREs answered with success or warning, and with a failure
        self.refused = 0

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        performer = asyncio.ensure_future(self._perform())
        self._reader_task = asyncio.current_task()  # type: ignore[assignment]
        self._arm()
        reason = None
        try:
            await self._read_loop()
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
            log.warning("association with %s@%s aborted: %s", self.calling, self.address, exc)
            await self._abort(exc.reason)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            reason = "connection lost"
        except asyncio.CancelledError:
            reason = "timeout or shutdown"
        finally:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            performer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await performer
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("association ended"))
            if self.current is not None and self.current.sink is not None:
                self.current.sink.close()
            while not self.queue.empty():
                m = self.queue.get_nowait()
                if m.sink is not None:
                    m.sink.close()
            if not self.writer.transport.is_closing():
                self.writer.transport.abort()
            if reason:
                log.info("association with %s@%s ended: %s%s", self.calling, self.address, reason,
                         self.store_summary())

    def store_summary(self) -> str:
        """``" (N stored, M refused)"`` for the log line that ends an association that
        carried C-STOREs (each object is logged at DEBUG only), else empty."""
        if not (self.stored or self.refused):
            return ""
        return f" ({self.stored} stored, {self.refused} refused)"

    def abort_now(self, why: str) -> None:
        """Send an A-ABORT and stop (from the loop).

        The A-ABORT goes after what is already waiting to be sent, and the connection is
        closed once it has gone; a peer that takes none of it (it stopped reading) has the
        connection cut after the ARTIM timeout (PS3.8 9.2, AA-1 then AA-2 in Sta13)."""
        if self._closed or self._aborting:
            return
        self._aborting = True
        log.info("aborting association with %s@%s: %s", self.calling, self.address, why)
        transport = self.writer.transport
        try:
            self.writer.write(a_abort(2, 0))
        except (ConnectionError, OSError, RuntimeError):
            pass
        transport.close()
        self.loop.call_later(self.settings.artim_timeout, _cut, transport)
        if self._reader_task is not None:
            self._reader_task.cancel()

    async def _abort(self, reason: int) -> None:
        try:
            self.writer.write(a_abort(2, reason))
            async with asyncio.timeout(2):
                await self.writer.drain()
        except (TimeoutError, ConnectionError, OSError, RuntimeError):
            pass  # RuntimeError: uvloop's transport was closed (the peer reset meanwhile)

    # -- the timer -------------------------------------------------------------------------

    def _arm(self) -> None:
        self._timer = self.loop.call_at(self.last_activity + self._timeout(), self._on_timer)

    def _timeout(self) -> float:
        if self.current is not None or self.waiting:
            return self.settings.dimse_timeout
        return self.settings.network_timeout

    def _on_timer(self) -> None:
        if self._closed:
            return
        if (self.busy and not self.waiting) or self._sending:
            # An operation is running (a long C-FIND, C-MOVE): the peer may be silent meanwhile.
            # Or we are sending (a large object of a C-GET to a slow link): the peer is reading,
            # and a write it takes nothing of is aborted by send itself; the wait for its answer
            # starts once the request has gone.
            self.last_activity = self.loop.time()
        deadline = self.last_activity + self._timeout()
        if deadline > self.loop.time():
            self._timer = self.loop.call_at(deadline, self._on_timer)
            return
        self.abort_now("timeout")

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, n: int) -> bytes:
        data = await self.reader.readexactly(n)
        self.last_activity = self.loop.time()
        return data

    async def _read_loop(self) -> None:
        quick_ack = quick_ack_for(self.sock)
        while True:
            header = await self._next_header()
            quick_ack()
            pdu_type, _, length = HEADER.unpack(header)
            if pdu_type == P_DATA_TF:
                if length > self.recv_cap:
                    raise ProtocolError(f"P-DATA-TF of {length} bytes, over the negotiated "
                                        f"maximum of {self.settings.max_pdu}",
                                        ABORT_INVALID_PARAMETER)
                await self._read_pdata(length)
            elif pdu_type == A_RELEASE_RQ:
                if length != 4:
                    raise ProtocolError("A-RELEASE-RQ of wrong length")
                await self._read(length)
                self.releasing = True
                for fut in self.waiting.values():
                    if not fut.done():
                        fut.set_exception(ReleaseRequested("the peer requested release"))
                await self._release()
                return
            elif pdu_type == A_ABORT:
                if length <= 1024:
                    await self._read(length)
                log.info("association with %s@%s aborted by the peer", self.calling,
                         self.address)
                return
            elif pdu_type in (0x01, 0x02, 0x03, 0x06):
                raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X}", ABORT_UNEXPECTED_PDU)
            else:
                raise ProtocolError(f"unrecognised PDU type 0x{pdu_type:02X}",
                                    ABORT_UNRECOGNIZED_PDU)

    async def _next_header(self) -> bytes:
        msg = self.current
        if (msg is None or msg.msg is None or not isinstance(msg.sink, MemorySink)
                or msg.sink.buf or msg.command_field not in _OPTIONAL_DATA_SET):
            return await self._read(6)
        try:
            return await asyncio.wait_for(self._read(6), EMPTY_DATA_SET_GRACE)
        except TimeoutError:
            # The data set announced never came: an empty one (see _OPTIONAL_DATA_SET).
            log.debug("request 0x%04X from %s: announced data set not sent, taken as empty",
                      msg.command_field, self.calling)
            msg.complete = True
            self.current = None
            await self._dispatch(msg)
            return await self._read(6)

    async def _read_pdata(self, length: int) -> None:
        remaining = length
        if remaining < 6:
            raise ProtocolError("P-DATA-TF without a PDV item")
        while remaining > 0:
            if remaining < 6:
                raise ProtocolError("truncated PDV item")
            item_len, cx_id, control = ITEM.unpack(await self._read(6))
            if item_len < 2 or item_len + 4 > remaining:
                raise ProtocolError(f"PDV item length {item_len} does not fit the PDU")
            remaining -= 4 + item_len
            if cx_id not in self.accepted:
                raise ProtocolError(f"PDV on presentation context {cx_id}, not accepted")
            size = item_len - 2
            msg = self.current
            if msg is None:
                msg = self.current = Message()
            if control & 0x01:
                if size > MAX_COMMAND_SET:
                    raise ProtocolError("command fragment too large")
                msg.add_command(cx_id, await self._read(size) if size else b"",
                                bool(control & 0x02))
                if msg.msg is not None and msg.has_dataset and msg.sink is None:
                    msg.sink = self._sink_for(msg)
            else:
                if msg.msg is None or msg.sink is None:
                    raise ProtocolError("data set fragment before its command set")
                if cx_id != msg.context_id:
                    raise ProtocolError("data set fragment on another presentation context")
                sink = msg.sink
                while size:
                    chunk = await self._read(min(size, _CHUNK))
                    size -= len(chunk)
                    if isinstance(sink, FileSink) and sink.over_cap(len(chunk)):
                        continue  # over max_object_size: read to its end, refused with 0xA700
                    sink.write(chunk)
                    if sink.needs_flush():
                        await to_the_end(self.loop.run_in_executor(self.acceptor.pool,
                                                                   sink.flush))  # type: ignore[union-attr]
                if control & 0x02:
                    msg.complete = True
            if msg.complete:
                self.current = None
                await self._dispatch(msg)

    def _sink_for(self, msg: Message) -> FileSink | MemorySink:
        assert msg.msg is not None and msg.context_id is not None
        if msg.command_field != _C_STORE_RQ:
            return MemorySink()
        cs: Any = msg.msg.command_set
        cx = self.accepted[msg.context_id]
        try:
            prefix = file_meta_prefix(str(cs.AffectedSOPClassUID),
                                      str(cs.AffectedSOPInstanceUID), str(cx.transfer_syntax[0]))
        except Exception:  # noqa: BLE001 - unusable UIDs: the store refuses it with a status
            prefix = file_meta_prefix(str(cx.abstract_syntax), "1.2", str(cx.transfer_syntax[0]))
        return FileSink(self.settings.tmp_dir, prefix, cap=self.settings.max_object_size)

    async def _dispatch(self, msg: Message) -> None:
        field = msg.command_field
        if field == _C_CANCEL_RQ:
            cs = msg.msg.command_set  # type: ignore[union-attr]
            self.cancelled.add(int(cs.get("MessageIDBeingRespondedTo", -1)))
            return
        if field & 0x8000:
            cs = msg.msg.command_set  # type: ignore[union-attr]
            fut = self.waiting.pop(int(cs.get("MessageIDBeingRespondedTo", -1)), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            else:
                log.warning("unexpected DIMSE response 0x%04X from %s", field, self.calling)
            if msg.sink is not None:
                msg.sink.close()
            return
        msg.primitive = msg.primitive_of()
        if not getattr(msg.primitive, "is_valid_request", False):
            raise ProtocolError(f"DIMSE request 0x{field:04X} lacks required command elements",
                                ABORT_INVALID_PARAMETER)
        # A Message ID may be used again once its operation has ended (PS3.7 9.3.1.1):
        # a C-CANCEL of an earlier operation with this ID (one that came after it ended too)
        # is not this one's. (pynetdicom's requestor numbers every request 1.) Read from the
        # checked request: a malformed command set (a Message ID of two values) is refused
        # above, not turned into a traceback here.
        message_id = getattr(msg.primitive, "MessageID", None)
        if isinstance(message_id, int):
            self.cancelled.discard(message_id)
        try:
            await self.queue.put(msg)
        except asyncio.CancelledError:
            # The association ends while the request waits for room in the queue (one is
            # performed, one waits: the requestor went past the window of 1): it is in neither
            # `current` nor the queue, which run() cleans up, so its temporary file goes here.
            if msg.sink is not None:
                msg.sink.close()
            raise

    async def _perform(self) -> None:
        while True:
            msg = await self.queue.get()
            self.busy = True
            try:
                await self.acceptor.services.perform(self, msg)
            except (ConnectionError, OSError):
                self.abort_now("connection lost while answering")
                return
            except asyncio.CancelledError:
                raise
            except ProtocolError as exc:
                log.warning("association with %s@%s aborted: %s", self.calling, self.address,
                            exc)
                self.abort_now("protocol error")
                return
            except Exception:
                log.exception("DIMSE request from %s failed", self.calling)
                self.abort_now("internal error")
                return
            finally:
                if msg.sink is not None:
                    msg.sink.close()
                self.busy = False
                self.last_activity = self.loop.time()
                self.idle.set()

    async def _release(self) -> None:
        """A-RELEASE-RQ: answer once the running request (if any) is done (PS3.8 7.2). Its
        responses may still go out (state Sta8); a C-GET sends no more sub-operations and
        counts those left as failed, since the peer can no longer answer them."""
        while self.busy or not self.queue.empty():
            self.idle.clear()
            await self.idle.wait()
        self.writer.write(A_RELEASE_RP_PDU)
        try:
            async with asyncio.timeout(self.settings.acse_timeout):
                await self.writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        log.info("association with %s@%s released%s", self.calling, self.address,
                 self.store_summary())
        self.writer.close()

    # -- writing ---------------------------------------------------------------------------

    async def send(self, pdus: list[bytes]) -> None:
        """Write PDUs and wait until the socket drains (back-pressure).

        A peer that takes nothing of what waits for it for ``dimse_timeout`` seconds (it
        stopped reading the responses of a C-FIND, a C-MOVE...) has the association aborted:
        waiting for it as long as it likes held the association, and what the operation holds
        (an index cursor, a C-MOVE's association to its destination), for ever. A slow reader
        is waited for while it takes bytes.

        Raises
        ------
        ConnectionError
            The association is closed, or was aborted here (:class:`WriteStalled`).
        """
        if self._closed or self._aborting:
            if isinstance(pdus, StreamedMessage):
                pdus.close()
            raise ConnectionError("association closed")
        self._sending += 1
        try:
            # a StreamedMessage: read from its file as sent
            await write_pdus(self.writer, pdus, stall=self.settings.dimse_timeout)
        except WriteStalled as exc:
            self.abort_now(f"the peer does not read ({exc})")
            raise
        finally:
            self._sending -= 1
        self.last_activity = self.loop.time()

    def new_message_id(self) -> int:
        mid = self._next_message_id
        self._next_message_id = mid % 65535 + 1
        return mid

    async def request(self, pdus: list[bytes], message_id: int) -> Message:
        """Send a request to the peer (C-STORE of a C-GET, N-EVENT-REPORT) and wait for its
        response, at most ``dimse_timeout`` seconds."""
        if self.releasing:
            raise ReleaseRequested("the peer requested release")
        fut: asyncio.Future[Message] = self.loop.create_future()
        self.waiting[message_id] = fut
        try:
            await self.send(pdus)
            async with asyncio.timeout(self.settings.dimse_timeout):
                return await fut
        finally:
            self.waiting.pop(message_id, None)
