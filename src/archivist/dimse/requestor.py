"""Associations Archivist requests: the C-STORE sub-operations of a C-MOVE (PS3.4 C.4.2.3).

They run on the acceptor's event loop with the acceptor's framing (:mod:`archivist.dimse.acceptor_pdu`):
no threads of their own, no polling, one association per C-MOVE, each data set sent as it is
stored. pynetdicom encodes and decodes the A-ASSOCIATE PDUs and negotiates the presentation
contexts (:func:`pynetdicom.presentation.negotiate_as_requestor`), as in the acceptor.

Why not pynetdicom's SCU (``AE.associate`` + ``send_c_store``), which C-MOVE used before: its
association reactor thread and ``send_c_store`` race for the C-STORE response. ``send_c_store``
pauses the reactor by waiting until a flag says it is paused, but the flag is still set from the
previous pause while the reactor is waking up; when the GIL is busy (other threads of a loaded
server) the reactor then takes the response off the queue ("Received unexpected C-STORE service
message"), ``send_c_store`` waits its whole DIMSE timeout, aborts, and every later sub-operation
of the move fails with ``RuntimeError`` (seen in the benchmark: 3 of 9 moves of 300 instances
delivered part of the study after about a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Any

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_requestor

from archivist.archive.transcode import DEFLATED_LE, ENCODABLE
from archivist.dimse import acceptor_pdu as pdu
from archivist.dimse.acceptor_pdu import (
    A_ABORT,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    HEADER,
    ITEM,
    MAX_ASSOCIATE_RQ,
    P_DATA_TF,
    Message,
    ProtocolError,
    a_abort,
    encode_command,
    fragment_message,
    quick_ack_for,
    write_pdus,
)

log = logging.getLogger("archivist.dimse")

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
A_RELEASE_RQ_PDU = struct.pack(">BBLL", A_RELEASE_RQ, 0, 4, 0)
_SEND_CAP = 1 << 20  # never send PDUs larger than this, whatever the peer accepts
_RECV_CAP = 1 << 24  # a response PDU larger than this is refused (responses are small)


class AssociationRefused(Exception):
    """The peer rejected (A-ASSOCIATE-RJ) or aborted the association request, or accepted none
    of the proposed presentation contexts."""


def c_store_rq(message_id: int, sop_class: str, sop_instance: str, *, priority: int = 0,
               originator_aet: str | None = None, originator_id: int | None = None) -> bytes:
    """The encoded command set of a C-STORE-RQ with a data set (PS3.7 9.3.1.1), group length
    first, Implicit VR Little Endian (PS3.7 6.3.1)."""
    values: dict[str, Any] = {
        "AffectedSOPClassUID": str(sop_class), "CommandField": 0x0001, "MessageID": message_id,
        "Priority": priority, "CommandDataSetType": 0x0000,
        "AffectedSOPInstanceUID": str(sop_instance)}
    if originator_aet:
        values["MoveOriginatorApplicationEntityTitle"] = originator_aet
        values["MoveOriginatorMessageID"] = int(originator_id or 0)
    return encode_command(values)


class Outbound:
    """One association Archivist requested, used by one task at a time (window of 1).

    Use :meth:`open`, then :meth:`request` for each message, then :meth:`release` (or
    :meth:`abort`). Every method runs on the event loop.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 accepted: dict[int, PresentationContext], send_max: int, settings: Any,
                 called: str) -> None:
        self.reader = reader
        self.writer = writer
        self.accepted = accepted
        self.send_max = send_max
        self.settings = settings
        self.called = called
        self.closed = False
        self._next_id = 1
        # Each response acknowledged at once (see quick_ack_for: storescp answers in two writes).
        self._ack = quick_ack_for(writer.get_extra_info("socket"))

    @classmethod
    async def open(cls, settings: Any, host: str, port: int, called: str,
                   contexts: list[PresentationContext]) -> Outbound:
        """Connect and negotiate (PS3.8 7.1), within ``acse_timeout`` seconds.

        Raises
        ------
        AssociationRefused
            Rejected, aborted, or no context accepted.
        OSError, TimeoutError
            The connection failed.
        """
        proposed: list[PresentationContext] = []
        for i, cx in enumerate(contexts[:128]):
            copy = PresentationContext()
            copy.context_id = 2 * i + 1
            copy.abstract_syntax = cx.abstract_syntax
            copy.transfer_syntax = list(cx.transfer_syntax)
            proposed.append(copy)
        if not proposed:
            raise AssociationRefused("no presentation context to propose")
        from archivist.core.tls import client_context

        tls = client_context(settings, called)  # a peer of dicom_tls_peers: TLS
        async with asyncio.timeout(settings.acse_timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 21, ssl=tls)
            try:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                writer.write(_associate_rq(settings, called, proposed))
                await writer.drain()
                header = await reader.readexactly(6)
                pdu_type, _, length = HEADER.unpack(header)
                if length > MAX_ASSOCIATE_RQ:
                    raise AssociationRefused(f"answer of {length} bytes")
                body = await reader.readexactly(length)
            except BaseException:
                writer.transport.abort()
                raise
        try:
            if pdu_type == pdu.A_ASSOCIATE_RJ:
                rj = A_ASSOCIATE_RJ()
                rj.decode(header + body)
                raise AssociationRefused(f"rejected (result {rj.result}, source {rj.source}, "
                                         f"reason {rj.reason_diagnostic})")
            if pdu_type != pdu.A_ASSOCIATE_AC:
                raise AssociationRefused(f"answered with PDU type 0x{pdu_type:02X}")
            ac_pdu = A_ASSOCIATE_AC()
            ac_pdu.decode(header + body)
            ac = ac_pdu.to_primitive()
            results = negotiate_as_requestor(
                proposed, ac.presentation_context_definition_results_list or [])
        except BaseException:
            writer.transport.abort()
            raise
        accepted = {int(cx.context_id): cx for cx in results  # type: ignore[arg-type]
                    if cx.result == 0x00 and cx.transfer_syntax}
        if not accepted:
            await _abort(writer)
            raise AssociationRefused("no presentation context accepted")
        peer_max = int(ac.maximum_length_received or 0)
        send_max = min(peer_max or _SEND_CAP, _SEND_CAP)
        return cls(reader, writer, accepted, send_max, settings, called)

    def context_for(self, sop_class: str, ts: str) -> PresentationContext | None:
        """The accepted context to send an object of `sop_class` stored in `ts`
        (:func:`choose_context`)."""
        return choose_context(
            [cx for cx in self.accepted.values() if cx.abstract_syntax == sop_class], ts)

    def new_message_id(self) -> int:
        mid = self._next_id
        self._next_id = mid % 65535 + 1
        return mid

    async def store(self, cx: PresentationContext, message_id: int, sop_class: str,
                    sop_instance: str, dataset: Any, *, originator_aet: str | None = None,
                    originator_id: int | None = None) -> int:
        """Send one C-STORE-RQ and return the status of its response (PS3.4 B.2.3).

        Raises
        ------
        ConnectionError, TimeoutError, ProtocolError
            The association is unusable (it has been aborted).
        """
        command = c_store_rq(message_id, sop_class, sop_instance,
                             originator_aet=originator_aet, originator_id=originator_id)
        pdus = fragment_message(command, int(cx.context_id), self.send_max,  # type: ignore[arg-type]
                                dataset)
        try:
            async with asyncio.timeout(self.settings.dimse_timeout):
                await write_pdus(self.writer, pdus)  # a StreamedMessage: read as it is sent
                reply = await self._response(message_id)
        except BaseException:
            await self.abort()
            raise
        return int(reply.command_set.get("Status", 0xC000))  # type: ignore[union-attr]

    async def _response(self, message_id: int) -> Any:
        """Read PDUs until the response to `message_id` is complete (its DIMSE message)."""
        msg = Message()
        while True:
            header = await self.reader.readexactly(6)
            self._ack()  # what came is acknowledged now: the peer may hold the rest until then
            pdu_type, _, length = HEADER.unpack(header)
            if pdu_type == P_DATA_TF:
                if length > _RECV_CAP:
                    raise ProtocolError(f"P-DATA-TF of {length} bytes")
                body = await self.reader.readexactly(length)
                offset = 0
                while offset < length:
                    if length - offset < 6:
                        raise ProtocolError("truncated PDV item")
                    item_len, cx_id, control = ITEM.unpack_from(body, offset)
                    if item_len < 2 or offset + 4 + item_len > length:
                        raise ProtocolError(f"PDV item length {item_len} does not fit the PDU")
                    data = body[offset + 6:offset + 4 + item_len]
                    offset += 4 + item_len
                    if control & 0x01:
                        msg.add_command(cx_id, data, bool(control & 0x02))
                    elif msg.msg is None:
                        raise ProtocolError("data set fragment before its command set")
                    elif control & 0x02:
                        msg.complete = True  # a response data set: not used, dropped
                    if msg.complete:
                        assert msg.msg is not None
                        cs = msg.msg.command_set
                        if int(cs.get("MessageIDBeingRespondedTo", -1)) == message_id:
                            return msg.msg
                        log.warning("unexpected DIMSE message 0x%04X from %s",
                                    int(cs.CommandField), self.called)
                        msg = Message()
            elif pdu_type == A_ABORT:
                raise ConnectionError(f"{self.called} aborted the association")
            elif pdu_type == A_RELEASE_RQ:
                raise ConnectionError(f"{self.called} asked to release during an operation")
            else:
                raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X}")

    async def release(self) -> None:
        """A-RELEASE (PS3.8 7.2): ask, wait for the answer (``acse_timeout``), close."""
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.write(A_RELEASE_RQ_PDU)
            async with asyncio.timeout(self.settings.acse_timeout):
                await self.writer.drain()
                while True:
                    header = await self.reader.readexactly(6)
                    pdu_type, _, length = HEADER.unpack(header)
                    if length > _RECV_CAP:
                        break
                    await self.reader.readexactly(length)
                    if pdu_type in (A_RELEASE_RP, A_ABORT):
                        break
            self.writer.close()
        except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            log.info("%s did not answer the A-RELEASE-RQ (%s); connection closed", self.called,
                     type(exc).__name__)
            self.writer.transport.abort()

    async def abort(self) -> None:
        """A-ABORT (PS3.8 7.3, source: service user) and close."""
        if self.closed:
            return
        self.closed = True
        await _abort(self.writer)


