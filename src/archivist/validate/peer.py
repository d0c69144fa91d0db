"""Conformance probe of a remote DICOM node, in the manner of DVTk's SCU emulators.

:func:`probe_peer` opens associations as an SCU (pynetdicom, imported when the probe runs) and
checks, against PS3.4, PS3.7 and PS3.8:

* association negotiation (PS3.8 9.3): which SOP Classes and Transfer Syntaxes are accepted, the
  peer's maximum PDU length and implementation identification, and whether an unknown Called AE
  Title is rejected;
* Verification (PS3.4 A, PS3.7 9.1.5): C-ECHO status;
* Storage (PS3.4 B.2.3): C-STORE of a generated Secondary Capture object and its status;
* Query (PS3.4 C.4.1, C.6.1, C.6.2): C-FIND at PATIENT, STUDY, SERIES and IMAGE level; every
  response identifier is checked for the requested Required/Unique keys, the Query/Retrieve
  Level, matching actually applied (single value, wildcard, no match), its character set and
  the VR/VM of its values; with nothing stored, a query that returns no identifier is skipped
  (there is nothing to check), but for the "no match" query, which tests matching;
* Retrieve (PS3.4 C.4.2, C.4.3): C-MOVE of the stored object to our own Storage SCP and C-GET
  of it on the same association, with sub-operation counts;
* every status code is checked to be defined for its service (PS3.4 Annex B/C, PS3.7 Annex C).

The probe never leaves data behind on purpose, but C-STORE adds one object (patient ID
``ARCHIVIST-PROBE-...``) to the peer; use ``store=False`` for read-only probing.
"""

from __future__ import annotations

import contextlib
import fnmatch
import secrets
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from archivist.core.pynetdicom_race import install as install_scu_guard
from archivist.validate.dictionary import ElementChecker
from archivist.validate.findings import Collector, Severity

PASS, FAIL, WARN, SKIP, INFO = "pass", "fail", "warn", "skip", "info"

VERIFICATION = "1.2.840.10008.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

# Storage SOP Classes proposed (PS3.4 B.5): the common image and document classes.
STORAGE_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.128": "PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.20": "NM Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
}
QUERY_CLASSES: dict[str, str] = {
    PATIENT_ROOT_FIND: "Patient Root Q/R - FIND",
    PATIENT_ROOT_MOVE: "Patient Root Q/R - MOVE",
    PATIENT_ROOT_GET: "Patient Root Q/R - GET",
    STUDY_ROOT_FIND: "Study Root Q/R - FIND",
    STUDY_ROOT_MOVE: "Study Root Q/R - MOVE",
    STUDY_ROOT_GET: "Study Root Q/R - GET",
}
# Transfer syntaxes tried one per presentation context with CT Image Storage (PS3.5 10, A).
PROBED_TRANSFER_SYNTAXES: dict[str, str] = {
    ImplicitVRLittleEndian: "Implicit VR Little Endian",
    ExplicitVRLittleEndian: "Explicit VR Little Endian",
    ExplicitVRBigEndian: "Explicit VR Big Endian (retired)",
    DeflatedExplicitVRLittleEndian: "Deflated Explicit VR Little Endian",
    JPEGBaseline8Bit: "JPEG Baseline (Process 1)",
    JPEGLosslessSV1: "JPEG Lossless SV1",
    JPEGLSLossless: "JPEG-LS Lossless",
    JPEG2000Lossless: "JPEG 2000 Lossless",
    RLELossless: "RLE Lossless",
}
NATIVE: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

# Required (R) and Unique (U) keys of the Q/R information models (PS3.4 C.6.1.1, C.6.2.1).
LEVEL_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientName", "PatientID"),
    "STUDY": ("StudyDate", "StudyTime", "AccessionNumber", "PatientName", "PatientID", "StudyID",
              "StudyInstanceUID"),
    "SERIES": ("Modality", "SeriesNumber", "SeriesInstanceUID"),
    "IMAGE": ("InstanceNumber", "SOPInstanceUID"),
}
UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


@dataclass(frozen=True, slots=True)
class PeerOptions:
    """What and how to probe.

    Attributes
    ----------
    host, port : str, int
        The peer's address.
    called_aet : str
        The peer's AE title.
    calling_aet : str
        Ours.
    store : bool
        Send a generated object with C-STORE (needed for the FIND matching and retrieve checks).
    move_aet : str or None
        A C-MOVE destination that the peer knows, pointing at ``move_port`` on this machine;
        None skips C-MOVE.
    move_port : int
        Port of our C-MOVE Storage SCP; 0 picks a free one (then the peer must accept any port,
        which few do).
    move_bind : str
        Address our C-MOVE Storage SCP listens on; empty (the default): the local address of
        the association to the peer, which the peer can reach.
    timeout : float
        Seconds for the TCP connect, each PDU read, and each ACSE and DIMSE response.
    """

    host: str
    port: int
    called_aet: str
    calling_aet: str = "ARCHIVIST"
    store: bool = True
    move_aet: str | None = None
    move_port: int = 0
    move_bind: str = ""
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class PeerCheck:
    """The outcome of one check: ``pass``, ``fail``, ``warn``, ``skip`` or ``info``."""

    name: str
    outcome: str
    detail: str
    reference: str = ""

    def to_dict(self) -> dict[str, str]:
        """JSON-serialisable mapping."""
        return {"name": self.name, "outcome": self.outcome, "detail": self.detail,
                "reference": self.reference}


