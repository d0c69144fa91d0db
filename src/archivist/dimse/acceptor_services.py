"""DIMSE services on the event-driven acceptor: the handlers of :mod:`archivist.dimse.handlers`
driven without pynetdicom's association threads.

The handlers keep their interface: each receives an :class:`Event` shaped like pynetdicom's
``Event`` (``request``, ``assoc.requestor``, ``context``, ``identifier``, ``dataset_path``,
``is_cancelled``, ``move_destination``, ``action_information``...) and returns what pynetdicom
expects (a status, a ``(status, dataset)`` pair, or the C-FIND/C-MOVE/C-GET generator protocols).

Registration seam (the same in both engines): the acceptor proposes a presentation context for
every :class:`~archivist.dimse.services.Service` in ``Handlers.extra`` (see
:func:`archivist.dimse.server.build_ae`); C-FIND/C-MOVE/C-GET requests go to
``Handlers.handle_find/move/get``, which hand a registered SOP class to its service; N-ACTION,
N-GET, N-SET, N-CREATE, N-DELETE and N-EVENT-REPORT requests go to ``Handlers.handle_n(message,
event)`` when they name the SOP Class of their presentation context (others get 0x0122). A
feature therefore adds a module to ``services.PROVIDERS`` and touches nothing here.
A service that must send an N-EVENT-REPORT to the requestor over the same association calls
``event.assoc.send_n_event_report(...)`` from its handler (it blocks until the peer answers).

Blocking work (ingest, queries, reading blobs, encoding) runs in the acceptor's thread pool; the
loop only moves bytes. Pending responses are sent one batch at a time and each waits for the
socket to drain, so a slow reader slows the query down instead of filling memory.

Statuses follow PS3.4 (C.4.1.1.4, C.4.2.1.5, C.4.3.1.4) and pynetdicom's conventions for handler
errors (0xC311 find, 0xC411 get, 0xC511 move, 0x0110 N-service processing failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pynetdicom import dimse_messages as dm
from pynetdicom import dimse_primitives as dp
from pynetdicom.dsutils import decode, encode

from archivist.archive import part10
from archivist.archive.retrieve import StoredInstance
from archivist.archive.transcode import TranscodeRefused, transcode_dataset, without_image
from archivist.dimse.acceptor_pdu import (
    ABORT_UNRECOGNIZED_PARAMETER,
    Message,
    ObjectTooLarge,
    ProtocolError,
    ReleaseRequested,
    StreamedData,
    coalesce,
    encode_command,
    encode_message,
    fragment_message,
    to_the_end,
    vr_encoding_mismatch,
)
from archivist.dimse.requestor import Outbound, c_store_rq, choose_context
from archivist.dimse.services import names_context_class
from archivist.dimse.status import Status, status_dataset
from archivist.errors import NotFound

if TYPE_CHECKING:
    from pynetdicom.presentation import PresentationContext

    from archivist.dimse.acceptor import Association
    from archivist.dimse.handlers import Handlers

log = logging.getLogger("archivist.dimse")

_BATCH = 64
_BATCH_SECONDS = 0.005
#: How often a C-MOVE waiting for its destination's association looks for a C-CANCEL (s).
_CANCEL_POLL = 0.2

_N_MESSAGES = {
    0x0100: ("N-EVENT-REPORT", dp.N_EVENT_REPORT, dm.N_EVENT_REPORT_RSP),
    0x0110: ("N-GET", dp.N_GET, dm.N_GET_RSP),
    0x0120: ("N-SET", dp.N_SET, dm.N_SET_RSP),
    0x0130: ("N-ACTION", dp.N_ACTION, dm.N_ACTION_RSP),
    0x0140: ("N-CREATE", dp.N_CREATE, dm.N_CREATE_RSP),
    0x0150: ("N-DELETE", dp.N_DELETE, dm.N_DELETE_RSP),
}
#: A deflated data set of a request (an Identifier, an N-service's Action Information...) may
#: inflate to this many bytes: real ones are kilobytes, and pynetdicom's decoder would inflate
#: whatever arrives whole (a few hundred kilobytes on the wire inflating to gigabytes).
MAX_INFLATED_DATASET = 16 << 20
#: The request parameters that carry a data set, with their names in an Error Comment.
_DATA_SETS = {"Identifier": "Identifier", "ActionInformation": "Action Information",
              "EventInformation": "Event Information", "AttributeList": "Attribute List",
              "ModificationList": "Modification List"}
# Response parameters an N-service handler's status/data set may set, per message.
_N_DATASET = {"N-EVENT-REPORT": "EventReply", "N-GET": "AttributeList",
              "N-SET": "AttributeList", "N-ACTION": "ActionReply", "N-CREATE": "AttributeList"}


def category(status: int) -> str:
    """PS3.7 C: success, warning, failure, cancel or pending."""
    if status == 0x0000:
        return "success"
    if status in (0xFF00, 0xFF01):
        return "pending"
    if status == 0xFE00:
        return "cancel"
    if status == 0x0001 or 0xB000 <= status <= 0xBFFF or status == 0x0107 or status == 0x0116:
        return "warning"
    return "failure"


def sub_operation_total(count: Any, failure_base: int) -> tuple[int, Any]:
    """How many sub-operations a C-GET/C-MOVE handler announced, or why not: ``(total, None)``,
    or ``(0, status)`` with the handler's own refusal (it yielded ``(status, identifier)``),
    ``failure_base + 0x13`` when the count is not a number, ``failure_base + 0x16`` over the
    65,535 a response can count (`failure_base` 0xC400 for C-GET, 0xC500 for C-MOVE)."""
    if isinstance(count, tuple):
        return 0, count[0]
    try:
        total = int(count)
    except (TypeError, ValueError):
        return 0, failure_base + 0x13
    if total > 65535:
        return 0, failure_base + 0x16
    return total, None


def apply_status(rsp: Any, status: Any) -> int:
    """Set ``rsp.Status`` (and Error Comment etc.) from a handler's int or status Dataset."""
    if isinstance(status, Dataset):
        if "Status" not in status:
            rsp.Status = 0xC001
            return 0xC001
        for elem in status:
            if elem.keyword and elem.keyword != "Status" and hasattr(rsp, elem.keyword):
                try:
                    setattr(rsp, elem.keyword, elem.value)
                except (TypeError, ValueError):
                    pass
        rsp.Status = int(status.Status)
    elif isinstance(status, int):
        rsp.Status = int(status)
    else:
        rsp.Status = 0xC002
    return int(rsp.Status)


def encode_response(message_cls: type, primitive: Any, context_id: int, max_pdu: int
                    ) -> list[bytes]:
    """Encode a response primitive with pynetdicom's DIMSE message class, as P-DATA PDUs."""
    msg = message_cls()
    msg.primitive_to_message(primitive)
    data = msg.data_set.getvalue() if isinstance(msg.data_set, BytesIO) else None
    return encode_message(msg, context_id, max_pdu, data or None)


