"""Framing for the event-driven acceptor: PDU headers, P-DATA items, DIMSE message assembly.

PS3.8 9.3 defines every PDU as a 6-byte header (type, reserved, 4-byte big-endian length) and a
body. The association PDUs (A-ASSOCIATE-RQ/AC/RJ, A-RELEASE, A-ABORT) are decoded and encoded by
pynetdicom's :mod:`pynetdicom.pdu` classes; P-DATA-TF is framed here because it is the hot path
and its layout is fixed (PS3.8 9.3.5: items of 4-byte length, presentation context ID, then the
PDV whose first byte is the message control header of PS3.8 E.2).

Command sets are decoded by pynetdicom's DIMSE message classes (:mod:`pynetdicom.dimse_messages`)
into DIMSE primitives; data sets stay encoded and are handed to a *sink*: memory for identifiers
and N-service data sets, a temporary file in the data directory for C-STORE data sets (written as
the fragments arrive, so a large object is never assembled in memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
import tempfile
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import _MESSAGE_TYPES, DIMSEMessage  # type: ignore[attr-defined]
from pynetdicom.dsutils import decode, encode

from archivist.archive.ingest import temp_prefix  # named by process: swept if it dies

HEADER = struct.Struct(">BBL")
ITEM = struct.Struct(">LBB")  # item length, presentation context ID, message control header

A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07

#: The largest A-ASSOCIATE-RQ read (PS3.8 sets none): 128 presentation contexts (the odd IDs),
#: each with its abstract syntax and 40 transfer syntaxes of 64 characters, are ~360 KiB.
#: 64 KiB refused a request DCMTK and Orthanc accept (120 classes x 39 syntaxes, 126 KB).
MAX_ASSOCIATE_RQ = 512 * 1024


async def to_the_end(job: asyncio.Future[Any]) -> Any:
    """Await a job of the thread pool. When the association ends meanwhile (a peer A-ABORT
    cancels its tasks), the job still owns what it works on, a received data set's sink: it is
    waited for before the cancellation goes on, so the sink is closed (its file unlinked) only
    after the job is done with it. A thread's job cannot be stopped; closing the sink under it
    failed the store ("refused: storing a blob", QA s23) and could close a descriptor it wrote."""
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await job
        raise


#: User Information sub-items pynetdicom decodes (PS3.7 D.3.3, PS3.8 D.1): maximum length,
#: implementation class UID and version name, asynchronous operations window, role selection,
#: SOP Class extended and common extended negotiation, user identity (request and answer).
_KNOWN_USER_SUB_ITEMS = frozenset({0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59})
#: Where the variable items of an A-ASSOCIATE-RQ's body start (version, reserved, the AE
#: titles, 32 reserved bytes: PS3.8 9.3.2).
_RQ_ITEMS_AT = 68


def known_sub_items_only(body: bytes) -> bytes:
    """The A-ASSOCIATE-RQ `body` (after its PDU header) without the User Information
    sub-items of types this acceptor does not know, which PS3.8 D.2 (Note 2) says an acceptor
    ignores; pynetdicom's decoder raises on them. A body whose items do not parse is returned
    as it is (decoding then says what is wrong)."""
    out = bytearray(body[:_RQ_ITEMS_AT])
    at, changed = _RQ_ITEMS_AT, False
    while at + 4 <= len(body):
        kind, length = body[at], int.from_bytes(body[at + 2:at + 4], "big")
        end = at + 4 + length
        if end > len(body):
            return body
        if kind != 0x50:
            out += body[at:end]
        else:
            subs, sub = bytearray(), at + 4
            while sub + 4 <= end:
                sub_kind, sub_len = body[sub], int.from_bytes(body[sub + 2:sub + 4], "big")
                sub_end = sub + 4 + sub_len
                if sub_end > end:
                    return body
                if sub_kind in _KNOWN_USER_SUB_ITEMS:
                    subs += body[sub:sub_end]
                else:
                    changed = True
                sub = sub_end
            if sub != end:
                return body
            out += bytes((0x50, 0)) + len(subs).to_bytes(2, "big") + subs
        at = end
    if at != len(body) or not changed:
        return body
    return bytes(out)


#: The smallest Maximum Length (PS3.8 D.1) a peer may announce, 0 (unlimited) apart. PS3.8 sets
#: none, but a P-DATA-TF of N bytes carries N - 6 bytes of a message (one PDV item header), so
#: under 7 nothing can be sent at all, and a length of a few bytes splits a 500 MB object into
#: hundreds of millions of PDUs. No implementation in use goes that low (DCMTK's smallest is
#: 4096); the acceptor refuses such an association (A-ASSOCIATE-RJ).
MIN_PEER_MAX_PDU = 256
MIN_ASSOCIATE_RQ = 68  # the fixed fields of the A-ASSOCIATE-RQ variable part (PS3.8 9.3.2)
MAX_COMMAND_SET = 64 * 1024
MAX_SMALL_DATASET = 64 * 1024 * 1024  # identifiers, N-service data sets (held in memory)

# A-ABORT reasons, source 2 = service provider (PS3.8 9.3.8)
ABORT_UNRECOGNIZED_PDU = 1
ABORT_UNEXPECTED_PDU = 2
ABORT_UNRECOGNIZED_PARAMETER = 4
ABORT_UNEXPECTED_PARAMETER = 5
ABORT_INVALID_PARAMETER = 6


class ProtocolError(Exception):
    """The peer broke PS3.8: the association is aborted with `reason` (A-ABORT, source 2)."""

    def __init__(self, message: str, reason: int = ABORT_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


class WriteStalled(ConnectionError):
    """The peer took none of what we are sending for the allowed time: it stopped reading."""


class ObjectTooLarge(OSError):
    """A C-STORE data set over the archive's maximum object size (``max_object_size``): it is
    read to its end and dropped, and the C-STORE refused with a status (:class:`FileSink`)."""


class ReleaseRequested(ConnectionError):
    """The peer asked to release the association (A-RELEASE-RQ) while we wait for its answer
    to a request of ours (the C-STORE of a C-GET sub-operation, an N-EVENT-REPORT): having
    asked, it may send no more P-DATA (PS3.8 9.2, state Sta7), so that answer never comes."""


def a_abort(source: int = 2, reason: int = 0) -> bytes:
    """An A-ABORT PDU (PS3.8 9.3.8); source 0 = service user, 2 = service provider."""
    return struct.pack(">BBLBBBB", A_ABORT, 0, 4, 0, 0, source, reason)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return struct.pack(">BBLBBBB", A_ASSOCIATE_RJ, 0, 4, 0, result, source, reason)


A_RELEASE_RP_PDU = struct.pack(">BBLL", A_RELEASE_RP, 0, 4, 0)


def p_data(context_id: int, control: int, fragment: bytes | memoryview) -> bytes:
    """One P-DATA-TF PDU holding one PDV (PS3.8 9.3.5, E.2)."""
    n = len(fragment)
    return b"".join((HEADER.pack(P_DATA_TF, 0, n + 6), ITEM.pack(n + 2, context_id, control),
                     fragment))


def encode_message(message: DIMSEMessage, context_id: int, max_pdu: int,
                   dataset: bytes | None = None) -> list[bytes]:
    """The P-DATA-TF PDUs carrying `message`, fragmented to the peer's maximum length.

    Parameters
    ----------
    message
        A pynetdicom DIMSE message whose command set is complete (``primitive_to_message``).
    context_id
        The presentation context.
    max_pdu
        The peer's Maximum Length (0 = unlimited), PS3.8 D.1.
    dataset
        The encoded data set, if any (its presence is already recorded in the command set).
    """
    command = encode(message.command_set, True, True)
    assert command is not None
    return fragment_message(bytes(command), context_id, max_pdu, dataset)


class StreamedData:
    """A data set sent from a file as it is read (a large stored object going out as stored in
    a C-STORE sub-operation): `fh` positioned at its first byte, `length` bytes."""

    def __init__(self, fh: Any, length: int) -> None:
        self.fh = fh
        self.length = length

    def __len__(self) -> int:
        return self.length

    def close(self) -> None:
        self.fh.close()


#: The most of a streamed data set read at a time (and put in one PDU when the peer allows it).
STREAM_CHUNK = 1 << 20


async def write_pdus(writer: Any, pdus: Any, stall: float | None = None) -> None:
    """Write PDUs (a list, or a :class:`StreamedMessage`, closed afterwards) to an asyncio
    StreamWriter, waiting for the socket to drain after each mebibyte or so.

    With `stall` (seconds), a wait for the socket to drain in which the peer takes nothing of
    what is waiting for it raises :class:`WriteStalled`: a peer that stops reading must not hold
    the operation (and what it holds: an index cursor, a C-MOVE's outbound association) for
    ever. A slow reader is waited for as long as it keeps taking bytes.
    """
    if not isinstance(pdus, StreamedMessage):
        _check_open(writer)
        writer.writelines(pdus)
        await _drain(writer, stall)
        return
    try:
        pending = 0
        for pdu in pdus:
            _check_open(writer)
            writer.write(pdu)
            pending += len(pdu)
            if pending >= STREAM_CHUNK:
                await _drain(writer, stall)
                pending = 0
        await _drain(writer, stall)
    finally:
        pdus.close()


def _check_open(writer: Any) -> None:
    """ConnectionResetError when the connection is closed (the peer reset it while we were
    busy elsewhere): uvloop refuses the write with a RuntimeError, asyncio's loop drops it."""
    if writer.transport.is_closing():
        raise ConnectionResetError("the connection is closed")


async def _drain(writer: Any, stall: float | None) -> None:
    """``writer.drain()``; with `stall`, :class:`WriteStalled` when `stall` seconds pass with
    nothing of the transport's buffer taken by the peer."""
    transport = writer.transport
    if stall is None or not transport.get_write_buffer_size():
        await writer.drain()  # nothing waiting (the usual case): no timer to set up
        return
    while True:
        waiting = transport.get_write_buffer_size()
        try:
            async with asyncio.timeout(stall):
                await writer.drain()
            return
        except TimeoutError:
            if transport.get_write_buffer_size() >= waiting:
                raise WriteStalled(f"the peer took nothing of {waiting} bytes waiting for it "
                                   f"in {stall:g} s") from None


class StreamedMessage:
    """The PDUs of a command set and a :class:`StreamedData` data set, made as they are sent
    (iterate it once; :meth:`close` closes the file): memory stays at a chunk whatever the
    object's size."""

    def __init__(self, command: bytes, context_id: int, max_pdu: int,
                 data: StreamedData) -> None:
        self.command = command
        self.context_id = context_id
        self.max_pdu = max_pdu
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield from fragment_message(self.command, self.context_id, self.max_pdu)
        step = min(self.max_pdu - 6, STREAM_CHUNK) if self.max_pdu else STREAM_CHUNK
        remaining = self.data.length
        while remaining > 0:
            chunk = self.data.fh.read(min(step, remaining))
            if not chunk:
                raise OSError("the stored object is shorter than when it was opened")
            remaining -= len(chunk)
            yield p_data(self.context_id, 0x02 if remaining == 0 else 0x00, chunk)

    def close(self) -> None:
        self.data.close()


def fragment_message(command: bytes, context_id: int, max_pdu: int,
                     dataset: bytes | StreamedData | None = None) -> Any:
    """P-DATA-TF PDUs for an encoded command set and data set (PS3.8 E.2, D.1): a list, or a
    :class:`StreamedMessage` for a :class:`StreamedData` data set."""
    if 0 < max_pdu <= 6:
        raise ValueError(f"a Maximum Length of {max_pdu} bytes cannot carry a PDV")
    if isinstance(dataset, StreamedData):
        return StreamedMessage(command, context_id, max_pdu, dataset)
    out: list[bytes] = []
    for payload, last_control, more_control in ((command, 0x03, 0x01), (dataset, 0x02, 0x00)):
        if payload is None or (payload is dataset and not payload):
            continue
        size = len(payload)
        step = (max_pdu - 6) if max_pdu else size or 1
        view = memoryview(payload)
        offset = 0
        while True:
            end = offset + step
            last = end >= size
            out.append(p_data(context_id, last_control if last else more_control,
                              view[offset:end]))
            if last:
                break
            offset = end
    return out


#: Largest P-DATA-TF :func:`coalesce` builds (identifiers and small objects only: a large data
#: set keeps a PDU of its own, so it is never copied once more).
COALESCE_LIMIT = 64 * 1024


def coalesce(pdus: list[bytes], max_pdu: int) -> list[bytes]:
    """The same PDUs, with each command set's last fragment and a data set that follows it
    whole joined in one P-DATA-TF PDU of two PDV items when that fits the peer's Maximum
    Length (`max_pdu`, 0 = unlimited) and :data:`COALESCE_LIMIT` (PS3.8 9.3.5: a P-DATA-TF
    carries one or more PDV items).

    Used for the final responses of C-MOVE and C-GET that carry a Failed SOP Instance UID
    List: PixelMed's ``MoveSOPClassSCU`` and ``GetSOPClassSCU`` stop reading at a final
    response's command set unless its data set comes in the same PDU, then meet the list in a
    PDU of its own while releasing and abort the association ("unexpected PDU"). Not used for
    pending responses: GDCM 3.0's ``gdcmscu`` drops every other C-FIND response whose command
    and identifier share a PDU; after a final response nothing of the operation follows.
    """
    limit = min(max_pdu, COALESCE_LIMIT) if max_pdu else COALESCE_LIMIT
    out: list[bytes] = []
    i = 0
    while i < len(pdus):
        first = pdus[i]
        if i + 1 < len(pdus) and _single_pdv_control(first) == 0x03 \
                and _single_pdv_control(pdus[i + 1]) == 0x02:
            second = pdus[i + 1]
            body = len(first) + len(second) - 12
            if body <= limit:
                out.append(b"".join((HEADER.pack(P_DATA_TF, 0, body), first[6:], second[6:])))
                i += 2
                continue
        out.append(first)
        i += 1
    return out


def _single_pdv_control(pdu: bytes) -> int | None:
    """The message control header of a P-DATA-TF PDU holding exactly one PDV item, else None."""
    if len(pdu) < 12 or pdu[0] != P_DATA_TF:
        return None
    length = HEADER.unpack_from(pdu)[2]
    item_len = ITEM.unpack_from(pdu, 6)[0]
    if length != len(pdu) - 6 or item_len != length - 4:
        return None
    return int(pdu[11])


# Command elements (group 0000) by keyword: element number and VR, for the direct encoder.
_COMMAND_ELEMENTS = {
    "AffectedSOPClassUID": (0x0002, "UI"), "CommandField": (0x0100, "US"),
    "MessageID": (0x0110, "US"), "MessageIDBeingRespondedTo": (0x0120, "US"),
    "Priority": (0x0700, "US"), "CommandDataSetType": (0x0800, "US"), "Status": (0x0900, "US"),
    "ErrorID": (0x0903, "US"), "AffectedSOPInstanceUID": (0x1000, "UI"),
    "NumberOfRemainingSuboperations": (0x1020, "US"),
    "NumberOfCompletedSuboperations": (0x1021, "US"),
    "NumberOfFailedSuboperations": (0x1022, "US"),
    "NumberOfWarningSuboperations": (0x1023, "US"),
    "MoveOriginatorApplicationEntityTitle": (0x1030, "AE"),
    "MoveOriginatorMessageID": (0x1031, "US"),
}


def encode_command(values: dict[str, Any]) -> bytes:
    """A command set (PS3.7 6.3.1: Implicit VR Little Endian, group length first, elements in
    tag order) from its values by keyword; None values are left out.

    UIDs, AE titles and unsigned shorts (every response status, the C-STORE-RQ of a
    sub-operation) are encoded directly, as pydicom would encode them (UIDs padded with NUL,
    AE titles with a space); a command with a value of another kind (Error Comment, Offending
    Element, ...) is encoded by pydicom.
    """
    direct = _encode_command_directly(values)
    if direct is not None:
        return direct
    cs = Dataset()
    for keyword, value in values.items():
        if value is not None:
            setattr(cs, keyword, value)
    body = bytes(encode(cs, True, True))  # type: ignore[arg-type]
    head = Dataset()
    head.CommandGroupLength = len(body)
    return bytes(encode(head, True, True)) + body  # type: ignore[arg-type]


def _encode_command_directly(values: dict[str, Any]) -> bytes | None:
    """:func:`encode_command` without pydicom; None when a value is not a UID, an AE title or
    an unsigned short."""
    parts: list[tuple[int, bytes]] = []
    for keyword, value in values.items():
        if value is None:
            continue
        spec = _COMMAND_ELEMENTS.get(keyword)
        if spec is None:
            return None
        element, vr = spec
        if vr == "US":
            if type(value) is not int or not 0 <= value <= 0xFFFF:
                return None
            raw = value.to_bytes(2, "little")
        else:
            if not isinstance(value, str) or not value.isascii():
                return None
            raw = value.encode("ascii")
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
        parts.append((element, struct.pack("<HHI", 0, element, len(raw)) + raw))
    parts.sort()
    body = b"".join(p for _, p in parts)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


#: Who wrote the files Archivist receives (PS3.10 7.1), also announced in associations (PS3.7 D.3.3.2).
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1.20261124.1"
IMPLEMENTATION_VERSION_NAME = "ARCHIVIST_0.1.0"


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _ui(uid: str) -> bytes:
    raw = uid.strip().rstrip("\0").encode("ascii", "replace")
    return raw + b"\0" if len(raw) % 2 else raw


def file_meta_prefix(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta group for a received data set (PS3.10 7.1),
    encoded directly (explicit VR little endian, as the standard fixes it for group 0002)."""
    version = IMPLEMENTATION_VERSION_NAME.encode("ascii")
    if len(version) % 2:
        version += b" "
    body = b"".join((
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _ui(sop_class)),
        _meta_element(0x0003, b"UI", _ui(sop_instance)),
        _meta_element(0x0010, b"UI", _ui(transfer_syntax)),
        _meta_element(0x0012, b"UI", _ui(IMPLEMENTATION_CLASS_UID)),
        _meta_element(0x0013, b"SH", version),
    ))
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"\x00" * 128 + b"DICM" + group_length + body


#: The Implicit VR Little Endian transfer syntax, the one whose data elements carry no VR.
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
#: The deflated syntaxes: their data set is a deflate stream, its first bytes say nothing of it.
_DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"})


def vr_encoding_mismatch(head: bytes, transfer_syntax: str) -> str | None:
    """Why a received data set is not encoded as its presentation context's transfer syntax
    says, or None: its first data element is read with the VR encoding of the other syntax.

    PS3.5 7.1.2 / 7.1.3: in Implicit VR Little Endian an element has no VR, in every other
    uncompressed or encapsulated syntax it has one. The test is pydicom's (two letters A-Z
    where an explicit VR stands): ingest parses with pydicom, which reads a data set in the
    other encoding without complaint, so such an object would be indexed and then stored under
    a File Meta naming the context's syntax, which no reader (DCMTK, Orthanc) can parse.

    Parameters
    ----------
    head
        The first bytes (at least 6) of the data set, after the File Meta prefix.
    transfer_syntax
        The transfer syntax UID of the presentation context it came on.
    """
    if len(head) < 6 or transfer_syntax in _DEFLATED:
        return None
    explicit = 0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B
    implicit_context = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    if explicit and implicit_context:
        return "data set in explicit VR, the context's syntax is implicit VR"
    if not explicit and not implicit_context:
        return "data set in implicit VR, the context's syntax is explicit VR"
    return None


class MemorySink:
    """Collects a small data set (identifier, N-service data set) in memory, capped."""

    def __init__(self, cap: int = MAX_SMALL_DATASET) -> None:
        self.buf = bytearray()
        self.cap = cap

    def write(self, data: bytes | memoryview) -> None:
        if len(self.buf) + len(data) > self.cap:
            raise ProtocolError(f"data set larger than {self.cap} bytes", ABORT_INVALID_PARAMETER)
        self.buf += data

    def needs_flush(self) -> bool:
        return False

    def close(self) -> None:
        self.buf = bytearray()


class FileSink:
    """A C-STORE data set on its way to a temporary file in the data directory.

    Small data sets stay in memory and are written by :meth:`finish` (in a worker thread, together
    with the ingest); once more than `spill` bytes are waiting they are written out by
    :meth:`flush` (also meant for a worker thread) so memory stays bounded whatever the size.
    """

    def __init__(self, tmp_dir: Path, prefix: bytes, *, cap: int, spill: int = 1 << 20) -> None:
        self.tmp_dir = tmp_dir
        self.pending: list[bytes] = [prefix]
        self.pending_size = len(prefix)
        self.size = 0
        #: The first bytes of the data set (up to 8: a first element's tag, VR and length).
        self.head = b""
        self.cap = cap
        self.spill = spill
        self.fd: int | None = None
        self.path: Path | None = None
        self.error: OSError | None = None

    def write(self, data: bytes | memoryview) -> None:
        if len(self.head) < 8:
            self.head += bytes(data[:8 - len(self.head)])
        self.size += len(data)
        if self.size > self.cap:
            raise ProtocolError(f"data set larger than {self.cap} bytes", ABORT_INVALID_PARAMETER)
        if self.error is None:
            self.pending.append(bytes(data))
            self.pending_size += len(data)

    def over_cap(self, n: int) -> bool:
        """Whether `n` more bytes take the object past `cap`. If so the object is dropped
        (what was written is removed), the caller reads the rest of the data set and discards
        it instead of calling :meth:`write`, and :meth:`finish` raises
        :class:`ObjectTooLarge`: the C-STORE is refused with a status and the association goes
        on, as for a full disk."""
        if self.size + n <= self.cap:
            return False
        self.size += n
        if not isinstance(self.error, ObjectTooLarge):
            self.close()
            # The Error Comment (LO: 64 characters at most)
            self.error = ObjectTooLarge(f"object larger than the maximum object size "
                                        f"({self.cap} bytes)")
        return True

    def needs_flush(self) -> bool:
        return self.pending_size >= self.spill

    def flush(self) -> None:
        """Write what is waiting (blocking: call from a worker thread).

        A write that fails (a full disk) does not end the association: the error is kept, the
        file dropped, the rest of the data set read and discarded, and :meth:`finish` raises
        it, so the C-STORE gets a failure status and the association goes on.
        """
        chunks, self.pending, self.pending_size = self.pending, [], 0
        if self.error is not None:
            return
        try:
            if self.fd is None:
                fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix=temp_prefix("dimse"),
                                            suffix=".dcm")
                self.fd, self.path = fd, Path(name)
            view = memoryview(b"".join(chunks))
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            self.error = exc
            self.close()

    def held(self) -> bytes | None:
        """The whole object (File Meta prefix and data set) if none of it was written out yet
        (it stayed under `spill`); None otherwise. What is held is handed over."""
        if self.fd is not None or self.error is not None:
            return None
        data = b"".join(self.pending)
        self.pending, self.pending_size = [], 0
        return data

    def finish(self) -> Path:
        """Write the rest and close; returns the file (blocking: call from a worker thread).

        Raises
        ------
        OSError
            Writing the temporary file failed (now or in an earlier :meth:`flush`).
        """
        self.flush()
        if self.error is not None:
            raise self.error
        assert self.fd is not None and self.path is not None
        os.close(self.fd)
        self.fd = None
        return self.path

    def close(self) -> None:
        """Drop the temporary file (after ingest consumed or refused it, or on abort)."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None
        self.pending = []


_COMMAND_ELEMENT = struct.Struct("<HHL")  # group, element, value length (Implicit VR LE)
_US = struct.Struct("<H")
_GROUP_LENGTH, _SOP_CLASS, _FIELD, _MESSAGE_ID, _MOVE_DESTINATION, _PRIORITY, _DATA_SET_TYPE = (
    0x0000, 0x0002, 0x0100, 0x0110, 0x0600, 0x0700, 0x0800)
_SOP_INSTANCE, _ORIGINATOR_AET, _ORIGINATOR_ID = 0x1000, 0x1030, 0x1031
_NO_DATA_SET = 0x0101
_QUERY = frozenset((_GROUP_LENGTH, _SOP_CLASS, _FIELD, _MESSAGE_ID, _PRIORITY, _DATA_SET_TYPE))
#: The elements each request decoded here may carry (PS3.7 9.3), by Command Field: C-STORE-RQ,
#: C-GET-RQ, C-FIND-RQ, C-MOVE-RQ, C-ECHO-RQ.
_REQUEST_ELEMENTS = {
    0x0001: _QUERY | {_SOP_INSTANCE, _ORIGINATOR_AET, _ORIGINATOR_ID},
    0x0010: _QUERY,
    0x0020: _QUERY,
    0x0021: _QUERY | {_MOVE_DESTINATION},
    0x0030: _QUERY - {_PRIORITY},
}
_SHORTS = (_FIELD, _MESSAGE_ID, _PRIORITY, _DATA_SET_TYPE, _ORIGINATOR_ID)
_PLAIN_UID = re.compile(rb"[0-9.]{1,64}")
_AE_TITLE = re.compile(rb" *[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]{0,15}")


class _DecodedRequest:
    """What :func:`decode_request` builds stands for the primitive, for the received message
    (``command_set``) and for its command set (attribute access and ``get``)."""

    __slots__ = ()

    is_valid_request = True

    @property
    def command_set(self) -> _DecodedRequest:
        return self

    def get(self, keyword: str, default: Any = None) -> Any:
        value = getattr(self, keyword, None)
        return default if value is None else value


class StoreRequest(_DecodedRequest):
    """A C-STORE-RQ decoded without pydicom and pynetdicom (the hot path of ingest).

    It stands for pynetdicom's ``C_STORE`` primitive (the same attributes, UIDs as ``str``),
    for the received message (``command_set``) and for its command set (attribute access and
    ``get``). :func:`decode_request` builds one only for a command set of the usual shape;
    anything else takes pynetdicom's way, whose checks then decide.
    """

    __slots__ = ("AffectedSOPClassUID", "AffectedSOPInstanceUID", "MessageID",
                 "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID", "Priority",
                 "context_id")

    CommandField = 0x0001

    def __init__(self, message_id: int, sop_class: str, sop_instance: str, priority: int,
                 originator_aet: str | None, originator_id: int | None) -> None:
        self.MessageID = message_id
        self.AffectedSOPClassUID = sop_class
        self.AffectedSOPInstanceUID = sop_instance
        self.Priority = priority
        self.MoveOriginatorApplicationEntityTitle = originator_aet
        self.MoveOriginatorMessageID = originator_id
        self.context_id: int | None = None


class QueryRequest(_DecodedRequest):
    """A C-ECHO-RQ, C-FIND-RQ, C-GET-RQ or C-MOVE-RQ decoded like :class:`StoreRequest`: the
    attributes of pynetdicom's primitive for it (``Identifier``, a ``BytesIO``, once the data
    set has come; ``MoveDestination`` without its space padding), the received message and
    its command set.

    Decoding a command set through pydicom and pynetdicom took ~0.15-0.2 ms of CPU, more than
    the rest of a C-ECHO; a C-FIND paid it for every query.
    """

    __slots__ = ("AffectedSOPClassUID", "CommandField", "Identifier", "MessageID",
                 "MoveDestination", "Priority", "context_id")

    def __init__(self, field: int, message_id: int, sop_class: str, priority: int | None,
                 destination: str | None) -> None:
        self.CommandField = field
        self.MessageID = message_id
        self.AffectedSOPClassUID = sop_class
        self.Priority = priority
        self.MoveDestination = destination
        self.Identifier: BytesIO | None = None
        self.context_id: int | None = None


class StoreResponse(_DecodedRequest):
    """A C-STORE-RSP decoded like :class:`StoreRequest`, as the received message and its command
    set (``Status``, ``MessageIDBeingRespondedTo``...): every sub-operation of a C-MOVE or C-GET
    gets one back, and decoding it through pydicom and pynetdicom was about a quarter of the
    CPU a retrieve took. Only the usual shape (no Error Comment, Offending Element or Error ID,
    no data set) is decoded here; anything else takes pynetdicom's way."""

    __slots__ = ("AffectedSOPClassUID", "AffectedSOPInstanceUID", "MessageIDBeingRespondedTo",
                 "Status", "context_id")

    CommandField = 0x8001
    CommandDataSetType = _NO_DATA_SET
    is_valid_request = False

    def __init__(self, responding_to: int, status: int, sop_class: str | None,
                 sop_instance: str | None) -> None:
        self.MessageIDBeingRespondedTo = responding_to
        self.Status = status
        self.AffectedSOPClassUID = sop_class
        self.AffectedSOPInstanceUID = sop_instance
        self.context_id: int | None = None


_RESPONDING_TO, _STATUS = 0x0120, 0x0900
#: The elements a C-STORE-RSP decoded here may carry (PS3.7 9.3.1.2), the optional ones
#: (Affected SOP Class / Instance UID) included.
_STORE_RESPONSE = frozenset((_GROUP_LENGTH, _SOP_CLASS, _FIELD, _RESPONDING_TO, _DATA_SET_TYPE,
                             _STATUS, _SOP_INSTANCE))


def decode_store_response(command: bytes) -> StoreResponse | None:
    """The C-STORE-RSP in `command` (an encoded command set), or None when it is another
    command or out of the ordinary (see :class:`StoreResponse`)."""
    values = _command_elements(command)
    return None if values is None else _store_response(values)


def _store_response(values: dict[int, bytes]) -> StoreResponse | None:
    if not _STORE_RESPONSE.issuperset(values):
        return None
    shorts = []
    for element in (_FIELD, _RESPONDING_TO, _DATA_SET_TYPE, _STATUS):
        raw = values.get(element)
        if raw is None or len(raw) != 2:
            return None
        shorts.append(_US.unpack(raw)[0])
    field, responding_to, data_set, status = shorts
    if field != 0x8001 or data_set != _NO_DATA_SET:
        return None
    uids: list[str | None] = []
    for element in (_SOP_CLASS, _SOP_INSTANCE):
        raw = values.get(element)
        uid = _plain_uid(raw) if raw else None  # absent or empty: None
        if raw and uid is None:
            return None
        uids.append(uid)
    return StoreResponse(responding_to, status, uids[0], uids[1])


def _plain_uid(value: bytes) -> str | None:
    """A UID of digits and dots (a trailing NUL or space of padding dropped), else None."""
    if value[-1:] in (b"\0", b" "):
        value = value[:-1]
    return value.decode("ascii") if _PLAIN_UID.fullmatch(value) else None


def decode_request(command: bytes) -> StoreRequest | QueryRequest | None:
    """The C-STORE, C-ECHO, C-FIND, C-GET or C-MOVE request in `command` (an encoded command
    set, PS3.7 6.3.1), or None when it is another command or anything out of the ordinary: an
    element the request does not carry, a value of an unexpected length, a UID of other
    characters than digits and dots, an unknown priority, a data set where there is none or
    none where there is one, a Move Destination that is no AE title. Such command sets are
    decoded by pydicom and pynetdicom as before, whose checks then decide."""
    values = _command_elements(command)
    return None if values is None else _request(values)


def _command_elements(command: bytes) -> dict[int, bytes] | None:
    """The values of an encoded command set (Implicit VR Little Endian, PS3.7 6.3.1) by
    element number, or None when it is not a plain run of group 0000 elements (one that
    overruns the end, or comes twice)."""
    values: dict[int, bytes] = {}
    pos, end = 0, len(command)
    while pos < end:
        if end - pos < 8:
            return None
        group, element, length = _COMMAND_ELEMENT.unpack_from(command, pos)
        pos += 8
        if group != 0 or pos + length > end or element in values:
            return None
        values[element] = command[pos:pos + length]
        pos += length
    return values


def _request(values: dict[int, bytes]) -> StoreRequest | QueryRequest | None:
    shorts: dict[int, int] = {}
    for element in _SHORTS:
        raw = values.get(element)
        if raw is None:
            continue
        if len(raw) != 2:
            return None
        shorts[element] = _US.unpack(raw)[0]
    field = shorts.get(_FIELD)
    allowed = _REQUEST_ELEMENTS.get(field)  # type: ignore[arg-type]
    if allowed is None or not allowed.issuperset(values) or _MESSAGE_ID not in shorts:
        return None
    priority = shorts.get(_PRIORITY)
    data_set = shorts.get(_DATA_SET_TYPE, _NO_DATA_SET) != _NO_DATA_SET
    if field == 0x0030:
        if data_set or _DATA_SET_TYPE not in shorts:
            return None
    elif priority not in (0, 1, 2) or not data_set:
        return None
    sop_class = _plain_uid(values.get(_SOP_CLASS, b""))
    if sop_class is None:
        return None
    if field == 0x0001:
        sop_instance = _plain_uid(values.get(_SOP_INSTANCE, b""))
        if sop_instance is None:
            return None
        originator: str | None = None
        if _ORIGINATOR_AET in values:
            try:
                originator = values[_ORIGINATOR_AET].decode("ascii").strip() or None
            except UnicodeDecodeError:
                return None
        return StoreRequest(shorts[_MESSAGE_ID], sop_class, sop_instance, priority or 0,
                            originator, shorts.get(_ORIGINATOR_ID))
    destination: str | None = None
    if field == 0x0021:
        # Space padding only (PS3.5 6.2): a NUL-padded value is no AE title for pynetdicom,
        # which refuses it; taken here, it was accepted or not by the shape of the rest.
        raw = values.get(_MOVE_DESTINATION, b"").rstrip(b" ")
        if len(raw) > 16 or not _AE_TITLE.fullmatch(raw):
            return None
        destination = raw.decode("ascii").strip()
    return QueryRequest(field, shorts[_MESSAGE_ID], sop_class, priority, destination)  # type: ignore[arg-type]


def quick_ack_for(sock: Any) -> Callable[[], None]:
    """A function that makes the kernel acknowledge what was received at once (TCP_QUICKACK).

    Most SCUs (pynetdicom's among them) do not set TCP_NODELAY and send a message as two
    P-DATA-TF PDUs (command, then data set): Nagle's algorithm holds the second back until the
    first is acknowledged, and Linux delays that ACK by up to 40 ms. Quick-ack mode is not
    sticky (the kernel leaves it by itself), so it is re-armed after every PDU header read.
    Measured: a C-FIND over a new pynetdicom association, 72 -> 34 ms median. The same holds
    for the peers the archive calls: DCMTK's storescp (without TCP_NODELAY in its environment,
    Debian's default) answers a C-STORE in two writes, and a C-MOVE to it took 44 ms per object
    until the requestor acknowledged at once too.

    `sock`: the socket itself where there is one (uvloop's transport gives a stand-in,
    PseudoSocket, that makes a socket object at every call, ~2 % of a busy ingest).
    """
    option = getattr(socket, "TCP_QUICKACK", None)
    if sock is None or option is None:
        return lambda: None

    def arm() -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)

    return arm