@dataclass(slots=True)
class PeerReport:
    """Everything :func:`probe_peer` learnt about the peer."""

    host: str
    port: int
    called_aet: str
    checks: list[PeerCheck] = field(default_factory=list)
    accepted: dict[str, list[str]] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    max_pdu: int | None = None
    implementation_class_uid: str = ""
    implementation_version_name: str = ""
    stored_object: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, outcome: str, detail: str, reference: str = "") -> None:
        """Record a check."""
        self.checks.append(PeerCheck(name, outcome, detail, reference))

    def counts(self) -> dict[str, int]:
        """Number of checks per outcome."""
        out = {k: 0 for k in (PASS, FAIL, WARN, SKIP, INFO)}
        for check in self.checks:
            out[check.outcome] += 1
        return out

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not any(c.outcome == FAIL for c in self.checks)

    def outcome(self, name: str) -> str | None:
        """Outcome of the first check with this name (None if not run)."""
        return next((c.outcome for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable mapping."""
        return {
            "host": self.host,
            "port": self.port,
            "called_aet": self.called_aet,
            "ok": self.ok,
            "counts": self.counts(),
            "max_pdu": self.max_pdu,
            "implementation_class_uid": self.implementation_class_uid,
            "implementation_version_name": self.implementation_version_name,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "stored_object": self.stored_object,
            "checks": [c.to_dict() for c in self.checks],
        }


# --- status codes -----------------------------------------------------------------------------

# Status codes each service may return besides the Cxxx "unable to process" range
# (PS3.4 B.2.3, C.4.1.1.4, C.4.2.1.5, C.4.3.1.4; PS3.7 C).
_DEFINED_STATUS: dict[str, frozenset[int]] = {
    "C-ECHO": frozenset({0x0000, 0x0122, 0x0210, 0x0211, 0x0212}),
    "C-STORE": frozenset({0x0000, 0xB000, 0xB006, 0xB007, 0x0117, 0x0122, 0x0124, 0x0210,
                          0x0211, 0x0212}),
    "C-FIND": frozenset({0x0000, 0xFF00, 0xFF01, 0xFE00, 0xA700, 0xA900, 0x0122, 0x0124}),
    "C-MOVE": frozenset({0x0000, 0xFF00, 0xFE00, 0xB000, 0xA701, 0xA702, 0xA801, 0xA900,
                         0x0122, 0x0124}),
    "C-GET": frozenset({0x0000, 0xFF00, 0xFE00, 0xB000, 0xA701, 0xA702, 0xA900, 0x0122,
                        0x0124}),
}
_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "C-STORE": ((0xA700, 0xA7FF), (0xA900, 0xA9FF), (0xC000, 0xCFFF)),
    "C-FIND": ((0xC000, 0xCFFF),),
    "C-MOVE": ((0xC000, 0xCFFF),),
    "C-GET": ((0xC000, 0xCFFF),),
}


def status_defined(service: str, code: int) -> bool:
    """True when *code* is a status the standard defines for *service* (PS3.4, PS3.7 C)."""
    if code in _DEFINED_STATUS.get(service, frozenset()):
        return True
    return any(lo <= code <= hi for lo, hi in _RANGES.get(service, ()))


def _category(code: int) -> str:
    if code == 0x0000:
        return "Success"
    if code in (0xFF00, 0xFF01):
        return "Pending"
    if code == 0xFE00:
        return "Cancel"
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return "Warning"
    return "Failure"


def _status_code(status: Dataset | None) -> int | None:
    if status is None or "Status" not in status:
        return None
    return int(status.Status)


# --- the probe object -------------------------------------------------------------------------


def probe_object(patient_id: str) -> Dataset:
    """Build the Secondary Capture Image (PS3.3 A.8) that the probe stores and retrieves."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "ARCHIVIST^PROBE"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "PROBE"
    ds.AccessionNumber = "PROBE"
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.SeriesNumber = "1"
    ds.ConversionType = "WSD"
    ds.InstanceNumber = "1"
    ds.PatientOrientation = ""
    ds.ContentDate = "20240101"
    ds.ContentTime = "120000"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 16
    ds.Columns = 16
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(256))
    return ds


# --- the probe --------------------------------------------------------------------------------

# A query for the probe's own object matches one entity and a retrieve moves one object: after
# this many pending responses the request is cancelled (C-CANCEL, PS3.7 9.3.2.3, 9.3.3.3,
# 9.3.4.3), and when the peer still sends pending responses a timeout after the C-CANCEL (some
# were already on the way), the association is aborted: a peer which never stops answering
# cannot hold the probe, nor fill its memory.
MAX_PENDING = 20


@dataclass(slots=True)
class _Responses:
    """What one C-FIND, C-MOVE or C-GET request received (see :meth:`_Probe._collect`)."""

    codes: list[int] = field(default_factory=list)
    identifiers: list[Dataset] = field(default_factory=list)
    last: Dataset | None = None
    final: int | None = None
    cut: str = ""  # "cancelled" or "aborted" when the probe had to stop the peer


class _Probe:
    def __init__(self, options: PeerOptions) -> None:
        self.o = options
        self.report = PeerReport(options.host, options.port, options.called_aet)
        self.ae = self._new_ae(options.calling_aet)
        self.patient_id = "ARCHIVIST-PROBE-" + secrets.token_hex(4).upper()
        self.obj = probe_object(self.patient_id)
        self.stored = False
        self.connected = False
        self.store_rsp: Dataset | None = None
        self.message_id = 0
        self.ended = False  # the main association ended before its last request was answered

    # pynetdicom set-up --------------------------------------------------------------------
    def _new_ae(self, title: str) -> Any:
        """An AE whose every wait, the TCP connect included, is bounded by the timeout."""
        from pynetdicom import AE

        install_scu_guard()  # pynetdicom's lost-response race
        ae = AE(ae_title=title)
        for attr in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, attr, self.o.timeout)
        return ae

    def _handlers(self) -> list[tuple[Any, Any]]:
        from pynetdicom import evt

        return [(evt.EVT_CONN_OPEN, self._on_open), (evt.EVT_DIMSE_RECV, self._on_dimse)]

    def _on_open(self, event: Any) -> None:
        # pynetdicom reads a PDU with a blocking recv once its header has arrived: a peer that
        # sends the start of a PDU and then nothing would hold the probe for ever. A timeout
        # on the socket makes that read fail, which pynetdicom treats as a closed connection.
        self.connected = True
        sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        if sock is not None:
            sock.settimeout(self.o.timeout)

    def _on_dimse(self, event: Any) -> None:
        if type(event.message).__name__ == "C_STORE_RSP":
            self.store_rsp = event.message.command_set

    def _next_message_id(self) -> int:
        self.message_id = self.message_id % 0xFFFF + 1
        return self.message_id

    def _no_response(self, service: str, started: float) -> str:
        """Why a request got no final response: our timeout, or the peer ended the association."""
        self.ended = True
        if time.monotonic() - started >= self.o.timeout * 0.9:
            return (f"No {service} response within {self.o.timeout:g} s; the association was "
                    "aborted.")
        return (f"The association ended (A-ABORT or connection closed by the peer) before the "
                f"{service} response.")

    def _alive(self, assoc: Any, name: str) -> bool:
        """False (and the check recorded as skipped) once the association has ended."""
        # pynetdicom notices a peer's A-ABORT a moment after the request that it interrupted
        # has returned: the flag set when a request went unanswered is what counts.
        if assoc.is_established and not self.ended:
            return True
        self.report.add(name, SKIP, "Not run: the association had already ended (see above).")
        return False

    # association negotiation ------------------------------------------------------------
    def negotiate(self) -> Any:
        contexts = self._contexts()
        for abstract, syntaxes in contexts:
            self.ae.add_requested_context(abstract, syntaxes)
        r = self.report
        for _attempt in range(3):
            # A peer that sends A-ASSOCIATE-RJ and closes at once can race our reading of the
            # RJ PDU (see wrong_called_aet): a quick abort is tried again before concluding.
            started = time.monotonic()
            self.connected = False
            try:
                assoc = self.ae.associate(self.o.host, self.o.port, ae_title=self.o.called_aet,
                                          evt_handlers=self._handlers())
            except OSError as exc:  # the host name does not resolve
                r.add("association", FAIL, f"Cannot reach {self.o.host}: {exc.strerror or exc}.",
                      "PS3.8 9.3.3")
                return None
            if (assoc.is_established or assoc.is_rejected or not self.connected
                    or time.monotonic() - started >= self.o.timeout * 0.9):
                break
        if not assoc.is_established:
            rj = self._misreported_rejection(assoc, started, self.o.called_aet)
            failure = ("Association request rejected: " + _rejection(rj) + "." if rj is not None
                       else self._association_failure(assoc, started))
            r.add("association", FAIL, failure, "PS3.8 9.3.3")
            return None
        r.max_pdu = int(assoc.acceptor.maximum_length or 0)
        r.implementation_class_uid = str(assoc.acceptor.implementation_class_uid or "")
        r.implementation_version_name = str(assoc.acceptor.implementation_version_name or "")
        for cx in assoc.accepted_contexts:
            r.accepted.setdefault(str(cx.abstract_syntax), [])
            for ts in cx.transfer_syntax:
                if str(ts) not in r.accepted[str(cx.abstract_syntax)]:
                    r.accepted[str(cx.abstract_syntax)].append(str(ts))
        accepted_uids = set(r.accepted)
        r.rejected = sorted({str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
                            - accepted_uids)
        r.add("association", PASS,
              f"Accepted {len(assoc.accepted_contexts)} of {len(contexts)} presentation contexts "
              f"({len(accepted_uids)} SOP Classes); maximum PDU {r.max_pdu or 'unlimited'}; "
              f"implementation {r.implementation_class_uid} "
              f"{r.implementation_version_name}".rstrip() + ".",
              "PS3.8 9.3.3")
        if r.max_pdu and r.max_pdu < 1024:
            r.add("maximum PDU", WARN, f"Maximum PDU length {r.max_pdu} is very small.",
                  "PS3.8 D.1")
        ct = r.accepted.get("1.2.840.10008.5.1.4.1.1.2", [])
        names = [PROBED_TRANSFER_SYNTAXES.get(ts, ts) for ts in ct]
        r.add("transfer syntaxes", INFO if ct else WARN,
              "CT Image Storage accepted with: " + (", ".join(names) or "none"), "PS3.5 10")
        for cx in assoc.accepted_contexts:
            if len(cx.transfer_syntax) != 1:
                r.add("presentation context", FAIL,
                      f"Context {cx.context_id} accepted with {len(cx.transfer_syntax)} transfer "
                      "syntaxes instead of one.", "PS3.8 9.3.3.2")
        if ImplicitVRLittleEndian not in ct and ct:
            # A peer may accept one context per SOP Class and reject the others proposed for
            # it (PixelMed does): not accepting the default beside an accepted explicit syntax
            # is not proof that it refuses the default when that is all a requestor offers.
            r.add("default transfer syntax", WARN,
                  "Implicit VR Little Endian (the default transfer syntax) was not accepted "
                  "for CT Image Storage beside " + (", ".join(names) or "another syntax")
                  + "; every AE must support it when it is the one proposed.",
                  "PS3.5 10.1")
        return assoc

    def _misreported_rejection(self, assoc: Any, started: float, called: str) -> Any:
        """The peer's A-ASSOCIATE-RJ when pynetdicom reported a quick abort instead (read
        again on a plain socket: :func:`_raw_rejection`), else None."""
        if assoc.is_rejected or assoc.is_established or not self.connected \
                or time.monotonic() - started >= self.o.timeout * 0.9:
            return None
        return _raw_rejection(self.o.host, self.o.port, called, self.o.calling_aet,
                              self.o.timeout)

    def _association_failure(self, assoc: Any, started: float) -> str:
        """Explain an association that was not established (PS3.8 7.1, 9.3.4, 9.3.8)."""
        if assoc.is_rejected:
            return "Association request rejected: " + _rejection(assoc) + "."
        where = f"{self.o.host}:{self.o.port}"
        if not self.connected:
            return (f"No TCP connection to {where} (refused, unreachable, or no answer within "
                    f"{self.o.timeout:g} s).")
        if time.monotonic() - started >= self.o.timeout * 0.9:
            return (f"Connected to {where}, but no A-ASSOCIATE response came within "
                    f"{self.o.timeout:g} s; is it a DICOM port?")
        return (f"Connected to {where}, but the peer aborted or closed the connection, or "
                "answered with something that is not an A-ASSOCIATE-AC/RJ PDU (is it a DICOM "
                "port?).")

    def _contexts(self) -> list[tuple[str, list[str]]]:
        contexts: list[tuple[str, list[str]]] = [(VERIFICATION, [ImplicitVRLittleEndian])]
        for uid in QUERY_CLASSES:
            contexts.append((uid, NATIVE))
        for uid in STORAGE_CLASSES:
            if uid != "1.2.840.10008.5.1.4.1.1.2":
                contexts.append((uid, NATIVE))
        for ts in PROBED_TRANSFER_SYNTAXES:
            contexts.append(("1.2.840.10008.5.1.4.1.1.2", [ts]))
        return contexts

    def wrong_called_aet(self) -> None:
        ae = self._new_ae(self.o.calling_aet)
        ae.add_requested_context(VERIFICATION)
        bogus = "NO-SUCH-AE-" + secrets.token_hex(2).upper()
        for _attempt in range(3):
            # A peer that sends A-ASSOCIATE-RJ and closes at once can race our reading of the
            # RJ PDU, which then looks like an abort: try again before concluding, but not
            # after a timeout (a slow peer would make the probe wait three times as long).
            started = time.monotonic()
            assoc = ae.associate(self.o.host, self.o.port, ae_title=bogus,
                                 evt_handlers=self._handlers())
            if assoc.is_established or assoc.is_rejected:
                break
            if time.monotonic() - started >= self.o.timeout * 0.9:
                break
        if assoc.is_established:
            assoc.release()
            self.report.add("called AE title check", WARN,
                            f"An association to the unknown AE title {bogus} was accepted; the "
                            "peer does not check the Called AE Title.", "PS3.8 9.3.4")
        elif assoc.is_rejected or (rj := self._misreported_rejection(assoc, started, bogus)):
            self.report.add("called AE title check", PASS,
                            f"An association to the unknown AE title {bogus} was rejected: "
                            + _rejection(assoc if assoc.is_rejected else rj) + ".",
                            "PS3.8 9.3.4")
        elif time.monotonic() - started >= self.o.timeout * 0.9:
            self.report.add("called AE title check", WARN,
                            f"An association to the unknown AE title {bogus} got no answer "
                            f"within {self.o.timeout:g} s.", "PS3.8 9.3.4")
        else:
            self.report.add("called AE title check", WARN,
                            "An association to an unknown AE title was aborted, not rejected.",
                            "PS3.8 9.3.4")

    # services ---------------------------------------------------------------------------
    def _check_status(self, service: str, name: str, code: int | None, ok: Iterable[int],
                      reference: str, started: float) -> bool:
        if code is None:
            self.report.add(name, FAIL, self._no_response(service, started), reference)
            return False
        defined = status_defined(service, code)
        if not defined:
            self.report.add(f"{name} status", WARN,
                            f"Status 0x{code:04X} is not defined for {service}.", reference)
        if code in ok:
            self.report.add(name, PASS, f"{service} status 0x{code:04X} ({_category(code)}).",
                            reference)
            return True
        # A status the service does not define cannot be taken for a warning.
        outcome = WARN if defined and _category(code) == "Warning" else FAIL
        self.report.add(name, outcome, f"{service} status 0x{code:04X} ({_category(code)}).",
                        reference)
        return outcome == WARN

    def echo(self, assoc: Any) -> None:
        if VERIFICATION not in self.report.accepted:
            self.report.add("C-ECHO", FAIL, "Verification SOP Class not accepted.", "PS3.4 A.4")
            return
        if not self._alive(assoc, "C-ECHO"):
            return
        started = time.monotonic()
        status = assoc.send_c_echo(msg_id=self._next_message_id())
        self._check_status("C-ECHO", "C-ECHO", _status_code(status), {0x0000}, "PS3.4 A.4",
                           started)

    def store(self, assoc: Any) -> None:
        if not self.o.store:
            self.report.add("C-STORE", SKIP, "Disabled (--no-store).")
            return
        syntaxes = self.report.accepted.get(SECONDARY_CAPTURE)
        if not syntaxes:
            self.report.add("C-STORE", SKIP, "Secondary Capture Image Storage not accepted.",
                            "PS3.4 B.5")
            return
        if not self._alive(assoc, "C-STORE"):
            return
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = UID(
            ExplicitVRLittleEndian if ExplicitVRLittleEndian in syntaxes else syntaxes[0]
        )
        self.obj.file_meta = meta
        self.store_rsp = None
        started = time.monotonic()
        status = assoc.send_c_store(self.obj, msg_id=self._next_message_id())
        code = _status_code(status)
        self.stored = self._check_status("C-STORE", "C-STORE", code, {0x0000}, "PS3.4 B.2.3",
                                         started)
        if code is not None:
            self._check_store_identity()
        if self.stored or code is None or _category(code) != "Failure":
            # Said whenever the peer may have kept it: a timed-out or odd response too.
            obj = self.obj
            self.report.stored_object = {
                "PatientID": self.patient_id, "StudyInstanceUID": str(obj.StudyInstanceUID),
                "SeriesInstanceUID": str(obj.SeriesInstanceUID),
                "SOPInstanceUID": str(obj.SOPInstanceUID),
            }
            what = ("stored" if self.stored
                    else "sent (the peer may or may not have kept it)")
            self.report.add("test object left on the peer", INFO,
                            f"The probe {what} a 16x16 Secondary Capture (Patient ID "
                            f"{self.patient_id}, Study Instance UID {obj.StudyInstanceUID}); it "
                            "stays on the peer: delete it there (use --no-store to probe "
                            "without writing).")

    def _check_store_identity(self) -> None:
        """The C-STORE-RSP names the instance that was sent, when it names one (PS3.7 9.1.1.1.3,
        9.1.1.1.4, 9.3.1.2)."""
        rsp = self.store_rsp
        if rsp is None:
            return
        wrong = []
        for keyword, sent in (("AffectedSOPClassUID", self.obj.SOPClassUID),
                              ("AffectedSOPInstanceUID", self.obj.SOPInstanceUID)):
            got = str(rsp.get(keyword, "") or "").rstrip("\0 ")
            if got and got != str(sent):
                wrong.append(f"{keyword} {got}, but the request's is {sent}")
        if wrong:
            self.report.add("C-STORE response", FAIL,
                            "The C-STORE response has " + "; ".join(wrong)
                            + " (if present, it shall equal the request's).",
                            "PS3.7 9.1.1.1.3, 9.1.1.1.4, 9.3.1.2")

    def _collect(self, assoc: Any, responses: Iterable[tuple[Dataset, Any]], msg_id: int,
                 model: str) -> _Responses:
        """Read the responses to a C-FIND, C-MOVE or C-GET request, cancelling it (then aborting
        the association) when the peer sends more pending responses than one object explains."""
        out = _Responses()
        cancelled_at = 0.0
        for status, identifier in responses:
            code = _status_code(status)
            if code is None:
                break
            out.codes.append(code)
            out.last = status
            if code not in (0xFF00, 0xFF01):
                out.final = code
                break
            pending = len(out.codes)
            if identifier is not None and len(out.identifiers) < MAX_PENDING:
                out.identifiers.append(identifier)
            if pending == MAX_PENDING:
                out.cut = "cancelled"
                cancelled_at = time.monotonic()
                assoc.send_c_cancel(msg_id, query_model=model)
            elif out.cut and time.monotonic() - cancelled_at > self.o.timeout:
                out.cut = "aborted"
                self.ended = True
                assoc.abort()
                break
        return out

    def _cut_detail(self, got: _Responses) -> str:
        if got.cut == "aborted":
            return (f"more than {MAX_PENDING} pending responses, and still more "
                    f"{self.o.timeout:g} s after a C-CANCEL: the probe aborted the association")
        return (f"more than {MAX_PENDING} pending responses: the probe sent a C-CANCEL, and the "
                + (f"final status was 0x{got.final:04X} ({_category(got.final)})"
                   if got.final is not None else "peer did not answer it"))

    def find(self, assoc: Any) -> None:
        accepted = self.report.accepted
        if STUDY_ROOT_FIND not in accepted and PATIENT_ROOT_FIND not in accepted:
            self.report.add("C-FIND", SKIP, "No Query/Retrieve FIND SOP Class accepted.",
                            "PS3.4 C.6")
            return
        obj = self.obj
        queries: list[tuple[str, str, str, dict[str, str], int | None]] = []
        expect = 1 if self.stored else None
        if PATIENT_ROOT_FIND in accepted:
            queries.append((PATIENT_ROOT_FIND, "PATIENT", "single value",
                            {"PatientID": self.patient_id}, expect))
        if STUDY_ROOT_FIND in accepted:
            queries += [
                (STUDY_ROOT_FIND, "STUDY", "single value", {"PatientID": self.patient_id},
                 expect),
                (STUDY_ROOT_FIND, "STUDY", "wildcard",
                 {"PatientID": self.patient_id, "PatientName": "ARCHIVIST^PROB*"}, expect),
                (STUDY_ROOT_FIND, "STUDY", "no match",
                 {"PatientID": "ARCHIVIST-NO-SUCH-" + secrets.token_hex(4).upper()}, 0),
                (STUDY_ROOT_FIND, "SERIES", "UID",
                 {"StudyInstanceUID": obj.StudyInstanceUID}, expect),
                (STUDY_ROOT_FIND, "IMAGE", "UID",
                 {"StudyInstanceUID": obj.StudyInstanceUID,
                  "SeriesInstanceUID": obj.SeriesInstanceUID}, expect),
            ]
        for model, level, label, matching, expected in queries:
            self._find_one(assoc, model, level, label, matching, expected)

    def _find_one(self, assoc: Any, model: str, level: str, label: str,
                  matching: dict[str, str], expected: int | None) -> None:
        root = "Patient Root" if model == PATIENT_ROOT_FIND else "Study Root"
        shown = ", ".join(f"{k}={v}" for k, v in matching.items())
        name = f"C-FIND {root} {level} {label} matching"
        ref = "PS3.4 C.4.1, C.6.1" if model == PATIENT_ROOT_FIND else "PS3.4 C.4.1, C.6.2"
        if not self._alive(assoc, name):
            return
        query = Dataset()
        query.QueryRetrieveLevel = level
        for key in LEVEL_KEYS[level]:
            setattr(query, key, "")
        for key, value in matching.items():
            setattr(query, key, value)
        msg_id = self._next_message_id()
        started = time.monotonic()
        got = self._collect(assoc, assoc.send_c_find(query, model, msg_id=msg_id), msg_id, model)
        bad_status = [c for c in got.codes if not status_defined("C-FIND", c)]
        if bad_status:
            self.report.add(f"{name} status", WARN,
                            "Statuses not defined for C-FIND: "
                            + ", ".join(f"0x{c:04X}" for c in bad_status), "PS3.4 C.4.1.1.4")
        if got.cut:
            problems = [self._cut_detail(got)]
            problems += self._check_identifiers(level, matching, got.identifiers)
            self.report.add(name, FAIL, f"{shown}: " + "; ".join(problems) + ".", ref)
            return
        if got.final != 0x0000:
            self.report.add(name, FAIL,
                            self._no_response("C-FIND", started) if got.final is None
                            else f"Final status 0x{got.final:04X} ({_category(got.final)}), "
                            "not Success.", "PS3.4 C.4.1.1.4")
            return
        responses = got.identifiers
        problems = self._check_identifiers(level, matching, responses)
        if expected is not None and len(responses) != expected:
            problems.append(f"{len(responses)} match(es) where {expected} expected")
        if problems:
            self.report.add(name, FAIL, f"{shown}: " + "; ".join(problems) + ".", ref)
        elif not responses and expected == 0:
            # The one query that is meant to find nothing: matching is what is tested.
            self.report.add(name, PASS, f"{shown}: no match, as expected (matching applied).",
                            ref)
        elif not responses:
            # Nothing of the probe's is on the peer (--no-store, or the C-STORE failed): no
            # identifier came back, so neither the keys nor the matching could be checked.
            self.report.add(name, SKIP,
                            f"{shown}: final status Success with no match; nothing was stored "
                            "to find, so the returned keys and the matching were not checked.",
                            ref)
        else:
            self.report.add(name, PASS,
                            f"{shown}: {len(responses)} match(es), requested keys returned, "
                            "matching applied.", ref)

    def _ours(self, ident: Dataset) -> bool:
        """True when a response identifier describes the probe's own object (so its values
        can be shown; another one may carry a real patient's name and ID)."""
        obj = self.obj
        own = {self.patient_id, str(obj.StudyInstanceUID), str(obj.SeriesInstanceUID),
               str(obj.SOPInstanceUID)}
        return any(str(ident.get(k, "") or "") in own
                   for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                             "SOPInstanceUID"))

    def _check_identifiers(self, level: str, matching: dict[str, str],
                           responses: list[Dataset]) -> list[str]:
        """Problems with the response identifiers (PS3.4 C.4.1.1.3.2), each told once with
        the responses it was found in; values of records that are not the probe's own object
        are never shown."""
        found: dict[str, list[int]] = {}
        for number, ident in enumerate(responses, 1):
            for problem in self._identifier_problems(level, matching, ident):
                found.setdefault(problem, []).append(number)
        out = []
        for problem, numbers in found.items():
            shown = ", ".join(str(n) for n in numbers[:5]) + (", ..." if len(numbers) > 5 else "")
            which = f"response {shown}" if len(numbers) == 1 else (
                f"{len(numbers)} responses ({shown})")
            out.append(f"{which}: {problem}")
        return out

    def _identifier_problems(self, level: str, matching: dict[str, str],
                             ident: Dataset) -> list[str]:
        ours = self._ours(ident)
        problems: list[str] = []
        missing = [k for k in LEVEL_KEYS[level] if k not in ident]
        if missing:
            problems.append(f"lacks requested key(s) {', '.join(missing)}")
        unique = UNIQUE_KEY[level]
        if not str(ident.get(unique, "") or ""):
            problems.append(f"has no value for the unique key {unique}")
        qrl = ident.get("QueryRetrieveLevel")
        if qrl is not None and str(qrl) != level:
            problems.append(f"has Query/Retrieve Level {qrl}, not {level}")
        for key, value in matching.items():
            got = str(ident.get(key, "") or "")
            if "*" in value or "?" in value:
                bad = not fnmatch.fnmatchcase(got, value.replace("\\", ""))
            else:
                bad = got != value and key in ident
            if bad and ours:
                problems.append(f"{key}={got!r} does not match {value!r}")
            elif bad:
                problems.append(f"{key} does not match {value!r} (a record that is not the "
                                "probe's object; its values are not shown)")
        problems += self._charset(ident)
        out = Collector()
        ElementChecker(out, lambda tag: "").check(ident)
        errors = [f for f in out.findings if f.severity is Severity.ERROR]
        if errors:
            problems.append(errors[0].message if ours
                            else f"{errors[0].path or 'an element'} breaks {errors[0].rule_id}")
        return problems

    @staticmethod
    def _charset(ident: Dataset) -> list[str]:
        charset = ident.get("SpecificCharacterSet")
        values = [charset] if isinstance(charset, str) else list(charset or [])
        non_ascii = False
        for tag in ident.keys():  # noqa: SIM118 - iterating a Dataset decodes every element
            elem = ident.get_item(tag)
            value = elem.value
            if isinstance(value, bytes) and elem.VR not in ("OB", "OW", "UN"):
                non_ascii = non_ascii or any(b > 0x7F for b in value)
            elif isinstance(value, str):
                non_ascii = non_ascii or not value.isascii()
        if non_ascii and not values:
            return ["uses non-ASCII characters without Specific Character Set"]
        return []

    def move(self, assoc: Any) -> None:
        accepted = self.report.accepted
        if self.o.move_aet is None:
            self.report.add("C-MOVE", SKIP, "No --move-aet given.")
            return
        if not self.stored:
            self.report.add("C-MOVE", SKIP, "Nothing stored to move.")
            return
        if STUDY_ROOT_MOVE not in accepted:
            self.report.add("C-MOVE", SKIP, "Study Root MOVE not accepted.", "PS3.4 C.6.2")
            return
        if not self._alive(assoc, "C-MOVE"):
            return
        from pynetdicom import evt

        received: list[str] = []

        def on_store(event: Any) -> int:
            received.append(str(event.dataset.SOPInstanceUID))
            return 0x0000

        scp = self._new_ae(self.o.move_aet)
        scp.add_supported_context(SECONDARY_CAPTURE, NATIVE)
        # By default, listen on the local address the association to the peer uses: the one
        # the peer can reach (127.0.0.1 would do only for a peer on this machine).
        bind = self.o.move_bind or str(assoc.requestor.address)
        server = scp.start_server((bind, self.o.move_port), block=False,
                                  evt_handlers=[(evt.EVT_C_STORE, on_store)])
        listener = f"{self.o.move_aet} at {bind}:{server.server_address[1]}"
        try:
            msg_id = self._next_message_id()
            started = time.monotonic()
            got = self._collect(assoc, assoc.send_c_move(self._image_identifier(),
                                                         self.o.move_aet, STUDY_ROOT_MOVE,
                                                         msg_id=msg_id),
                                msg_id, STUDY_ROOT_MOVE)
        finally:
            server.shutdown()
        self._retrieve_result("C-MOVE", got, received, "PS3.4 C.4.2", started,
                              hint=f" (the probe's Storage SCP was {listener}: the peer's entry "
                              f"for {self.o.move_aet} must point there)")

    def get(self) -> None:
        if not self.stored:
            self.report.add("C-GET", SKIP, "Nothing stored to retrieve.")
            return
        if STUDY_ROOT_GET not in self.report.accepted:
            self.report.add("C-GET", SKIP, "Study Root GET not accepted.", "PS3.4 C.6.2")
            return
        from pynetdicom import build_role, evt

        received: list[str] = []

        def on_store(event: Any) -> int:
            received.append(str(event.dataset.SOPInstanceUID))
            return 0x0000

        ae = self._new_ae(self.o.calling_aet)
        ae.add_requested_context(STUDY_ROOT_GET)
        ae.add_requested_context(SECONDARY_CAPTURE, NATIVE)
        started = time.monotonic()
        self.connected = False
        assoc = ae.associate(self.o.host, self.o.port, ae_title=self.o.called_aet,
                             ext_neg=[build_role(SECONDARY_CAPTURE, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, on_store), *self._handlers()])
        if not assoc.is_established:
            self.report.add("C-GET", FAIL, "Association for C-GET not established: "
                            + self._association_failure(assoc, started), "PS3.8 9.3.3")
            return
        try:
            msg_id = self._next_message_id()
            started = time.monotonic()
            got = self._collect(assoc, assoc.send_c_get(self._image_identifier(), STUDY_ROOT_GET,
                                                        msg_id=msg_id),
                                msg_id, STUDY_ROOT_GET)
        finally:
            if assoc.is_established:
                assoc.release()
        self._retrieve_result("C-GET", got, received, "PS3.4 C.4.3", started)

    def _image_identifier(self) -> Dataset:
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = self.obj.StudyInstanceUID
        query.SeriesInstanceUID = self.obj.SeriesInstanceUID
        query.SOPInstanceUID = self.obj.SOPInstanceUID
        return query

    def _retrieve_result(self, service: str, got: _Responses, received: list[str],
                         reference: str, started: float, hint: str = "") -> None:
        undefined = [c for c in got.codes if not status_defined(service, c)]
        if undefined:
            self.report.add(f"{service} status", WARN,
                            "Statuses not defined for the service: "
                            + ", ".join(f"0x{c:04X}" for c in undefined), "PS3.4 C.4")
        if got.final is None and not got.cut:
            self.report.add(service, FAIL, self._no_response(service, started), reference)
            return
        last = got.last
        completed = int(last.get("NumberOfCompletedSuboperations", -1)) if last else -1
        problems = []
        if got.cut:
            problems.append(self._cut_detail(got))
        elif got.final is not None and got.final != 0x0000:
            problems.append(f"final status 0x{got.final:04X} ({_category(got.final)})")
        if self.obj.SOPInstanceUID not in received:
            problems.append("the stored object did not arrive" + hint)
        if not got.cut and completed not in (-1, 1):
            problems.append(f"Number of Completed Sub-operations is {completed}, expected 1")
        if problems:
            self.report.add(service, FAIL, "; ".join(problems) + ".", reference)
        else:
            self.report.add(service, PASS,
                            f"Object retrieved; final status 0x0000; completed sub-operations "
                            f"{completed if completed >= 0 else 'not reported'}.", reference)


