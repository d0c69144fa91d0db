"""The DIMSE listener: the event-driven acceptor (:mod:`archivist.dimse.acceptor`) with the
archive's handlers bound.

Services (SCP): Verification; Storage for every storage SOP class pynetdicom knows, with every
transfer syntax it knows (stored byte for byte, never transcoded); Query/Retrieve Patient Root and
Study Root, FIND/MOVE/GET; and every extra service registered through
:mod:`archivist.dimse.services` (a presentation context per registered SOP class; C-FIND/C-MOVE/
C-GET dispatched inside :class:`~archivist.dimse.handlers.Handlers`, N-* requests through
``Handlers.handle_n``).
"""

from __future__ import annotations

import logging
import resource
import socket
import time
from collections.abc import Iterable

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import _STORAGE_CLASSES  # type: ignore[attr-defined]

from archivist.archive.archive import Archive
from archivist.config import Settings
from archivist.dimse.acceptor import Acceptor, AssociationCount
from archivist.dimse.acceptor_services import Services
from archivist.dimse.handlers import Handlers
from archivist.dimse.services import Service

log = logging.getLogger("archivist.dimse")

VERIFICATION = "1.2.840.10008.1.1"
QR_MODELS = [
    "1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.1.3",
    "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.2.2", "1.2.840.10008.5.1.4.1.2.2.3",
]


#: Storage SOP Classes pynetdicom 3.0.4 leaves out of its list: retired ones that older
#: modalities still send (PS3.4 Annex B: ultrasound and nuclear medicine before 1993, the trial
#: SR and VL classes...), and current ones of other domains whose objects have a patient, study
#: and series (DICOS, eddy current, defined procedure protocols). Orthanc and dcm4chee accept
#: them; STOW-RS and import always did.
MORE_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.5",  # Nuclear Medicine Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.8",  # Standalone Overlay Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.9",  # Standalone Curve Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.9.1",  # Waveform Storage - Trial (Retired)
    "1.2.840.10008.5.1.4.1.1.10",  # Standalone Modality LUT Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.11",  # Standalone VOI LUT Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.12.3",  # X-Ray Angiographic Bi-Plane Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.77.1",  # VL Image Storage - Trial (Retired)
    "1.2.840.10008.5.1.4.1.1.77.2",  # VL Multi-frame Image Storage - Trial (Retired)
    "1.2.840.10008.5.1.4.1.1.88.1",  # Text SR Storage - Trial (Retired)
    "1.2.840.10008.5.1.4.1.1.88.2",  # Audio SR Storage - Trial (Retired)
    "1.2.840.10008.5.1.4.1.1.88.3",  # Detail SR Storage - Trial (Retired)
    "1.2.840.10008.5.1.4.1.1.88.4",  # Comprehensive SR Storage - Trial (Retired)
    "1.2.840.10008.5.1.4.1.1.129",  # Standalone PET Curve Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.200.1",  # CT Defined Procedure Protocol Storage
    "1.2.840.10008.5.1.4.1.1.200.3",  # Protocol Approval Storage
    "1.2.840.10008.5.1.4.1.1.200.7",  # XA Defined Procedure Protocol Storage
    "1.2.840.10008.5.1.4.1.1.501.1",  # DICOS CT Image Storage
    "1.2.840.10008.5.1.4.1.1.501.2.1",  # DICOS Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.501.2.2",  # DICOS Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.501.3",  # DICOS Threat Detection Report Storage
    "1.2.840.10008.5.1.4.1.1.501.4",  # DICOS 2D AIT Storage
    "1.2.840.10008.5.1.4.1.1.501.5",  # DICOS 3D AIT Storage
    "1.2.840.10008.5.1.4.1.1.501.6",  # DICOS Quadrupole Resonance (QR) Storage
    "1.2.840.10008.5.1.4.1.1.601.1",  # Eddy Current Image Storage
    "1.2.840.10008.5.1.4.1.1.601.2",  # Eddy Current Multi-frame Image Storage
)


def storage_classes() -> list[str]:
    """Every Storage SOP Class the acceptor takes (C-STORE, and C-GET's sub-operations)."""
    return list(dict.fromkeys([*_STORAGE_CLASSES.values(), *MORE_STORAGE_CLASSES]))