class Response:
    """A C-service response command set (PS3.7 9.3), encoded by pydicom in one pass.

    Stands in for pynetdicom's response primitives on the hot paths (C-STORE, C-ECHO, C-FIND,
    C-MOVE, C-GET responses): setting the parameters one by one through pynetdicom's primitive,
    message and group-length steps encodes the command set three times.
    """

    PARAMETERS = frozenset({
        "MessageIDBeingRespondedTo", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Status",
        "ErrorComment", "ErrorID", "OffendingElement", "NumberOfRemainingSuboperations",
        "NumberOfCompletedSuboperations", "NumberOfFailedSuboperations",
        "NumberOfWarningSuboperations", "Identifier",
    })

    def __init__(self, command_field: int) -> None:
        self.__dict__["_field"] = command_field
        self.__dict__["_values"] = {}

    def __getattr__(self, name: str) -> Any:
        if name in Response.PARAMETERS:
            return self.__dict__["_values"].get(name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in Response.PARAMETERS:
            raise AttributeError(name)
        self.__dict__["_values"][name] = value

    def encode(self, context_id: int, max_pdu: int) -> list[bytes]:
        identifier = self.__dict__["_values"].get("Identifier")
        data = identifier.getvalue() if isinstance(identifier, BytesIO) else b""
        return fragment_message(self.command(bool(data)), context_id, max_pdu, data or None)

    def command(self, with_data: bool) -> bytes:
        """The encoded command set (Implicit VR Little Endian, PS3.7 6.3.1), group length
        first; `with_data` sets Command Data Set Type (0x0001, else 0x0101)."""
        values = dict(self.__dict__["_values"])
        values.pop("Identifier", None)
        values["CommandField"] = self.__dict__["_field"]
        values["CommandDataSetType"] = 0x0001 if with_data else 0x0101
        return encode_command(values)


#: VRs of C-FIND identifiers that :func:`encode_identifier` writes itself: text with a 2-byte
#: length in Explicit VR (PS3.5 7.1.2), padded with a space (UI: NUL, PS3.5 6.2).
_DIRECT_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                              "TM", "UI"})
_LITTLE_ENDIAN_TS = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


def encode_identifier(ds: Dataset, ts: UID) -> bytes:
    """A C-FIND response identifier (PS3.4 C.4.1.1.3.2), as :func:`encode_dataset` encodes it.

    The identifiers the search builds hold short text values (UIDs, codes, dates, names,
    counts); in Implicit or Explicit VR Little Endian and when every value is ASCII they are
    written directly (PS3.5 7.1), which costs a tenth of pydicom's data set writer. Anything
    else (other VRs, non-ASCII text, sequences, another transfer syntax) goes through pydicom.
    """
    if ts not in _LITTLE_ENDIAN_TS:
        return encode_dataset(ds, ts)
    implicit = ts == "1.2.840.10008.1.2"
    parts: list[bytes] = []
    for elem in ds:
        vr = elem.VR
        if vr not in _DIRECT_TEXT_VRS:
            return encode_dataset(ds, ts)
        value = elem.value
        if value is None or value == "":
            text = ""
        elif isinstance(value, (MultiValue, list, tuple)):
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
        if not text.isascii() or (vr == "PN" and "=" in text):
            return encode_dataset(ds, ts)
        raw = text.encode("ascii")
        if len(raw) % 2:
            raw += b"\0" if vr == "UI" else b" "
        tag = elem.tag
        if implicit:
            parts.append(struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(raw)))
        elif len(raw) > 0xFFFF:
            return encode_dataset(ds, ts)
        else:
            parts.append(struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(raw)))
        parts.append(raw)
    return b"".join(parts)


def encode_dataset(ds: Dataset, ts: UID) -> bytes:
    out = encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    if out is None:
        raise ValueError("the data set cannot be encoded")
    return bytes(out)


@dataclass
class Requestor:
    """What handlers read of the requestor (pynetdicom's ``ServiceUser``)."""

    ae_title: str
    address: str
    port: int
    maximum_length: int


@dataclass
class Acceptor_:
    ae_title: str
    address: str
    port: int
    maximum_length: int


class AssociationView:
    """The ``event.assoc`` handlers see: the two service users and, for services that send
    notifications to the requestor, :meth:`send_n_event_report`."""

    def __init__(self, assoc: Association) -> None:
        self._assoc = assoc
        self.requestor = Requestor(assoc.calling, assoc.address, assoc.port, assoc.peer_max)
        self.acceptor = Acceptor_(assoc.called, assoc.settings.host,
                                  assoc.acceptor.port if assoc.acceptor._sock else 0,
                                  assoc.settings.max_pdu)
        self.is_acceptor = True
        self.is_requestor = False

    @property
    def is_established(self) -> bool:
        return not self._assoc._closed

    @property
    def accepted_contexts(self) -> list[PresentationContext]:
        return list(self._assoc.accepted.values())

    def send_n_event_report(self, dataset: Dataset | None, event_type: int, class_uid: str,
                            instance_uid: str) -> Dataset:
        """Send an N-EVENT-REPORT-RQ to the requestor and wait for its status (blocking: call
        from a handler, which runs in a worker thread). PS3.7 10.1.1."""
        assoc = self._assoc
        cx = _find_context(assoc, class_uid, None)
        if cx is None:
            raise ValueError(f"no accepted presentation context for {class_uid}")
        ts = UID(cx.transfer_syntax[0])
        future = asyncio.run_coroutine_threadsafe(self._report(cx, ts, dataset, event_type,
                                                               class_uid, instance_uid),
                                                  assoc.loop)
        return future.result(assoc.settings.dimse_timeout + 5)

    async def _report(self, cx: Any, ts: UID, dataset: Dataset | None, event_type: int,
                      class_uid: str, instance_uid: str) -> Dataset:
        assoc = self._assoc
        req = dp.N_EVENT_REPORT()
        req.MessageID = assoc.new_message_id()
        req.AffectedSOPClassUID = class_uid
        req.AffectedSOPInstanceUID = instance_uid
        req.EventTypeID = event_type
        if dataset is not None:
            req.EventInformation = BytesIO(encode_dataset(dataset, ts))
        pdus = encode_response(dm.N_EVENT_REPORT_RQ, req, int(cx.context_id), assoc.send_max)
        reply = await assoc.request(pdus, int(req.MessageID))
        status = Dataset()
        status.Status = int(reply.msg.command_set.get("Status", 0xC000))  # type: ignore[union-attr]
        return status