#: Uncompressed syntaxes in the order a sub-operation prefers them when it re-encodes
#: (Deflated Explicit VR Little Endian last: the data set is written deflated, pixels native).
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", DEFLATED_LE)


def choose_context(candidates: list[Any], ts: str | None) -> Any:
    """Of the accepted contexts of one SOP Class, the one to send an object stored in `ts`:
    its own syntax (sent as stored), else an uncompressed one, Deflated Explicit VR Little
    Endian included (the object is re-encoded, and decompressed if it is stored compressed: a
    C-GET requestor such as DCMTK ``getscu +xd`` proposes deflate first in one context per SOP
    Class), else a compressed syntax the archive can encode
    (RLE, JPEG-LS lossless, JPEG 2000 lossless: a C-GET requestor such as DCMTK ``getscu +xr``
    proposes one context per SOP Class, and its first syntax is the one accepted); None when
    none was accepted. With `ts` None, the first."""
    if not candidates:
        return None
    if ts is None:
        return candidates[0]
    for cx in candidates:
        if cx.transfer_syntax[0] == ts:
            return cx
    for syntax in (*_UNCOMPRESSED, *ENCODABLE):
        for cx in candidates:
            if cx.transfer_syntax[0] == syntax:
                return cx
    return None


def _associate_rq(settings: Any, called: str, contexts: list[PresentationContext]) -> bytes:
    from archivist.dimse.acceptor import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

    rq = A_ASSOCIATE()
    rq.application_context_name = UID(APPLICATION_CONTEXT)
    rq.calling_ae_title = settings.aet
    rq.called_ae_title = called
    rq.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = settings.max_pdu
    impl_uid = ImplementationClassUIDNotification()
    impl_uid.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    impl_name = ImplementationVersionNameNotification()
    impl_name.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    rq.user_information = [max_length, impl_uid, impl_name]
    return bytes(A_ASSOCIATE_RQ(rq).encode())


async def _abort(writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(a_abort(0, 0))
        async with asyncio.timeout(2):
            await writer.drain()
    except (TimeoutError, ConnectionError, OSError):
        pass
    writer.transport.abort()


__all__ = ["AssociationRefused", "Outbound", "c_store_rq"]