def _raw_rejection(host: str, port: int, called: str, calling: str, timeout: float) -> Any:
    """The A-ASSOCIATE-RJ the peer answers a minimal request (Verification, Implicit VR Little
    Endian) with, read on a plain socket, as a primitive with result, source and diagnostic;
    None when it answers otherwise (accepts, aborts, closes) or not at all.

    pynetdicom reports an RJ that arrives before its requesting thread has looked at the
    socket as an abort (the socket is already closed by then): on a loaded machine a quarter
    of a fast peer's refusals. Bytes read here cannot be lost that way."""
    from pynetdicom.pdu_primitives import A_ASSOCIATE

    def item(kind: int, body: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(body)) + body

    context = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, VERIFICATION.encode())
                   + item(0x40, str(ImplicitVRLittleEndian).encode()))
    user = item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.3.4"))
    body = (struct.pack(">HH", 1, 0) + called[:16].ljust(16).encode("ascii", "replace")
            + calling[:16].ljust(16).encode("ascii", "replace") + bytes(32)
            + item(0x10, b"1.2.840.10008.3.1.1.1") + context + user)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">BBL", 1, 0, len(body)) + body)
            answer = b""
            while len(answer) < 10:
                chunk = sock.recv(10 - len(answer))
                if not chunk:
                    break
                answer += chunk
            if answer[:1] == b"\x02":  # accepted after all: end it politely
                with contextlib.suppress(OSError):
                    sock.sendall(bytes([7, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
    except OSError:
        return None
    if len(answer) < 10 or answer[0] != 0x03:
        return None
    rj = A_ASSOCIATE()
    rj.result, rj.result_source, rj.diagnostic = answer[7], answer[8], answer[9]
    return rj


def _rejection(assoc: Any) -> str:
    """The result, source and reason of an A-ASSOCIATE-RJ (PS3.8 9.3.4, Table 9-21)."""
    rj = assoc if not hasattr(assoc, "acceptor") else assoc.acceptor.primitive
    if rj is None or rj.result is None:
        return "no reason received"
    return (f"{rj.result_str.lower()} (result {rj.result}), source {rj.source_str} "
            f"({rj.result_source}), reason: {rj.reason_str} ({rj.diagnostic})")


def probe_peer(options: PeerOptions) -> PeerReport:
    """Probe a remote DICOM node and report its conformance (see the module docstring).

    Every wait is bounded by ``options.timeout``: the TCP connect, each PDU read, and each
    ACSE/DIMSE response; a peer that ends the association half-way gets the checks that remain
    on it skipped, with the reason.

    Parameters
    ----------
    options : PeerOptions
        Address, AE titles and which services to exercise.

    Returns
    -------
    PeerReport
        One :class:`PeerCheck` per check; ``ok`` is False when any check failed.
    """
    probe = _Probe(options)
    assoc = probe.negotiate()
    if assoc is None:
        return probe.report
    try:
        for step, name in ((probe.echo, "C-ECHO"), (probe.store, "C-STORE"),
                           (probe.find, "C-FIND"), (probe.move, "C-MOVE")):
            try:
                step(assoc)
            except RuntimeError:
                # pynetdicom refuses a request once the association has ended; that can happen
                # between our check and the request when the peer aborts at that moment.
                probe.ended = True
                probe.report.add(name, SKIP, "Not run: the association had already ended.")
    finally:
        if assoc.is_established:
            assoc.release()
    probe.get()
    probe.wrong_called_aet()
    return probe.report