class Event:
    """pynetdicom's ``Event``, as far as the handlers use it."""

    def __init__(self, assoc: Association, request: Any, context: PresentationContext,
                 message_id: int, dataset_path: Path | None = None,
                 dataset_data: bytes | None = None) -> None:
        self._assoc = assoc
        self.assoc = AssociationView(assoc)
        self.request = request
        self._cx = context
        self.message_id = message_id
        self._dataset_path = dataset_path
        self._dataset_data = dataset_data  # a received object held in memory (Part 10 bytes)
        self.timestamp = time.time()
        self._decoded: dict[str, Dataset] = {}

    @property
    def context(self) -> Any:
        return self._cx.as_tuple

    @property
    def is_cancelled(self) -> bool:
        return self.message_id in self._assoc.cancelled

    def _get_dataset(self, attr: str) -> Dataset:
        if attr in self._decoded:
            return self._decoded[attr]
        stream = getattr(self.request, attr, None)
        if stream is None:
            raise AttributeError(f"the request has no {attr}")
        data = stream.getvalue() if isinstance(stream, BytesIO) else b""
        if not data:
            ds = Dataset()
        else:
            ts = UID(self._cx.transfer_syntax[0])
            if ts.is_deflated:
                ds = _inflated_dataset(data, _DATA_SETS.get(attr, attr))
            else:
                ds = decode(BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)
            ds.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian)
        self._decoded[attr] = ds
        return ds

    def data_refusal(self) -> str | None:
        """Why the request's deflated data set is not read (:class:`DataSetRefused`), or None
        (none, not deflated, or read: what else is wrong with it is the handler's to say)."""
        if not UID(self._cx.transfer_syntax[0]).is_deflated:
            return None
        for attr in _DATA_SETS:
            if getattr(self.request, attr, None) is None:
                continue
            try:
                self._get_dataset(attr)
            except DataSetRefused as exc:
                return str(exc)
            except Exception:  # noqa: BLE001, S112 - the handler reports it as it always has
                continue
        return None

    @property
    def identifier(self) -> Dataset:
        return self._get_dataset("Identifier")

    @property
    def action_information(self) -> Dataset:
        return self._get_dataset("ActionInformation")

    @property
    def event_information(self) -> Dataset:
        return self._get_dataset("EventInformation")

    @property
    def attribute_list(self) -> Dataset:
        return self._get_dataset("AttributeList")

    @property
    def modification_list(self) -> Dataset:
        return self._get_dataset("ModificationList")

    @property
    def action_type(self) -> int | None:
        return getattr(self.request, "ActionTypeID", None)

    @property
    def event_type(self) -> int | None:
        return getattr(self.request, "EventTypeID", None)

    @property
    def attribute_identifiers(self) -> list[Any]:
        tags = getattr(self.request, "AttributeIdentifierList", None)
        if tags is None:
            return []
        # One tag decodes as a tag, not a list of one (VM 1-n, PS3.7 10.1.2.1.3).
        return [tags] if isinstance(tags, int) else list(tags)

    @property
    def move_destination(self) -> str | None:
        return getattr(self.request, "MoveDestination", None)

    @property
    def dataset_path(self) -> Path:
        """The received object's file; AttributeError when it is held in memory instead."""
        if self._dataset_path is None:
            raise AttributeError("no data set file")
        return self._dataset_path

    @property
    def dataset(self) -> Dataset:
        if self._dataset_data is not None:
            return pydicom.dcmread(BytesIO(self._dataset_data))
        ds = pydicom.dcmread(self.dataset_path)
        return ds

    def encoded_dataset(self, include_meta: bool = True) -> bytes:
        if self._dataset_data is not None:
            data = self._dataset_data
        else:
            data = self.dataset_path.read_bytes()
        if include_meta:
            return data
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        return data[132 + int(ds.file_meta.FileMetaInformationGroupLength) + 12:]


class DataSetRefused(ValueError):
    """A request's deflated data set inflates past :data:`MAX_INFLATED_DATASET`, or is corrupt
    (the message, at most 64 characters, is the response's Error Comment)."""


def _inflated_dataset(data: bytes, what: str) -> Dataset:
    """The deflated data set `data` (PS3.5 A.5) read as pynetdicom's ``decode`` reads it, but
    inflated a step at a time and refused past :data:`MAX_INFLATED_DATASET` bytes.

    Raises
    ------
    DataSetRefused
        Too large inflated, or not a deflate stream (named `what`, e.g. "Identifier").
    """
    try:
        inflated = part10.inflate(BytesIO(data), MAX_INFLATED_DATASET)
    except part10.InflateRefused as exc:
        if "cannot be inflated" in str(exc):
            raise DataSetRefused(f"the deflated {what} cannot be inflated") from None
        raise DataSetRefused(f"the deflated {what} inflates past "
                             f"{MAX_INFLATED_DATASET >> 20} MiB") from None
    with inflated:
        return decode(inflated, False, True)  # type: ignore[arg-type]


def _find_context(assoc: Association, sop_class: str, ts: str | None,
                  *, scu: bool = False) -> Any:
    """An accepted context for `sop_class` (with us as SCU when `scu`) to send an object stored
    in `ts` (:func:`~archivist.dimse.requestor.choose_context`)."""
    candidates = [cx for cx in assoc.accepted.values() if cx.abstract_syntax == sop_class]
    if scu:
        candidates = [cx for cx in candidates if cx.as_scu]
    return choose_context(candidates, ts)


