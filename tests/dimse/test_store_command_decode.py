"""The C-STORE-RQ command set decoded without pydicom (``decode_store_rq``): the same values as
pynetdicom's decoding for what it accepts, pynetdicom's way for everything else."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pynetdicom import dimse_messages as dm
from pynetdicom.dsutils import decode

from archivist.dimse.acceptor_pdu import Message, StoreRequest, decode_store_rq, encode_command
from archivist.dimse.requestor import c_store_rq

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.826.0.1.3680043.8.498.12345678901234567890"


def pynetdicom_primitive(command: bytes) -> object:
    """What the acceptor produced before the fast path: pydicom + pynetdicom's decoding."""
    msg = dm.C_STORE_RQ()
    msg.command_set = decode(BytesIO(command), True, True)
    msg.data_set = BytesIO()
    return msg.message_to_primitive()


def element(elem: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0, elem, len(value)) + value


@pytest.mark.parametrize("kwargs", [
    {},
    {"priority": 2},
    {"originator_aet": "MOVER", "originator_id": 77},
])
def test_same_values_as_pynetdicom(kwargs: dict) -> None:
    command = c_store_rq(4242, CT, SOP, **kwargs)
    fast = decode_store_rq(command)
    slow = pynetdicom_primitive(command)
    assert isinstance(fast, StoreRequest)
    for name in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
                 "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"):
        assert getattr(fast, name) == getattr(slow, name), name
    assert fast.is_valid_request and slow.is_valid_request


def test_odd_length_uid_padding_and_dcmtk_order() -> None:
    # A UID of odd length is padded with NUL (DCMTK), and the group length comes first.
    command = encode_command({"AffectedSOPClassUID": CT, "CommandField": 1, "MessageID": 1,
                              "Priority": 0, "CommandDataSetType": 0x0001,
                              "AffectedSOPInstanceUID": "1.2.3"})
    fast = decode_store_rq(command)
    assert fast is not None
    assert (fast.AffectedSOPClassUID, fast.AffectedSOPInstanceUID) == (CT, "1.2.3")


def test_message_uses_the_fast_path_and_keeps_the_interface() -> None:
    m = Message()
    m.add_command(3, c_store_rq(9, CT, SOP), True)
    assert m.command_field == 0x0001 and m.has_dataset and not m.complete
    prim = m.primitive_of()
    assert isinstance(prim, StoreRequest) and prim.MessageID == 9 and prim.context_id == 3
    assert m.msg is not None and m.msg.command_set.get("MessageIDBeingRespondedTo", -1) == -1
    assert m.msg.command_set.AffectedSOPInstanceUID == SOP


@pytest.mark.parametrize("command", [
    # Another command (C-ECHO-RQ)
    encode_command({"AffectedSOPClassUID": "1.2.840.10008.1.1", "CommandField": 0x0030,
                    "MessageID": 1, "CommandDataSetType": 0x0101}),
    # No data set
    encode_command({"AffectedSOPClassUID": CT, "CommandField": 1, "MessageID": 1,
                    "Priority": 0, "CommandDataSetType": 0x0101,
                    "AffectedSOPInstanceUID": SOP}),
    # No Message ID / no SOP Instance UID / a priority out of range
    encode_command({"AffectedSOPClassUID": CT, "CommandField": 1, "Priority": 0,
                    "CommandDataSetType": 1, "AffectedSOPInstanceUID": SOP}),
    encode_command({"AffectedSOPClassUID": CT, "CommandField": 1, "MessageID": 1,
                    "Priority": 0, "CommandDataSetType": 1}),
    encode_command({"AffectedSOPClassUID": CT, "CommandField": 1, "MessageID": 1,
                    "Priority": 7, "CommandDataSetType": 1, "AffectedSOPInstanceUID": SOP}),
    # A UID with other characters, an element a C-STORE-RQ does not carry
    c_store_rq(1, CT, SOP).replace(SOP.encode(), SOP.replace("1", "x").encode()),
    c_store_rq(1, CT, SOP) + element(0x0900, b"\0\0"),
    # Cut short, a length past the end, twice the same element, another group
    c_store_rq(1, CT, SOP)[:-3],
    c_store_rq(1, CT, SOP)[:12] + struct.pack("<L", 9999) + c_store_rq(1, CT, SOP)[16:],
    c_store_rq(1, CT, SOP) + element(0x0110, b"\1\0"),
    c_store_rq(1, CT, SOP) + struct.pack("<HHL", 8, 0x18, 2) + b"1\0",
    # A Message ID of the wrong length
    c_store_rq(1, CT, SOP).replace(element(0x0110, b"\1\0"), element(0x0110, b"\1\0\0\0")),
])
def test_anything_unusual_takes_pynetdicoms_way(command: bytes) -> None:
    assert decode_store_rq(command) is None


def test_a_store_that_pynetdicom_refuses_is_still_refused() -> None:
    # No Affected SOP Instance UID: not decoded fast, and invalid for pynetdicom as before.
    command = encode_command({"AffectedSOPClassUID": CT, "CommandField": 1, "MessageID": 1,
                              "Priority": 0, "CommandDataSetType": 1})
    m = Message()
    m.add_command(1, command, True)
    assert not isinstance(m.msg, StoreRequest)
    assert not m.primitive_of().is_valid_request