def configure_pynetdicom(settings: Settings) -> None:
    """Process-wide pynetdicom settings (its SCU side still runs C-MOVE sub-operations)."""
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    _config.STORE_SEND_CHUNKED_DATASET = False
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def raise_fd_limit() -> None:
    """Idle and pending connections each hold a descriptor: allow as many as the system does."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


def build_ae(settings: Settings, extra: Iterable[Service] = ()) -> AE:
    """An AE holding the presentation contexts we accept (pynetdicom's context model).

    Storage classes are accepted with both roles, so a C-GET requestor can take the SCP role
    (PS3.4 C.4.3, PS3.7 D.3.3.4).
    """
    ae = AE(ae_title=settings.aet)
    ae.maximum_pdu_size = settings.max_pdu
    syntaxes = list(ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION, syntaxes)
    for uid in storage_classes():
        ae.add_supported_context(uid, syntaxes, scu_role=True, scp_role=True)
    for uid in QR_MODELS:
        ae.add_supported_context(uid, syntaxes)
    for uid in dict.fromkeys(s.sop_class for s in extra):
        ae.add_supported_context(uid, syntaxes)
    return ae


def supported_contexts(settings: Settings, extra: Iterable[Service] = ()
                       ) -> list[PresentationContext]:
    return list(build_ae(settings, extra).supported_contexts)


#: Command Field of the DIMSE-C requests (PS3.7 E.1), by the names services register under.
_COMMAND_FIELDS = {"C-STORE": 0x0001, "C-GET": 0x0010, "C-FIND": 0x0020, "C-MOVE": 0x0021,
                   "C-ECHO": 0x0030}


def operations(extra: Iterable[Service] = ()) -> dict[str, frozenset[int]]:
    """Per SOP Class we accept, the DIMSE-C requests (Command Field) it defines: C-ECHO for
    Verification, C-STORE for the Storage classes, C-FIND / C-MOVE / C-GET for each model (PS3.4
    C.6.1 / C.6.2), and what the extra services register. A request of another kind on that
    SOP Class's context is refused (see :meth:`Services.perform`)."""
    ops: dict[str, set[int]] = {VERIFICATION: {0x0030}}
    for uid in storage_classes():
        ops.setdefault(uid, set()).add(0x0001)
    for uid in QR_MODELS:
        ops.setdefault(uid, set()).add({"1": 0x0020, "2": 0x0021, "3": 0x0010}[uid[-1]])
    for service in extra:
        field = _COMMAND_FIELDS.get(service.message)
        if field is not None:
            ops.setdefault(service.sop_class, set()).add(field)
    return {uid: frozenset(fields) for uid, fields in ops.items()}


class DimseServer:
    """Runs the DIMSE acceptor (its event loop in a background thread).

    Parameters
    ----------
    archive
        The archive whose ingest, search and retrieve the handlers call.
    """

    def __init__(self, archive: Archive, *, listen_socket: socket.socket | None = None,
                 count: AssociationCount | None = None) -> None:
        self.archive = archive
        self.settings = archive.settings
        self.handlers = Handlers(archive)
        self.acceptor: Acceptor | None = None
        self.listen_socket = listen_socket
        self.count = count

    @property
    def port(self) -> int:
        assert self.acceptor is not None
        return self.acceptor.port

    def _check_aets(self, called: str, calling: str, host: str) -> tuple[int, int, int] | None:
        """None to admit, else the A-ASSOCIATE-RJ (result, source, reason) of PS3.8 9.3.4."""
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
        """Bind and start serving; raises :class:`OSError` when the port cannot be bound."""
        configure_pynetdicom(self.settings)
        raise_fd_limit()
        contexts = supported_contexts(self.settings, self.handlers.extra)
        services = Services(self.handlers, operations(self.handlers.extra))
        self.acceptor = Acceptor(self.settings, services, contexts,
                                 self._check_aets, listen_socket=self.listen_socket,
                                 count=self.count)
        self.acceptor.start()

    def quiet_for(self) -> float:
        """Seconds without an open association, across the workers that share the port."""
        acceptor = self.acceptor
        return acceptor.count.quiet_for() if acceptor is not None else float("inf")

    def wait_listening(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let running associations finish for `grace` seconds, abort the rest."""
        if self.acceptor is not None:
            self.acceptor.stop(grace)
            self.acceptor = None
