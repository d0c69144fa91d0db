"""The C-STORE, C-ECHO, C-FIND, C-GET and C-MOVE command sets decoded without pydicom
(``decode_request``): the same values as pynetdicom's decoding for what it accepts, pynetdicom's
way for everything else."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pynetdicom import dimse_messages as dm
from pynetdicom.dsutils import decode

from archivist.dimse.acceptor_pdu import (
    MemorySink,
    Message,
    QueryRequest,
    StoreRequest,
    decode_request,
    encode_command,
)
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
    fast = decode_request(command)
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
    fast = decode_request(command)
    assert isinstance(fast, StoreRequest)
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
    assert decode_request(command) is None


def test_a_store_that_pynetdicom_refuses_is_still_refused() -> None:
    # No Affected SOP Instance UID: not decoded fast, and invalid for pynetdicom as before.
    command = encode_command({"AffectedSOPClassUID": CT, "CommandField": 1, "MessageID": 1,
                              "Priority": 0, "CommandDataSetType": 1})
    m = Message()
    m.add_command(1, command, True)
    assert not isinstance(m.msg, StoreRequest)
    assert not m.primitive_of().is_valid_request


# -- C-ECHO, C-FIND, C-GET, C-MOVE --------------------------------------------------------------

ECHO = "1.2.840.10008.1.1"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
KINDS = {0x0030: (dm.C_ECHO_RQ, ECHO), 0x0020: (dm.C_FIND_RQ, FIND),
         0x0010: (dm.C_GET_RQ, GET), 0x0021: (dm.C_MOVE_RQ, MOVE)}


def query_command(field: int, **extra: object) -> bytes:
    values: dict[str, object] = {"AffectedSOPClassUID": KINDS[field][1], "CommandField": field,
                                 "MessageID": 321}
    if field == 0x0030:
        values["CommandDataSetType"] = 0x0101
    else:
        values.update(Priority=2, CommandDataSetType=0x0001)
    if field == 0x0021:
        values["MoveDestination"] = "STORESCP"
    values.update(extra)
    return encode_command({k: v for k, v in values.items() if v is not None})


def pynetdicom_query(command: bytes) -> object:
    cs = decode(BytesIO(command), True, True)
    msg = KINDS[int(cs.CommandField)][0]()
    msg.command_set = cs
    msg.data_set = BytesIO(b"identifier")
    return msg.message_to_primitive()


@pytest.mark.parametrize("command", [
    query_command(0x0030), query_command(0x0020), query_command(0x0010), query_command(0x0021),
    query_command(0x0020, Priority=0), query_command(0x0010, Priority=1),
    query_command(0x0021, MoveDestination="A"),
    query_command(0x0021, MoveDestination="SIXTEEN-CHARS-AE"),
    query_command(0x0021, MoveDestination="WITH SPACE"),
])
def test_queries_same_values_as_pynetdicom(command: bytes) -> None:
    fast = decode_request(command)
    slow = pynetdicom_query(command)
    assert isinstance(fast, QueryRequest)
    for name in ("CommandField", "MessageID", "AffectedSOPClassUID", "Priority",
                 "MoveDestination"):
        if name == "CommandField":
            continue
        value = getattr(slow, name, None)
        assert getattr(fast, name) == (value.strip() if isinstance(value, str) else value), name
    assert slow.is_valid_request


@pytest.mark.parametrize("command", [
    # C-ECHO with a data set, or without saying it has none
    query_command(0x0030, CommandDataSetType=0x0001),
    query_command(0x0030, CommandDataSetType=None),
    # C-FIND / C-GET / C-MOVE without an identifier, or without a priority, or of priority 3
    query_command(0x0020, CommandDataSetType=0x0101),
    query_command(0x0010, Priority=None),
    query_command(0x0021, Priority=3),
    # An element the request does not carry: a SOP Instance UID on a C-FIND, a destination on
    # a C-GET
    query_command(0x0020, AffectedSOPInstanceUID="1.2.3"),
    query_command(0x0010, MoveDestination="STORESCP"),
    # Move Destinations that are no AE title: none, spaces only, a backslash, a control
    # character, longer than 16, not ASCII
    query_command(0x0021, MoveDestination=None),
    query_command(0x0021, MoveDestination="    "),
    query_command(0x0021, MoveDestination="A\\B"),
    query_command(0x0021, MoveDestination="A\tB"),
    query_command(0x0021).replace(element(0x0600, b"STORESCP"),
                                  element(0x0600, b"SEVENTEEN-CHARS-A ")),
    query_command(0x0021).replace(element(0x0600, b"STORESCP"),
                                  element(0x0600, "STÖRE".encode("latin-1") + b" ")),
    # A SOP Class UID that is not digits and dots; C-CANCEL and N- requests
    query_command(0x0020, AffectedSOPClassUID="1.2.x"),
    encode_command({"CommandField": 0x0FFF, "MessageIDBeingRespondedTo": 1,
                    "CommandDataSetType": 0x0101}),
    encode_command({"CommandField": 0x0140, "MessageID": 1, "RequestedSOPClassUID": "1.2",
                    "RequestedSOPInstanceUID": "1.2.3", "CommandDataSetType": 0x0101}),
])
def test_unusual_queries_take_pynetdicoms_way(command: bytes) -> None:
    assert decode_request(command) is None


def test_message_interface_for_echo_and_find() -> None:
    echo = Message()
    echo.add_command(5, query_command(0x0030), True)
    assert echo.command_field == 0x0030 and echo.complete and not echo.has_dataset
    prim = echo.primitive_of()
    assert isinstance(prim, QueryRequest) and prim.context_id == 5 and prim.Identifier is None

    find = Message()
    find.add_command(7, query_command(0x0020), True)
    assert find.command_field == 0x0020 and find.has_dataset and not find.complete
    sink = MemorySink()
    sink.buf += b"the identifier"
    find.sink = sink
    prim = find.primitive_of()
    assert isinstance(prim, QueryRequest) and prim.context_id == 7
    assert prim.Identifier is not None and prim.Identifier.getvalue() == b"the identifier"
    assert prim.command_set.get("MessageIDBeingRespondedTo", -1) == -1
    assert prim.get("Priority") == 2
