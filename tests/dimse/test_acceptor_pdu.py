"""Framing of the event-driven acceptor: P-DATA encoding, message assembly, sinks."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import dimse_messages as dm
from pynetdicom import dimse_primitives as dp
from pynetdicom.dsutils import encode

from archivist.dimse.acceptor_pdu import (
    HEADER,
    ITEM,
    FileSink,
    MemorySink,
    Message,
    ProtocolError,
    a_abort,
    associate_rj,
    encode_message,
    file_meta_prefix,
)
from archivist.dimse.acceptor_services import Counts, Response, apply_status, category

CT = "1.2.840.10008.5.1.4.1.1.2"


def find_response(identifier_size: int) -> tuple[dm.DIMSEMessage, bytes]:
    rsp = dp.C_FIND()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    rsp.Status = 0xFF00
    ds = Dataset()
    ds.EncapsulatedDocument = b"X" * identifier_size
    data = bytes(encode(ds, True, True))
    rsp.Identifier = BytesIO(data)
    msg = dm.C_FIND_RSP()
    msg.primitive_to_message(rsp)
    return msg, data


def split(pdus: list[bytes]) -> list[tuple[int, int, bytes]]:
    """(context, control header, fragment) of each PDU, checking the framing."""
    out = []
    for pdu in pdus:
        kind, _, length = HEADER.unpack(pdu[:6])
        assert kind == 4 and length == len(pdu) - 6
        item_len, cx, control = ITEM.unpack(pdu[6:12])
        assert item_len == length - 4
        out.append((cx, control, pdu[12:]))
    return out


class TestEncodeMessage:
    def test_fragments_respect_the_peer_maximum(self) -> None:
        msg, data = find_response(5000)
        pdus = encode_message(msg, 3, 1024, data)
        assert all(len(p) - 6 <= 1024 for p in pdus)
        parts = split(pdus)
        assert {cx for cx, _, _ in parts} == {3}
        controls = [c for _, c, _ in parts]
        # command: last fragment flagged 0x03; data: 0x00 ... 0x02 (PS3.8 E.2)
        assert controls[0] == 0x03
        assert controls[1:-1] == [0x00] * (len(controls) - 2)
        assert controls[-1] == 0x02
        assert b"".join(f for _, c, f in parts if not c & 1) == data

    def test_unlimited_peer_gets_one_pdu_per_part(self) -> None:
        msg, data = find_response(100_000)
        assert [c for _, c, _ in split(encode_message(msg, 1, 0, data))] == [0x03, 0x02]

    def test_command_round_trips_through_the_assembler(self) -> None:
        msg, data = find_response(10)
        incoming = Message()
        for cx, control, fragment in split(encode_message(msg, 5, 64, data)):
            if control & 1:
                incoming.add_command(cx, fragment, bool(control & 2))
                if incoming.msg is not None and incoming.sink is None:
                    incoming.sink = MemorySink()
            else:
                assert incoming.sink is not None
                incoming.sink.write(fragment)
        assert incoming.command_field == 0x8020
        primitive = incoming.primitive_of()
        assert primitive.MessageIDBeingRespondedTo == 7
        assert primitive.Identifier.getvalue() == data


class TestResponse:
    def test_c_store_rsp_decodes_as_pynetdicom_would(self) -> None:
        rsp = Response(0x8001)
        rsp.MessageIDBeingRespondedTo = 9
        rsp.AffectedSOPClassUID = CT
        rsp.AffectedSOPInstanceUID = "1.2.3"
        status = Dataset()
        status.Status = 0xA700
        status.ErrorComment = "Out of resources"
        apply_status(rsp, status)
        incoming = Message()
        for cx, control, fragment in split(rsp.encode(1, 16384)):
            incoming.add_command(cx, fragment, bool(control & 2))
        primitive = incoming.primitive_of()
        assert type(primitive).__name__ == "C_STORE"
        assert primitive.is_valid_response
        assert (primitive.MessageIDBeingRespondedTo, primitive.Status) == (9, 0xA700)
        assert primitive.ErrorComment == "Out of resources"
        cs = incoming.msg.command_set  # type: ignore[union-attr]
        assert cs.CommandGroupLength == len(encode(cs, True, True)) - 12

    def test_identifier_sets_the_data_set_type(self) -> None:
        rsp = Response(0x8020)
        rsp.MessageIDBeingRespondedTo = 1
        rsp.Status = 0xFF00
        rsp.Identifier = BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
        parts = split(rsp.encode(1, 0))
        assert [c for _, c, _ in parts] == [0x03, 0x02]
        with pytest.raises(AttributeError):
            rsp.PatientName = "not a response parameter"


class TestMessageErrors:
    def test_command_on_two_contexts(self) -> None:
        m = Message()
        m.add_command(1, b"\0" * 4, False)
        with pytest.raises(ProtocolError):
            m.add_command(3, b"\0" * 4, True)

    def test_garbage_command_set(self) -> None:
        with pytest.raises(ProtocolError):
            Message().add_command(1, bytes(range(200)), True)

    def test_command_after_complete(self) -> None:
        msg, _ = find_response(1)
        command = bytes(encode(msg.command_set, True, True))
        m = Message()
        m.add_command(1, command, True)
        with pytest.raises(ProtocolError):
            m.add_command(1, command, True)

    def test_memory_sink_is_capped(self) -> None:
        sink = MemorySink(cap=10)
        sink.write(b"12345")
        with pytest.raises(ProtocolError):
            sink.write(b"123456")


class TestFileSink:
    def test_spills_to_disk_and_writes_a_part10_file(self, tmp_path: Path) -> None:
        prefix = file_meta_prefix(CT, "1.2.3.4", "1.2.840.10008.1.2.1")
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CT, "1.2.3.4"
        ds.PatientID = "P"
        body = bytes(encode(ds, False, True)) + b"\xe0\x7f\x10\x00OW\0\0" + \
            struct.pack("<L", 4096) + b"\1" * 4096
        sink = FileSink(tmp_path, prefix, cap=1 << 20, spill=1000)
        for i in range(0, len(body), 700):
            sink.write(body[i:i + 700])
            if sink.needs_flush():
                sink.flush()
        assert sink.fd is not None, "should have spilled to a file before the end"
        path = sink.finish()
        read = pydicom.dcmread(path)
        assert read.SOPInstanceUID == "1.2.3.4"
        assert read.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert len(read.PixelData) == 4096
        sink.close()
        assert not path.exists()

    def test_cap(self, tmp_path: Path) -> None:
        sink = FileSink(tmp_path, b"", cap=100)
        with pytest.raises(ProtocolError):
            sink.write(b"\0" * 101)
        sink.close()
        assert not list(tmp_path.iterdir())


class TestStatuses:
    @pytest.mark.parametrize(("status", "kind"), [
        (0x0000, "success"), (0xFF00, "pending"), (0xFF01, "pending"), (0xFE00, "cancel"),
        (0xB000, "warning"), (0x0001, "warning"), (0xA700, "failure"), (0xC000, "failure"),
        (0x0122, "failure"),
    ])
    def test_category(self, status: int, kind: str) -> None:
        assert category(status) == kind

    def test_status_dataset_sets_error_comment(self) -> None:
        rsp = dp.C_STORE()
        ds = Dataset()
        ds.Status = 0xC000
        ds.ErrorComment = "bad"
        assert apply_status(rsp, ds) == 0xC000
        assert rsp.ErrorComment == "bad"

    def test_counts(self) -> None:
        c = Counts(remaining=3)
        for kind in ("success", "warning", "failure"):
            c.sub_done(kind)
        assert (c.remaining, c.completed, c.warning, c.failed) == (0, 1, 1, 1)


def test_small_pdus() -> None:
    assert a_abort(2, 6) == bytes([7, 0, 0, 0, 0, 4, 0, 0, 2, 6])
    assert associate_rj(1, 1, 7) == bytes([3, 0, 0, 0, 0, 4, 0, 1, 1, 7])


@pytest.mark.parametrize("sop_instance", ["1.2.3.4", "1.2.3.45", "1.2.840.113619.2.55.3.1234567"])
def test_file_meta_prefix_is_what_pydicom_writes(sop_instance: str) -> None:
    """The File Meta written for received objects, encoded by hand, byte for byte pydicom's
    (and naming Archivist as the implementation that wrote the file)."""
    from io import BytesIO

    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import UID

    from archivist.dimse.acceptor_pdu import (
        IMPLEMENTATION_CLASS_UID,
        IMPLEMENTATION_VERSION_NAME,
    )

    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(CT)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.50")
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    buf = BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
    assert file_meta_prefix(CT, sop_instance, "1.2.840.10008.1.2.4.50") == buf.getvalue()
