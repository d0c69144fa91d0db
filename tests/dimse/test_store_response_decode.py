"""The C-STORE-RSP command sets a C-MOVE or C-GET gets back for each sub-operation, decoded
without pydicom (``decode_store_response``): the same Status and Message ID Being Responded To
as pydicom's decoding for the usual shape, pydicom's way for everything else (an Error Comment,
a data set, another command), through ``Message.add_command`` as the acceptor and the
requestor call it. Real peers' responses are in the retrieve tests (DCMTK storescp, getscu,
pynetdicom)."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pynetdicom.dsutils import decode

from archivist.dimse.acceptor_pdu import (
    Message,
    StoreResponse,
    decode_store_response,
    encode_command,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.826.0.1.3680043.8.498.12345678901234567890"


def response(**values: Any) -> bytes:
    base: dict[str, Any] = {"AffectedSOPClassUID": CT, "CommandField": 0x8001,
                            "MessageIDBeingRespondedTo": 7, "CommandDataSetType": 0x0101,
                            "Status": 0x0000, "AffectedSOPInstanceUID": SOP}
    base.update(values)
    return encode_command({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize("values", [
    {},
    {"Status": 0xB000},
    {"Status": 0xA700, "MessageIDBeingRespondedTo": 65535},
    {"AffectedSOPClassUID": None, "AffectedSOPInstanceUID": None},  # both optional
    {"AffectedSOPInstanceUID": "1.2.3"},  # odd length: NUL padded
])
def test_same_values_as_pydicom(values: dict[str, Any]) -> None:
    command = response(**values)
    fast = decode_store_response(command)
    slow = decode(BytesIO(command), True, True)
    assert isinstance(fast, StoreResponse)
    for name in ("CommandField", "MessageIDBeingRespondedTo", "Status",
                 "AffectedSOPClassUID", "AffectedSOPInstanceUID", "CommandDataSetType"):
        want = slow.get(name)
        assert fast.get(name) == (None if want in (None, "") else want), name


@pytest.mark.parametrize("command", [
    response(ErrorComment="disk full", Status=0xA700),  # an element not decoded here
    response(CommandDataSetType=0x0000),  # a data set follows
    response(CommandField=0x8020),  # a C-FIND-RSP
    response(AffectedSOPInstanceUID="1.2.abc"),  # no plain UID
    response()[:-3],  # truncated
    response() + response(),  # an element twice
])
def test_anything_else_is_left_to_pydicom(command: bytes) -> None:
    assert decode_store_response(command) is None


def test_message_takes_the_fast_path_and_completes() -> None:
    m = Message()
    m.add_command(5, response(Status=0x0001), True)
    assert m.complete and not m.has_dataset and m.command_field == 0x8001
    assert isinstance(m.msg, StoreResponse) and m.msg.context_id == 5
    cs = m.msg.command_set
    assert cs.get("MessageIDBeingRespondedTo", -1) == 7 and int(cs.get("Status", 0xC000)) == 1


def test_message_with_an_error_comment_is_decoded_by_pydicom() -> None:
    m = Message()
    m.add_command(5, response(Status=0xA700, ErrorComment="disk full"), True)
    assert m.complete and m.command_field == 0x8001
    assert not isinstance(m.msg, StoreResponse)
    assert m.msg is not None and m.msg.command_set.ErrorComment == "disk full"
    assert int(m.msg.command_set.get("Status")) == 0xA700