class Message:
    """One DIMSE message being received: command set, then (optionally) its data set."""

    def __init__(self) -> None:
        self.context_id: int | None = None
        self.command = bytearray()
        self.msg: DIMSEMessage | StoreRequest | QueryRequest | StoreResponse | None = None
        self.field = 0
        self.primitive: Any = None
        self.has_dataset = False
        self.sink: MemorySink | FileSink | None = None
        self.complete = False

    @property
    def command_field(self) -> int:
        assert self.msg is not None
        return self.field

    def add_command(self, context_id: int, data: bytes | memoryview, last: bool) -> None:
        if self.msg is not None:
            raise ProtocolError("command fragment after the command set was complete",
                                ABORT_UNEXPECTED_PARAMETER)
        if self.context_id is not None and context_id != self.context_id:
            raise ProtocolError("command fragments on different presentation contexts",
                                ABORT_INVALID_PARAMETER)
        self.context_id = context_id
        if len(self.command) + len(data) > MAX_COMMAND_SET:
            raise ProtocolError("command set too large", ABORT_INVALID_PARAMETER)
        self.command += data
        if not last:
            return
        command = bytes(self.command)
        values = _command_elements(command)
        response = None if values is None else _store_response(values)
        if response is not None:
            response.context_id = context_id
            self.msg, self.field = response, 0x8001
            self.has_dataset = False
            self.complete = True
            return
        request = None if values is None else _request(values)
        if request is not None:
            request.context_id = context_id
            self.msg, self.field = request, request.CommandField
            self.has_dataset = request.CommandField != 0x0030
            if not self.has_dataset:
                self.complete = True
            return
        try:
            cs = decode(BytesIO(command), True, True)
            field = int(cs.CommandField)
            cls = _MESSAGE_TYPES[field][1]
            msg = cls()
            msg.command_set = cs
            msg.context_id = context_id
            self.has_dataset = int(cs.get("CommandDataSetType", 0x0101)) != 0x0101
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the peer's
            raise ProtocolError(f"undecodable command set ({type(exc).__name__})",
                                ABORT_INVALID_PARAMETER) from None
        self.msg, self.field = msg, field
        if not self.has_dataset:
            self.complete = True

    def primitive_of(self) -> Any:
        """The DIMSE primitive (pynetdicom's ``message_to_primitive``), data set attached."""
        assert self.msg is not None
        msg = self.msg
        if isinstance(msg, StoreRequest):
            return msg
        if isinstance(msg, QueryRequest):
            if msg.CommandField != 0x0030:
                data = bytes(self.sink.buf) if isinstance(self.sink, MemorySink) else b""
                msg.Identifier = BytesIO(data)
            return msg
        if isinstance(self.sink, MemorySink):
            msg.data_set = BytesIO(bytes(self.sink.buf))
        else:
            msg.data_set = BytesIO()
        try:
            return msg.message_to_primitive()
        except Exception as exc:  # noqa: BLE001
            raise ProtocolError(f"invalid command set ({type(exc).__name__})",
                                ABORT_INVALID_PARAMETER) from None
