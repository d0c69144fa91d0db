"""A C-FIND, C-GET or C-MOVE whose announced Identifier never comes (pynetdicom 3.0.4 sends
none for an empty Dataset) is answered with a failure status, not left waiting for ever."""

from __future__ import annotations

import time

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.mark.slow  # CI time (20 min); covered in a full run: pytest -m slow
def test_an_empty_identifier_gets_a_failure_status(server: ServerProcess) -> None:
    ae = AE(ae_title="EMPTYID")
    for cls in (StudyRootQueryRetrieveInformationModelFind,
                StudyRootQueryRetrieveInformationModelGet,
                StudyRootQueryRetrieveInformationModelMove):
        ae.add_requested_context(cls)
    ae.acse_timeout = ae.network_timeout = 60
    ae.dimse_timeout = 30
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        for send in (
                lambda: assoc.send_c_find(Dataset(), StudyRootQueryRetrieveInformationModelFind),
                lambda: assoc.send_c_get(Dataset(), StudyRootQueryRetrieveInformationModelGet),
                lambda: assoc.send_c_move(Dataset(), "NOWHERE",
                                          StudyRootQueryRetrieveInformationModelMove)):
            started = time.monotonic()
            statuses = [int(s.Status) for s, _ in send() if s is not None and "Status" in s]
            assert statuses, "no response"
            assert statuses[-1] not in (0x0000, 0xFF00), hex(statuses[-1])
            assert time.monotonic() - started < 25  # answered, not the DIMSE timeout
    finally:
        assoc.release()