class Services:
    """Performs complete DIMSE requests for the acceptor by calling the archive's handlers."""

    def __init__(self, handlers: Handlers,
                 operations: dict[str, frozenset[int]] | None = None) -> None:
        self.handlers = handlers
        self.settings = handlers.settings
        #: Per SOP Class, the DIMSE-C requests it defines (None: not checked).
        self.operations = operations
        #: Releases of C-MOVE sub-associations still waiting for the destination's answer.
        self._releasing: set[asyncio.Task[None]] = set()

    def _refused_class(self, field: int, req: Any, cx: Any) -> bool:
        """Whether a C-FIND / C-MOVE / C-GET (or C-STORE) is refused as SOP Class not
        supported: it names another SOP Class than its presentation context (PS3.7 9.1.2.1),
        or that SOP Class does not define the operation (a C-FIND on a Storage or Verification
        context is no query of any information model; DCMTK's dcmqrscp answers 0x0122 too).
        C-ECHO stays answered on any context, as DCMTK and Orthanc do."""
        abstract = str(cx.abstract_syntax)
        if field in (0x0020, 0x0021, 0x0010) and str(req.AffectedSOPClassUID) != abstract:
            return True
        if self.operations is None or field not in (0x0001, 0x0010, 0x0020, 0x0021):
            return False
        return field not in self.operations.get(abstract, frozenset())

    async def perform(self, assoc: Association, msg: Message) -> None:
        cx = assoc.accepted[int(msg.context_id)]  # type: ignore[arg-type]
        field = msg.command_field
        req = msg.primitive
        if self._refused_class(field, req, cx):
            # Refused: SOP Class not supported.
            rsp = Response(field | 0x8000)
            rsp.MessageIDBeingRespondedTo = req.MessageID
            rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
            if field == 0x0001:
                assoc.refused += 1
                rsp.AffectedSOPInstanceUID = req.AffectedSOPInstanceUID
            rsp.Status = 0x0122
            await assoc.send(rsp.encode(int(cx.context_id), assoc.send_max))
            return
        if field == 0x0001:
            await self._store(assoc, msg, req, cx)
        elif field == 0x0030:
            await self._echo(assoc, req, cx)
        elif field == 0x0020:
            await self._find(assoc, req, cx)
        elif field == 0x0021:
            await self._move(assoc, req, cx)
        elif field == 0x0010:
            await self._get(assoc, req, cx)
        elif field in _N_MESSAGES:
            await self._n_service(assoc, field, req, cx)
        else:
            log.warning("DIMSE command 0x%04X from %s not supported", field, assoc.calling)
            await self._abort_unsupported(assoc, field)

    async def _abort_unsupported(self, assoc: Association, field: int) -> None:
        raise ProtocolError(f"command 0x{field:04X} not supported", ABORT_UNRECOGNIZED_PARAMETER)

    def _run(self, assoc: Association, fn: Any, *args: Any) -> asyncio.Future[Any]:
        return assoc.loop.run_in_executor(assoc.acceptor.pool, fn, *args)

    # -- C-ECHO ----------------------------------------------------------------------------

    async def _echo(self, assoc: Association, req: Any, cx: Any) -> None:
        event = Event(assoc, req, cx, int(req.MessageID))
        try:
            status = self.handlers.handle_echo(event)
        except Exception:
            log.exception("C-ECHO handler failed")
            status = 0xC000  # pragma: no cover
        rsp = Response(0x8030)
        rsp.MessageIDBeingRespondedTo = req.MessageID
        rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
        apply_status(rsp, status)
        await assoc.send(rsp.encode(int(cx.context_id), assoc.send_max))

    # -- C-STORE ---------------------------------------------------------------------------

    async def _store(self, assoc: Association, msg: Message, req: Any, cx: Any) -> None:
        pdus = await to_the_end(self._run(assoc, self._store_blocking, assoc, msg, req, cx))
        await assoc.send(pdus)

    def _store_blocking(self, assoc: Association, msg: Message, req: Any, cx: Any
                        ) -> list[bytes]:
        rsp = Response(0x8001)
        rsp.MessageIDBeingRespondedTo = req.MessageID
        try:
            rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
            rsp.AffectedSOPInstanceUID = req.AffectedSOPInstanceUID
        except (TypeError, ValueError):
            pass
        sink = msg.sink
        if str(req.AffectedSOPClassUID) != str(cx.abstract_syntax):
            status: Any = Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        elif sink is None:
            status = status_dataset(Status.CANNOT_UNDERSTAND, "the C-STORE request has no data set")
        elif (mismatch := vr_encoding_mismatch(getattr(sink, "head", b""),
                                               str(cx.transfer_syntax[0]))) is not None:
            # Refused before ingest: pydicom would read it anyway, and the object would be kept
            # under a File Meta that names the context's syntax (unreadable for DCMTK).
            log.warning("C-STORE from %s refused: %s", assoc.calling, mismatch)
            status = status_dataset(Status.CANNOT_UNDERSTAND, mismatch)
            sink.close()
        else:
            try:
                data = sink.held()  # type: ignore[union-attr]
                if data is not None:
                    # Small enough to have stayed in memory: parsed and stored from there,
                    # never written to a temporary file and read back.
                    event = Event(assoc, req, cx, int(req.MessageID), dataset_data=data)
                else:
                    event = Event(assoc, req, cx, int(req.MessageID),
                                  dataset_path=sink.finish())  # type: ignore[union-attr]
                status = self.handlers.handle_store(event)
            except ObjectTooLarge as exc:
                # Refused: Out of Resources (PS3.4 B.2.3); read to its end and dropped, so the
                # association goes on (an A-ABORT lost the rest of the requestor's batch).
                log.warning("C-STORE from %s refused: %s", assoc.calling, exc)
                status = status_dataset(Status.OUT_OF_RESOURCES, str(exc))
            except OSError as exc:
                log.error("C-STORE from %s: cannot write the temporary file: %s",
                          assoc.calling, exc.strerror)
                status = status_dataset(Status.OUT_OF_RESOURCES,
                                        f"cannot receive the object: {exc.strerror or exc}")
            finally:
                if sink is not None:
                    sink.close()
        if category(apply_status(rsp, status)) == "failure":
            assoc.refused += 1
        else:
            assoc.stored += 1
        return rsp.encode(int(cx.context_id), assoc.send_max)

    # -- C-FIND ----------------------------------------------------------------------------

    async def _find(self, assoc: Association, req: Any, cx: Any) -> None:
        event = Event(assoc, req, cx, int(req.MessageID))
        ts = UID(cx.transfer_syntax[0])
        state: dict[str, Any] = {"gen": None, "most": 1}
        # Every pending response of one C-FIND has the same command set (message ID, SOP
        # Class, status): encoded once per status, not once per match.
        pending_commands: dict[int, bytes] = {}
        context_id = int(cx.context_id)

        def response(status: Any, identifier: Dataset | None) -> tuple[list[bytes], bool]:
            if identifier is not None and isinstance(status, int) \
                    and status in pending_commands:
                data = encode_identifier(identifier, ts)
                if data:
                    return fragment_message(pending_commands[status], context_id,
                                            assoc.send_max, data), False
            rsp = Response(0x8020)
            rsp.MessageIDBeingRespondedTo = req.MessageID
            rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
            code = apply_status(rsp, status)
            kind = category(code)
            if kind == "pending":
                if identifier is None:
                    rsp.Status = code = 0xC312  # pynetdicom: pending without an identifier
                    kind = "failure"
                else:
                    data = encode_identifier(identifier, ts)
                    if data and isinstance(status, int):
                        pending_commands[status] = rsp.command(True)
                    rsp.Identifier = BytesIO(data)
            return rsp.encode(context_id, assoc.send_max), kind != "pending"

        def pull() -> list[tuple[list[bytes], bool]]:
            out: list[tuple[list[bytes], bool]] = []
            start = time.monotonic()
            try:
                if state["gen"] is None:
                    refusal = event.data_refusal()
                    if refusal is not None:
                        log.warning("C-FIND from %s refused: %s", assoc.calling,
                                    refusal.partition(": ")[0])  # no key values
                        out.append(response(status_dataset(Status.UNABLE_TO_PROCESS, refusal),
                                            None))
                        return out
                    state["gen"] = iter(self.handlers.handle_find(event))
                gen: Iterator[Any] = state["gen"]
                # The first match goes out on its own, so the requestor starts decoding while
                # the next ones are built; then twice as many per hop to the event loop each
                # time, up to _BATCH: the requestor (slower per match than we are) always has
                # some to decode, where a first batch of 64 left it idle while it was built.
                most = state["most"]
                state["most"] = min(_BATCH, most * 2)
                while len(out) < most and time.monotonic() - start < _BATCH_SECONDS:
                    try:
                        status, identifier = next(gen)
                    except StopIteration:
                        out.append(response(Status.SUCCESS, None))
                        break
                    item = response(status, identifier)
                    out.append(item)
                    if item[1]:
                        break
            except Exception:
                log.exception("C-FIND handler failed")
                out.append(response(0xC311, None))
            return out

        try:
            while True:
                batch = await self._run(assoc, pull)
                for pdus, final in batch:
                    await assoc.send(pdus)
                    if final:
                        return
        finally:
            # At the end, and when the requestor went away or stopped reading: the query's
            # cursor is let go now (a generator still running in a worker is left to finish)
            _close(state["gen"])

    # -- C-GET -----------------------------------------------------------------------------

    async def _get(self, assoc: Association, req: Any, cx: Any) -> None:
        """C-GET SCP (PS3.4 C.4.3): sub-operations as C-STORE requests on this association."""
        event = Event(assoc, req, cx, int(req.MessageID))
        ts = UID(cx.transfer_syntax[0])
        counts = Counts()
        failed: list[str] = []
        holder: dict[str, Any] = {}

        def rsp_pdus(status: Any, *, with_counts: bool = True, ident: Dataset | None = None
                     ) -> list[bytes]:
            rsp = Response(0x8010)
            rsp.MessageIDBeingRespondedTo = req.MessageID
            rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
            apply_status(rsp, status)
            if with_counts:
                counts.apply(rsp, remaining=int(rsp.Status) in (0xFF00, 0xFE00))
            if ident is None:
                return rsp.encode(int(cx.context_id), assoc.send_max)
            # A final (or canceled) response with its Failed SOP Instance UID List: one PDU
            # when it fits (acceptor_pdu.coalesce, for PixelMed's SCUs)
            rsp.Identifier = BytesIO(encode_dataset(ident, ts))
            return coalesce(rsp.encode(int(cx.context_id), assoc.send_max), assoc.send_max)

        def first() -> Any:
            gen = iter(self.handlers.handle_get(event))
            holder["gen"] = gen
            return next(gen)

        refusal = await self._run(assoc, event.data_refusal)
        if refusal is not None:
            log.warning("C-GET from %s refused: %s", assoc.calling,
                        refusal.partition(": ")[0])  # no key values (patient data)
            await assoc.send(rsp_pdus(status_dataset(Status.UNABLE_TO_PROCESS, refusal),
                                      with_counts=False))
            return
        try:
            count = await self._run(assoc, first)
        except Exception:
            log.exception("C-GET handler failed")
            await assoc.send(rsp_pdus(0xC411, with_counts=False))
            return
        total, refusal = sub_operation_total(count, 0xC400)
        if refusal is not None:
            await assoc.send(rsp_pdus(refusal, with_counts=False))
            return
        counts.remaining = total
        gen = holder["gen"]
        sub_id = int(req.MessageID)

        def next_sub() -> tuple[Any, Any, list[bytes] | None, int]:
            """The next yield, with its C-STORE-RQ encoded (worker thread)."""
            nonlocal sub_id
            try:
                status, ds = next(gen)
            except StopIteration:
                return "end", None, None, 0
            if category(int(status.Status if isinstance(status, Dataset) else status)) \
                    != "pending" or ds is None:
                return status, ds, None, 0
            try:
                sop_class, sop_instance, scx, data = _sub_operation(
                    ds, lambda c, t: _find_context(assoc, c, t, scu=True))
            except _NoContext as exc:
                log.warning("C-GET to %s: no accepted context for %s", assoc.calling, exc)
                return "nocontext", ds, None, 0
            except Exception as exc:  # noqa: BLE001 - counted as a failed sub-operation
                _log_unsendable("C-GET to", assoc.calling, _uid_of(ds), exc)
                return status, ds, None, 0
            sub_id = sub_id % 65535 + 1
            command = c_store_rq(sub_id, sop_class, sop_instance)
            return status, ds, fragment_message(command, int(scx.context_id), assoc.send_max,
                                                data), sub_id

        ahead: asyncio.Future[Any] | None = None

        async def give_up(current: Any) -> None:
            """The peer asked to release: the sub-operation waiting for its C-STORE response
            (`current`) and all those not yet performed fail; the final response goes out."""
            nonlocal ahead
            if current is not None:
                failed.append(_uid_of(current))
            if ahead is not None:
                try:
                    _, prepared, _, _ = await ahead
                except Exception:  # noqa: BLE001 - the handler failed: nothing to list
                    prepared = None
                ahead = None
                if prepared is not None:
                    failed.append(_uid_of(prepared))
            await self._run(assoc, _drain_failed, gen, failed)
            log.info("C-GET from %s: release requested with %d sub-operations left",
                     assoc.calling, counts.remaining)
            counts.failed += counts.remaining
            counts.remaining = 0
            await assoc.send(self._final(rsp_pdus, counts, total, failed,
                                         what=f"C-GET from {assoc.calling}"))

        # The next object is read (worker thread) while the current one is on its way.
        ahead = self._run(assoc, next_sub)
        try:
            while True:
                if event.is_cancelled:
                    _log_outcome(f"C-GET from {assoc.calling}", "canceled", counts)
                    await assoc.send(rsp_pdus(Status.CANCEL, ident=_failed_list(failed)))
                    return
                if assoc.releasing:
                    await give_up(None)
                    return
                try:
                    assert ahead is not None
                    status, ds, pdus, mid = await ahead
                except Exception:
                    log.exception("C-GET handler failed")
                    counts.failed += counts.remaining
                    counts.remaining = 0
                    await assoc.send(rsp_pdus(0xC411, ident=_failed_list(failed)))
                    return
                finally:
                    ahead = None
                if status == "end":
                    break
                if status == "nocontext":
                    counts.sub_done("failure")
                    failed.append(_uid_of(ds))
                    ahead = self._run(assoc, next_sub)
                    await assoc.send(rsp_pdus(Status.PENDING))
                    continue
                code = int(status.Status) if isinstance(status, Dataset) else int(status)
                kind = category(code)
                if kind == "cancel":
                    _log_outcome(f"C-GET from {assoc.calling}", "canceled", counts)
                    await assoc.send(rsp_pdus(status, ident=_failed_list(failed)))
                    return
                if kind in ("failure", "warning"):
                    counts.failed += counts.remaining
                    counts.remaining = 0
                    _log_outcome(f"C-GET from {assoc.calling}", f"ended 0x{code:04X}", counts)
                    await assoc.send(rsp_pdus(status, ident=_failed_list(failed)))
                    return
                if kind == "success":
                    break
                if counts.remaining <= 0:
                    break
                ahead = self._run(assoc, next_sub)
                if pdus is None:  # no data set, or not readable: a failed sub-operation
                    counts.sub_done("failure")
                    failed.append(_uid_of(ds))
                    await assoc.send(rsp_pdus(Status.PENDING))
                    continue
                try:
                    reply = await assoc.request(pdus, mid)
                    sub = int(reply.msg.command_set.get("Status", 0xC000))  # type: ignore[union-attr]
                except ReleaseRequested:
                    await give_up(ds)
                    return
                except TimeoutError:
                    log.warning("C-GET to %s: no C-STORE response within %ss", assoc.calling,
                                self.settings.dimse_timeout)
                    assoc.abort_now("C-STORE response timeout")
                    return
                result = category(sub)
                counts.sub_done("success" if result == "success" else
                                "warning" if result == "warning" else "failure")
                if result != "success":
                    _log_sub_status("C-GET", assoc.calling, _uid_of(ds), sub)
                if result == "failure":
                    failed.append(_uid_of(ds))
                await assoc.send(rsp_pdus(Status.PENDING))
        finally:
            if ahead is not None:  # the generator must not be running when it is closed
                with contextlib.suppress(BaseException):
                    await ahead
            _close(gen)
        await assoc.send(self._final(rsp_pdus, counts, total, failed,
                                     what=f"C-GET from {assoc.calling}"))

    @staticmethod
    def _final(rsp_pdus: Any, counts: Counts, total: int, failed: list[str], *,
               what: str) -> list[bytes]:
        """The final response after the last sub-operation (PS3.4 C.4.2.1.5, C.4.3.1.4):
        Success, 0xB000 when some failed or had a warning, 0xA702 when all failed; logged."""
        if not counts.failed and not counts.warning:
            status = Status.SUCCESS
        elif counts.failed == total:
            status = Status.OUT_OF_RESOURCES_SUBOPS
        else:
            status = Status.SUBOPS_WARNING
        _log_outcome(what, f"ended 0x{int(status):04X}", counts)
        if status == Status.SUCCESS:
            return rsp_pdus(status)  # type: ignore[no-any-return]
        return rsp_pdus(status, ident=_failed_list(failed))  # type: ignore[no-any-return]

    # -- C-MOVE ----------------------------------------------------------------------------

    async def _move(self, assoc: Association, req: Any, cx: Any) -> None:
        """C-MOVE SCP (PS3.4 C.4.2): the sub-operations go over one association we request of
        the destination (:class:`~archivist.dimse.requestor.Outbound`, driven on this loop);
        the handler's generator and the reading of stored objects run in the move pool; pending
        responses go back over this association with back-pressure."""
        event = Event(assoc, req, cx, int(req.MessageID))
        ts = UID(cx.transfer_syntax[0])
        counts = Counts()
        failed: list[str] = []
        holder: dict[str, Any] = {}
        destination_aet = str(req.MoveDestination).strip()

        def rsp_pdus(status: Any, *, with_counts: bool = True, ident: Dataset | None = None
                     ) -> list[bytes]:
            rsp = Response(0x8021)
            rsp.MessageIDBeingRespondedTo = req.MessageID
            rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
            apply_status(rsp, status)
            if with_counts:
                counts.apply(rsp, remaining=int(rsp.Status) in (0xFF00, 0xFE00))
            if ident is None:
                return rsp.encode(int(cx.context_id), assoc.send_max)
            # A final (or canceled) response with its Failed SOP Instance UID List: one PDU
            # when it fits (acceptor_pdu.coalesce, for PixelMed's SCUs)
            rsp.Identifier = BytesIO(encode_dataset(ident, ts))
            return coalesce(rsp.encode(int(cx.context_id), assoc.send_max), assoc.send_max)

        def run(fn: Any, *args: Any) -> asyncio.Future[Any]:
            return assoc.loop.run_in_executor(assoc.acceptor.move_pool, fn, *args)

        def first() -> tuple[Any, Any]:
            gen = iter(self.handlers.handle_move(event))
            holder["gen"] = gen
            destination = next(gen)
            if not isinstance(destination, tuple) or len(destination) < 2 \
                    or None in destination[:2]:
                return None, None
            try:
                return destination, next(gen)
            except StopIteration:
                return destination, 0

        refusal = await run(event.data_refusal)
        if refusal is not None:
            log.warning("C-MOVE from %s refused: %s", assoc.calling,
                        refusal.partition(": ")[0])  # no key values (patient data)
            await assoc.send(rsp_pdus(status_dataset(Status.UNABLE_TO_PROCESS, refusal),
                                      with_counts=False))
            return
        try:
            destination, count = await run(first)
        except Exception:
            log.exception("C-MOVE handler failed")
            _close(holder.get("gen"))
            await assoc.send(rsp_pdus(0xC511, with_counts=False))
            return
        try:
            if destination is None:
                unknown = status_dataset(Status.MOVE_DESTINATION_UNKNOWN,
                                         f"Move Destination {destination_aet} is not a "
                                         "configured peer")
                await assoc.send(rsp_pdus(unknown, with_counts=False))
                return
            total, refusal = sub_operation_total(count, 0xC500)
            if refusal is not None:
                await assoc.send(rsp_pdus(refusal, with_counts=False))
                return
            counts.remaining = total
            if total < 1:
                await assoc.send(rsp_pdus(Status.SUCCESS))
                return
            options = dict(destination[2]) if len(destination) > 2 and destination[2] else {}
            opening = asyncio.ensure_future(Outbound.open(
                self.settings, str(destination[0]), int(destination[1]), destination_aet,
                list(options.get("contexts") or [])))
            # A destination slow to answer (up to acse_timeout) must not delay a C-CANCEL
            # (PS3.4 C.4.2.3.1) nor outlive the requestor's association.
            try:
                while not opening.done() and not event.is_cancelled and not assoc._closed:
                    await asyncio.wait({opening}, timeout=_CANCEL_POLL)
            except BaseException:
                _drop_opening(opening)
                raise
            if not opening.done():
                opening.cancel()
                with contextlib.suppress(BaseException):
                    await opening
                if assoc._closed:
                    return
                _log_outcome(f"C-MOVE from {assoc.calling} to {destination_aet}", "canceled",
                             counts)
                await assoc.send(rsp_pdus(Status.CANCEL, ident=_failed_list(failed)))
                return
            try:
                outbound = opening.result()
            except Exception as exc:  # noqa: BLE001 - refused, unreachable, timed out
                # A configured destination that cannot be reached is not "unknown" (0xA801):
                # every sub-operation fails, so the move is refused as unable to perform its
                # sub-operations (PS3.4 C.4.2.1.5, 0xA702), with the counts and the Failed SOP
                # Instance UID List, as DCMTK's dcmqrscp and dcm4chee answer it.
                log.warning("C-MOVE: cannot associate with %s at %s:%s (%s)",
                            destination_aet, destination[0], destination[1], _reason(exc))
                await run(_drain_failed, holder["gen"], failed)
                counts.failed, counts.remaining = total, 0
                _log_outcome(f"C-MOVE from {assoc.calling} to {destination_aet}",
                             f"ended 0x{Status.OUT_OF_RESOURCES_SUBOPS:04X}", counts)
                status = status_dataset(Status.OUT_OF_RESOURCES_SUBOPS,
                                        f"cannot associate with {destination_aet}")
                await assoc.send(rsp_pdus(status, ident=_failed_list(failed)))
                return
            try:
                final = await self._move_loop(assoc, req, event, holder["gen"], outbound, counts,
                                              failed, rsp_pdus, run)
                if final is not None:
                    # The destination has answered every sub-operation: the final response
                    # does not wait for its A-RELEASE-RP, which a destination that never sends
                    # one would hold back for acse_timeout (past many requestors' DIMSE timeout).
                    await assoc.send(final)
            finally:
                if assoc._closed:
                    await outbound.abort()
                else:
                    self._release_later(outbound)
        finally:
            _close(holder.get("gen"))

    def _release_later(self, outbound: Outbound) -> None:
        """Release a C-MOVE sub-association (PS3.8 7.2) without making anyone wait for it."""
        task = asyncio.get_running_loop().create_task(outbound.release())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _move_loop(self, assoc: Association, req: Any, event: Event, gen: Iterator[Any],
                         outbound: Outbound, counts: Counts, failed: list[str], rsp_pdus: Any,
                         run: Any) -> list[bytes] | None:
        """The sub-operations of one C-MOVE; returns the final response (None: the requestor
        went away)."""
        total = counts.remaining
        originator = assoc.calling
        broken = False
        what = f"C-MOVE from {originator} to {outbound.called}"

        def next_sub() -> tuple[Any, Any, Any]:
            """The next yield with its sub-operation prepared (worker thread)."""
            try:
                status, item = next(gen)
            except StopIteration:
                return "end", None, None
            if item is None or broken or \
                    category(int(status.Status if isinstance(status, Dataset) else status)) \
                    != "pending":
                return status, item, None
            try:
                return status, item, _sub_operation(item, outbound.context_for)
            except _NoContext as exc:
                log.warning("C-MOVE to %s: no accepted context for %s", outbound.called, exc)
            except Exception as exc:  # noqa: BLE001 - counted as a failed sub-operation
                _log_unsendable("C-MOVE to", outbound.called, _uid_of(item), exc)
            return status, item, None

        # The next object is read (worker thread) while the current one is on its way.
        ahead: asyncio.Future[Any] | None = run(next_sub)
        try:
            while True:
                if assoc._closed:
                    _log_outcome(what, "stopped: the requestor went away", counts)
                    return None
                if event.is_cancelled:
                    _log_outcome(what, "canceled", counts)
                    return rsp_pdus(Status.CANCEL, ident=_failed_list(failed))  # type: ignore[no-any-return]
                assert ahead is not None
                status, item, sub = await ahead
                ahead = None
                if status == "end":
                    break
                code = int(status.Status) if isinstance(status, Dataset) else int(status)
                kind = category(code)
                if kind == "cancel":
                    _log_outcome(what, "canceled", counts)
                    return rsp_pdus(status, ident=_failed_list(failed))  # type: ignore[no-any-return]
                if kind in ("failure", "warning"):
                    counts.failed += counts.remaining
                    counts.remaining = 0
                    _log_outcome(what, f"ended 0x{code:04X}", counts)
                    return rsp_pdus(status, ident=_failed_list(failed))  # type: ignore[no-any-return]
                if kind == "success" or counts.remaining <= 0:
                    break
                ahead = run(next_sub)
                result = "failure"
                if sub is not None and not broken:
                    sop_class, sop_instance, scx, data = sub
                    try:
                        code = await outbound.store(scx, outbound.new_message_id(), sop_class,
                                                    sop_instance, data, originator_aet=originator,
                                                    originator_id=int(req.MessageID))
                        result = category(code)
                        if result != "success":
                            _log_sub_status("C-MOVE", outbound.called, sop_instance, code)
                    except Exception as exc:  # noqa: BLE001 - the destination went away
                        log.warning("C-MOVE sub-operation to %s failed (%s); the remaining "
                                    "sub-operations fail", outbound.called, _reason(exc))
                        broken = True
                counts.sub_done("success" if result == "success" else
                                "warning" if result == "warning" else "failure")
                if result not in ("success", "warning"):
                    failed.append(_uid_of(item))
                await assoc.send(rsp_pdus(Status.PENDING))
        finally:
            if ahead is not None:  # the generator must not be running when it is closed
                with contextlib.suppress(BaseException):
                    await ahead
        return self._final(rsp_pdus, counts, total, failed, what=what)

    # -- N-services ------------------------------------------------------------------------

    async def _n_service(self, assoc: Association, field: int, req: Any, cx: Any) -> None:
        name, primitive_cls, rsp_cls = _N_MESSAGES[field]
        event = Event(assoc, req, cx, int(req.MessageID))
        ts = UID(cx.transfer_syntax[0])

        def run() -> list[bytes]:
            rsp = primitive_cls()
            rsp.MessageIDBeingRespondedTo = req.MessageID
            sop_class = getattr(req, "AffectedSOPClassUID", None) or \
                getattr(req, "RequestedSOPClassUID", None)
            sop_instance = getattr(req, "AffectedSOPInstanceUID", None) or \
                getattr(req, "RequestedSOPInstanceUID", None)
            try:
                rsp.AffectedSOPClassUID = sop_class
                if sop_instance:
                    rsp.AffectedSOPInstanceUID = sop_instance
                if name == "N-ACTION" and req.ActionTypeID is not None:
                    rsp.ActionTypeID = req.ActionTypeID
                if name == "N-EVENT-REPORT" and req.EventTypeID is not None:
                    rsp.EventTypeID = req.EventTypeID
            except (TypeError, ValueError, AttributeError):
                pass
            refusal = event.data_refusal()
            status: Any
            try:
                if not names_context_class(str(sop_class or ""), str(cx.abstract_syntax)):
                    # A request for another SOP Class than its presentation context's: refused
                    # as the C-services are (an Inventory Creation N-ACTION on the Verification
                    # context of an association that never negotiated it was performed). No
                    # meta SOP Class (whose contexts carry other classes' N-services) is offered;
                    # UPS Push on a UPS Pull or Watch context is the instance's class (CC.3.1.1).
                    log.warning("%s from %s refused: SOP Class %s on a context of %s", name,
                                assoc.calling, sop_class, cx.abstract_syntax)
                    status, ds = status_dataset(
                        Status.SOP_CLASS_NOT_SUPPORTED,
                        f"Not the SOP Class of presentation context {int(cx.context_id)}"), None
                elif refusal is not None:
                    # Processing failure, with the reason (PS3.7 C.4.2)
                    log.warning("%s from %s refused: %s", name, assoc.calling,
                                refusal.partition(": ")[0])  # no values (patient data)
                    status, ds = status_dataset(0x0110, refusal), None
                else:
                    result = self.handlers.handle_n(name, event)
                    status, ds = result if isinstance(result, tuple) else (result, None)
            except Exception:
                log.exception("%s handler failed", name)
                status, ds = 0x0110, None
            code = apply_status(rsp, status)
            if name == "N-CREATE" and not sop_instance and isinstance(ds, Dataset) \
                    and "AffectedSOPInstanceUID" in ds:
                # The SCP assigned the instance's UID: it goes back in the response's command
                # (PS3.7 10.1.5.1.2), not in its Attribute List (pynetdicom's handler convention).
                rsp.AffectedSOPInstanceUID = ds.AffectedSOPInstanceUID
                del ds.AffectedSOPInstanceUID
                ds = ds if len(ds) else None
            if ds is not None and category(code) in ("success", "warning") \
                    and name in _N_DATASET:
                setattr(rsp, _N_DATASET[name], BytesIO(encode_dataset(ds, ts)))
            return encode_response(rsp_cls, rsp, int(cx.context_id), assoc.send_max)

        await assoc.send(await self._run(assoc, run))


