"""The DIMSE listener: pynetdicom's acceptor behind our gate, with the archive's handlers bound.

Services (SCP): Verification; Storage for every storage SOP class pynetdicom knows, with every
transfer syntax it knows (stored byte for byte, never transcoded); Query/Retrieve Patient Root and
Study Root, FIND/MOVE/GET.
"""

from __future__ import annotations

import functools
import logging
import resource
import socket
import tempfile
import threading
import time
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, _config, evt
from pynetdicom.sop_class import _STORAGE_CLASSES  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from archivist.archive.archive import Archive
from archivist.config import Settings
from archivist.dimse.gate import Gate, install_pdu_cap
from archivist.dimse.handlers import Handlers
from archivist.dimse.services import Service

log = logging.getLogger("archivist.dimse")

VERIFICATION = "1.2.840.10008.1.1"
QR_MODELS = [
    "1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.1.3",
    "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.2.2", "1.2.840.10008.5.1.4.1.2.2.3",
]


def configure_pynetdicom(settings: Settings) -> None:
    """Process-wide pynetdicom settings Archivist relies on."""
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.STORE_SEND_CHUNKED_DATASET = False
    # Incoming C-STORE data sets stream to a temporary file in our data directory, so that the
    # ingest pipeline can move it into the blob store without copying.
    import pynetdicom.dimse_messages as dm

    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    dm.NamedTemporaryFile = functools.partial(  # type: ignore[attr-defined]
        tempfile.NamedTemporaryFile, dir=str(settings.tmp_dir)
    )
    install_pdu_cap(max(settings.max_pdu, 1024 * 1024) + 64)
    _prefer_requestor_order()
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def _prefer_requestor_order() -> None:
    """Pick, in each accepted context, the requestor's most preferred transfer syntax.

    pynetdicom picks the first syntax in the *acceptor's* list; a modality sending a compressed
    file lists its own syntax first, and storing byte for byte means taking that one (PS3.8
    9.3.2.2: the requestor lists transfer syntaxes in order of preference).
    """
    import pynetdicom.acse as acse

    if getattr(acse, "_archivist_order", False):
        return
    original = acse.negotiate_as_acceptor

    def negotiate(rq_contexts: Any, ac_contexts: Any, roles: Any = None) -> Any:
        result, ac_roles = original(rq_contexts, ac_contexts, roles)
        supported = {cx.abstract_syntax: set(cx.transfer_syntax) for cx in ac_contexts}
        by_id = {cx.context_id: cx for cx in rq_contexts}
        for cx in result:
            rq = by_id.get(cx.context_id)
            if cx.result != 0x00 or rq is None:
                continue
            allowed = supported.get(cx.abstract_syntax, set())
            for ts in rq.transfer_syntax:
                if ts in allowed:
                    cx.transfer_syntax = [ts]
                    break
        return result, ac_roles

    acse.negotiate_as_acceptor = negotiate  # type: ignore[assignment]
    acse._archivist_order = True  # type: ignore[attr-defined]


def raise_fd_limit() -> None:
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


