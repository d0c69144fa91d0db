"""DIMSE response command sets: the direct encoder gives pydicom's bytes."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import encode

from archivist.dimse.acceptor_services import Response


def _pydicom_command(field: int, values: dict[str, Any], with_data: bool) -> bytes:
    cs = Dataset()
    for keyword, value in values.items():
        setattr(cs, keyword, value)
    cs.CommandField = field
    cs.CommandDataSetType = 0x0001 if with_data else 0x0101
    body = bytes(encode(cs, True, True))
    head = Dataset()
    head.CommandGroupLength = len(body)
    return bytes(encode(head, True, True)) + body


CASES = [
    (0x8001, {"MessageIDBeingRespondedTo": 7,
              "AffectedSOPClassUID": UID("1.2.840.10008.5.1.4.1.1.2"),
              "AffectedSOPInstanceUID": "1.2.3.45", "Status": 0}, False),  # odd-length UID
    (0x8001, {"MessageIDBeingRespondedTo": 65535,
              "AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.1.4",
              "AffectedSOPInstanceUID": "1.2.3.4", "Status": 0xB007}, False),
    (0x8020, {"MessageIDBeingRespondedTo": 1, "AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.2.2.1",
                  "Status": 0xFF00}, True),
    (0x8021, {"MessageIDBeingRespondedTo": 3, "AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.2.2.2",
                  "Status": 0xFF00, "NumberOfRemainingSuboperations": 299,
                  "NumberOfCompletedSuboperations": 1, "NumberOfFailedSuboperations": 0,
                  "NumberOfWarningSuboperations": 0}, False),
    (0x8030, {"MessageIDBeingRespondedTo": 2, "AffectedSOPClassUID": "1.2.840.10008.1.1",
                  "Status": 0}, False),
    # Kinds the direct encoder leaves to pydicom:
    (0x8001, {"MessageIDBeingRespondedTo": 9, "AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
                  "Status": 0xA900, "ErrorComment": "SOP Class differs"}, False),
    (0x8001, {"MessageIDBeingRespondedTo": 9, "Status": 0xA900, "OffendingElement": [0x00080016]},
     False),
]


@pytest.mark.parametrize("field,values,with_data", CASES)
def test_response_command_equals_pydicoms_encoding(field: int, values: dict[str, Any],
                                                   with_data: bool) -> None:
    rsp = Response(field)
    for keyword, value in values.items():
        setattr(rsp, keyword, value)
    assert rsp.command(with_data) == _pydicom_command(field, values, with_data)


def test_empty_uid_and_unset_values() -> None:
    rsp = Response(0x8001)
    rsp.MessageIDBeingRespondedTo = 4
    rsp.AffectedSOPInstanceUID = ""
    rsp.Status = 0
    assert rsp.command(False) == _pydicom_command(
        0x8001, {"MessageIDBeingRespondedTo": 4, "AffectedSOPInstanceUID": "", "Status": 0}, False)


@pytest.mark.parametrize("originator", [None, "MOVESCU", "ODD"])
def test_c_store_request_command_equals_pydicoms_encoding(originator: str | None) -> None:
    from archivist.dimse.requestor import c_store_rq

    values: dict[str, Any] = {"AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "MessageID": 12,
                                  "Priority": 0, "CommandDataSetType": 0,
                                  "AffectedSOPInstanceUID": "1.2.3.4.567"}
    if originator:
        values.update(MoveOriginatorApplicationEntityTitle=originator, MoveOriginatorMessageID=3)
    got = c_store_rq(12, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.567", originator_aet=originator,
                     originator_id=3)
    assert got == _with_type(values)


def _with_type(values: dict[str, Any]) -> bytes:
    """pydicom's encoding of a C-STORE-RQ command (Command Data Set Type 0x0000: data follows)."""
    cs = Dataset()
    for keyword, value in values.items():
        setattr(cs, keyword, value)
    cs.CommandField = 0x0001
    body = bytes(encode(cs, True, True))
    head = Dataset()
    head.CommandGroupLength = len(body)
    return bytes(encode(head, True, True)) + body