@dataclass
class Counts:
    """Sub-operation counts of C-MOVE/C-GET responses (PS3.4 C.4.2.1.6)."""

    remaining: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0

    def sub_done(self, kind: str) -> None:
        self.remaining -= 1
        if kind == "success":
            self.completed += 1
        elif kind == "warning":
            self.warning += 1
        else:
            self.failed += 1

    def apply(self, rsp: Any, *, remaining: bool) -> None:
        if remaining:
            rsp.NumberOfRemainingSuboperations = self.remaining
        rsp.NumberOfCompletedSuboperations = self.completed
        rsp.NumberOfFailedSuboperations = self.failed
        rsp.NumberOfWarningSuboperations = self.warning


#: Objects larger than this going out as stored are streamed from their file (StreamedData).
STREAM_ABOVE = 8 << 20


class _NoContext(Exception):
    """No accepted presentation context can carry a sub-operation's object."""


def _uid_of(item: Any) -> str:
    if isinstance(item, StoredInstance):
        return item.sop_instance_uid
    return str(item.get("SOPInstanceUID", "")) if isinstance(item, Dataset) else ""


def _sub_operation(item: Any, context_for: Any) -> tuple[str, str, Any, bytes]:
    """What a C-STORE sub-operation of C-MOVE/C-GET sends: ``(SOP Class, SOP Instance, accepted
    context, encoded data set)``.

    A :class:`~archivist.archive.retrieve.StoredInstance` goes out as stored (no parsing) when
    the peer accepted its transfer syntax, and is parsed and re-encoded only for another
    uncompressed syntax; a :class:`Dataset` (from a service's own handler) is encoded.

    Raises
    ------
    _NoContext
        No accepted context for the SOP Class in a usable transfer syntax.
    """
    if isinstance(item, StoredInstance):
        ref = item.ref
        cx = context_for(ref.sop_class_uid, ref.transfer_syntax_uid)
        if cx is None:
            return _imageless_sub_operation(item, context_for(ref.sop_class_uid, None))
        target = str(cx.transfer_syntax[0])
        if ref.size > STREAM_ABOVE and target == ref.transfer_syntax_uid:
            # A large object as stored: read from its file while it is sent, a mebibyte at a
            # time, not held whole (twice, with its PDUs) in memory.
            stored_ts, fh, length = item.encoded_stream()
            if stored_ts == target:
                return ref.sop_class_uid, ref.sop_instance_uid, cx, StreamedData(fh, length)
            fh.close()
        stored_ts, data = item.encoded()
        if target != stored_ts:
            parsed = item.dataset()
            transcode_dataset(parsed, target)  # decompressed, byte order turned, as WADO does
            data = encode_dataset(parsed, UID(target))
        return ref.sop_class_uid, ref.sop_instance_uid, cx, data
    ds: Dataset = item
    sop_class = str(ds.get("SOPClassUID", ""))
    stored = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    cx = context_for(sop_class, stored or None)
    if cx is None:
        raise _NoContext(f"{sop_class} in {stored}")
    return sop_class, str(ds.SOPInstanceUID), cx, encode_dataset(ds, UID(cx.transfer_syntax[0]))