class _GatedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, except that connections wait in the gate first."""

    request_queue_size = 1024
    daemon_threads = True
    gate: Gate

    def process_request(self, request: Any, client_address: Any) -> None:  # noqa: D401
        self.gate.admit(request, client_address)

    def hand_over(self, request: Any, client_address: Any) -> None:
        timeout = self.ae.network_timeout
        if timeout:
            request.settimeout(timeout)
        ThreadedAssociationServer.process_request(self, request, client_address)


_N_EVENTS = {
    "N-ACTION": evt.EVT_N_ACTION, "N-GET": evt.EVT_N_GET, "N-SET": evt.EVT_N_SET,
    "N-CREATE": evt.EVT_N_CREATE, "N-DELETE": evt.EVT_N_DELETE,
    "N-EVENT-REPORT": evt.EVT_N_EVENT_REPORT,
}


def build_ae(settings: Settings, extra: list[Service] = ()) -> AE:  # type: ignore[assignment]
    ae = AE(ae_title=settings.aet)
    ae.maximum_associations = settings.max_associations
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.maximum_pdu_size = settings.max_pdu
    ae.require_called_aet = True
    syntaxes = list(ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION, syntaxes)
    for uid in _STORAGE_CLASSES.values():
        ae.add_supported_context(uid, syntaxes, scu_role=True, scp_role=True)
    for uid in QR_MODELS:
        ae.add_supported_context(uid, syntaxes)
    for uid in dict.fromkeys(s.sop_class for s in extra):
        ae.add_supported_context(uid, syntaxes)
    return ae


class DimseServer:
    """Runs the DIMSE acceptor in background threads.

    Parameters
    ----------
    archive
        The archive whose ingest, search and retrieve the handlers call.
    """

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.settings = archive.settings
        self.handlers = Handlers(archive)
        self.ae: AE | None = None
        self.server: _GatedServer | None = None
        self.gate: Gate | None = None
        self._thread: threading.Thread | None = None
        self.acceptor: Any = None

    @property
    def port(self) -> int:
        if self.acceptor is not None:
            return self.acceptor.port
        assert self.server is not None
        return int(self.server.server_address[1])

    def _check_aets(self, called: str, calling: str, host: str) -> tuple[int, int, int] | None:
        if called != self.settings.aet:
            log.warning("association from %s@%s for unknown called AE %r", calling, host, called)
            return (1, 1, 7)
        if not calling:
            return (1, 1, 3)
        if not self.settings.is_allowed(calling, host):
            log.warning("association from %s@%s refused: not on the allow-list", calling, host)
            return (1, 1, 3)
        return None

    def start(self) -> None:
        configure_pynetdicom(self.settings)
        raise_fd_limit()
        if self.settings.dimse_engine == "asyncio":
            self._start_asyncio()
            return
        h = self.handlers
        ae = build_ae(self.settings, h.extra)
        handlers = [
            (evt.EVT_C_ECHO, h.handle_echo),
            (evt.EVT_C_STORE, h.handle_store),
            (evt.EVT_C_FIND, h.handle_find),
            (evt.EVT_C_MOVE, h.handle_move),
            (evt.EVT_C_GET, h.handle_get),
            (evt.EVT_ACCEPTED, _log_accepted),
            (evt.EVT_ABORTED, _log_aborted),
        ]
        for message in dict.fromkeys(s.message for s in h.extra):
            if message in _N_EVENTS:
                handlers.append((_N_EVENTS[message], functools.partial(h.handle_n, message)))
        server = ae.make_server(
            (self.settings.host, self.settings.dicom_port),
            evt_handlers=handlers,
            server_class=_GatedServer,
        )
        server.gate = Gate(
            server.hand_over, self._check_aets,
            artim_timeout=self.settings.artim_timeout,
            max_pending=self.settings.max_pending_connections,
        )
        server.gate.start()
        ae._servers.append(server)
        self.ae, self.server, self.gate = ae, server, server.gate
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="dimse-accept",
            daemon=True,
        )
        self._thread.start()

    def _start_asyncio(self) -> None:
        """The event-driven acceptor (:mod:`archivist.dimse.acceptor`) with the same contexts,
        checks and handlers."""
        from archivist.dimse.acceptor import Acceptor
        from archivist.dimse.acceptor_services import Services

        ae = build_ae(self.settings, self.handlers.extra)
        self.acceptor = Acceptor(self.settings, Services(self.handlers),
                                 list(ae.supported_contexts), self._check_aets)
        self.acceptor.start()

    def wait_listening(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1" if self.settings.host in
                                               ("0.0.0.0", "") else self.settings.host,
                                               self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let running associations finish for `grace` seconds, abort the rest."""
        if self.acceptor is not None:
            self.acceptor.stop(grace)
            self.acceptor = None
            return
        if self.server is None or self.ae is None:
            return
        server, ae = self.server, self.ae
        server.shutdown()  # stops serve_forever, closes the listening socket
        if self.gate is not None:
            self.gate.stop()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not [a for a in ae.active_associations if a.is_alive()]:
                break
            time.sleep(0.1)
        for assoc in ae.active_associations:
            try:
                assoc.abort()
            except Exception:  # noqa: BLE001
                pass
        self.server = None


def _log_accepted(event: Any) -> None:
    r = event.assoc.requestor
    log.info("association accepted from %s@%s:%s", str(r.ae_title).strip(), r.address, r.port)


def _log_aborted(event: Any) -> None:
    r = event.assoc.requestor
    log.info("association aborted with %s@%s", str(r.ae_title).strip(), r.address)
