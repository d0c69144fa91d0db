"""The guard against pynetdicom's lost-response race (archivist.core.pynetdicom_race): the
reactor's non-blocking read takes requests only; a response stays for the send_*() waiting."""

from __future__ import annotations

import queue
from types import SimpleNamespace

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_ECHO

from archivist.core.pynetdicom_race import install


def _provider() -> DIMSEServiceProvider:
    provider = object.__new__(DIMSEServiceProvider)
    provider.msg_queue = queue.Queue()  # type: ignore[misc]
    provider._assoc = SimpleNamespace(dimse_timeout=1)  # type: ignore[attr-defined]
    return provider


def _request() -> C_ECHO:
    rq = C_ECHO()
    rq.MessageID = 7
    rq.AffectedSOPClassUID = "1.2.840.10008.1.1"
    return rq


def _response() -> C_ECHO:
    rsp = C_ECHO()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.1.1"
    rsp.Status = 0x0000
    return rsp


def test_the_reactor_never_takes_a_response() -> None:
    install()
    install()  # idempotent
    provider = _provider()
    response = _response()
    provider.msg_queue.put((1, response))
    assert provider.get_msg(block=False) == (None, None)  # the reactor's read: left queued
    assert provider.get_msg(block=True) == (1, response)  # the send_*() waiting gets it
    request = _request()
    provider.msg_queue.put((3, request))
    assert provider.get_msg(block=False) == (3, request)  # requests are still served
    assert provider.get_msg(block=False) == (None, None)  # nothing left