def _imageless_sub_operation(item: StoredInstance, cx: Any) -> tuple[str, str, Any, bytes]:
    """An object with no image (an SR, a presentation state, an Encapsulated PDF...) sent in
    the syntax of `cx`, the first accepted context of its SOP Class, whatever that syntax:
    without pixel data, a data set is written in any syntax as in Explicit VR Little Endian
    (a C-GET requestor such as DCMTK ``getscu +xy`` proposes JPEG Baseline first, which this
    archive cannot make from pixels; its SRs and PDFs failed with the images).

    Raises
    ------
    _NoContext
        No context was accepted for the SOP Class, or the object has an image.
    """
    ref = item.ref
    if cx is not None:
        parsed = item.dataset()
        if without_image(parsed):
            target = str(cx.transfer_syntax[0])
            transcode_dataset(parsed, target)
            return ref.sop_class_uid, ref.sop_instance_uid, cx, encode_dataset(parsed,
                                                                              UID(target))
    raise _NoContext(f"{ref.sop_class_uid} in {ref.transfer_syntax_uid}")


def _drain_failed(gen: Iterator[Any], failed: list[str]) -> None:
    """Add to `failed` the SOP Instance UID of every sub-operation `gen` has yet to yield
    (none of them will be performed; blocking: call from a worker thread)."""
    for yielded in gen:
        if isinstance(yielded, tuple) and len(yielded) == 2 and yielded[1] is not None:
            uid = _uid_of(yielded[1])
            if uid:
                failed.append(uid)


def _log_unsendable(what: str, peer: str, uid: str, exc: BaseException) -> None:
    """A stored instance that could not be sent: deleted meanwhile (a race with a deletion) or
    not convertible to a syntax the peer accepted (the object as stored, e.g. pixel data no
    decoder here reads): warnings; anything else (the file unreadable) an error. The reason
    is given either way."""
    if isinstance(exc, NotFound):
        log.warning("%s %s: stored instance %s was deleted meanwhile", what, peer, uid)
    elif isinstance(exc, TranscodeRefused):
        log.warning("%s %s: stored instance %s not sent in a syntax the peer accepted (%s)",
                    what, peer, uid, _reason(exc))
    else:
        log.error("%s %s: cannot read or re-encode stored instance %s (%s)", what, peer, uid,
                  _reason(exc))


def _drop_opening(opening: asyncio.Future[Outbound]) -> None:
    """Give up an association being requested: stop the request, or abort the association if
    it has just been accepted."""
    if not opening.done():
        opening.cancel()
    elif not opening.cancelled() and opening.exception() is None:
        opening.result().writer.transport.abort()


def _reason(exc: BaseException) -> str:
    """An exception as a log reason: its type and message (a timeout has no message)."""
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) and not text:
        text = "no answer in time"
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _log_sub_status(operation: str, peer: str, sop_instance: str, status: int) -> None:
    """A C-STORE sub-operation the peer answered with a warning or a failure (PS3.4 B.2.3)."""
    level = logging.INFO if category(status) == "warning" else logging.WARNING
    log.log(level, "%s to %s: C-STORE of %s answered 0x%04X (%s)", operation, peer,
            sop_instance, status, category(status))


def _log_outcome(what: str, outcome: str, counts: Counts) -> None:
    """How a C-MOVE or C-GET ended, with its sub-operation counts (PS3.4 C.4.2.1.6)."""
    level = logging.WARNING if (counts.failed or counts.remaining) and outcome != "canceled" \
        else logging.INFO
    log.log(level, "%s %s: %d completed, %d failed, %d warning, %d not performed", what,
            outcome, counts.completed, counts.failed, counts.warning, counts.remaining)


def _failed_list(failed: list[str]) -> Dataset:
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = failed
    return ds


def _close(gen: Any) -> None:
    close = getattr(gen, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


__all__ = ["MAX_INFLATED_DATASET", "DataSetRefused", "Event", "Services"]
