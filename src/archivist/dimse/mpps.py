"""Modality Performed Procedure Step SCP (PS3.4 Annex F): N-CREATE and N-SET on the MPPS SOP
Class, N-GET on the MPPS Retrieve SOP Class. The rules and the store are
:mod:`archivist.archive.mpps`; this module turns requests into calls and errors into statuses.
"""

from __future__ import annotations

import logging
import zlib
from io import BytesIO
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID

from archivist.archive.mpps import (
    MAX_DATASET_BYTES,
    MPPS_RETRIEVE_SOP_CLASS,
    MPPS_SOP_CLASS,
    NO_SUCH_INSTANCE,
    PROCESSING_FAILURE,
    MppsError,
    ProcedureSteps,
)
from archivist.core.dataset_walk import ends_cleanly
from archivist.dimse.services import Service, peer_aet
from archivist.dimse.status import refusal, status_dataset

if TYPE_CHECKING:
    from archivist.archive.archive import Archive

log = logging.getLogger("archivist.dimse.mpps")

MISSING_ATTRIBUTE = 0x0120




def _data_set(event: Any, attr: str) -> Dataset | None:
    return request_data_set(event, attr, _PARAMETER[attr])


def request_data_set(event: Any, attr: str, parameter: str) -> Dataset | None:
    """The request's data set `attr` (``attribute_list``, ``action_information``...) sent as
    its `parameter` (``AttributeList``...), or None when it is absent, cut short (pydicom would
    quietly read what is there) or does not decode."""
    if cut_short(event, parameter):
        return None
    try:
        ds = getattr(event, attr)
        for _ in ds.iterall():  # every value decoded now, not half-way through a transaction
            pass
    except Exception:  # noqa: BLE001 - absent, or does not decode
        return None
    return ds if isinstance(ds, Dataset) else None


_PARAMETER = {"attribute_list": "AttributeList", "modification_list": "ModificationList"}


def cut_short(event: Any, parameter: str) -> bool:
    """Whether the request's `parameter` data set ends inside an element (PS3.5 7.1)."""
    stream = getattr(event.request, parameter, None)
    data = stream.getvalue() if isinstance(stream, BytesIO) else b""
    if not data:
        return False
    ts = UID(str(event.context.transfer_syntax))
    if ts.is_deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(data, MAX_DATASET_BYTES * 4)
        except zlib.error:
            return True
        if not inflater.eof:
            return True  # cut short, or larger than any step
        return not ends_cleanly(data, implicit=False, little=True)
    return not ends_cleanly(data, implicit=ts.is_implicit_VR, little=ts.is_little_endian)


class MppsHandler:
    """The three requests of the MPPS SCP on one archive."""

    def __init__(self, archive: Archive) -> None:
        self.steps = ProcedureSteps(archive.index)

    def create(self, event: Any) -> tuple[Any, Dataset | None]:
        aet = peer_aet(event)
        req = event.request
        uid = str(getattr(req, "AffectedSOPInstanceUID", "") or "").strip() or None
        attributes = _data_set(event, "attribute_list")
        if attributes is None:
            return status_dataset(MISSING_ATTRIBUTE, "The Attribute List is missing, cut "
                                  "short, or does not decode"), None
        try:
            created = self.steps.create(uid, attributes, aet)
        except MppsError as exc:
            log.warning("MPPS N-CREATE from %s refused: %s", aet, exc)
            return refusal(exc), None
        except Exception as exc:
            log.exception("MPPS N-CREATE from %s failed", aet)
            return status_dataset(PROCESSING_FAILURE,
                                  f"Processing failure: {type(exc).__name__}"), None
        log.info("MPPS %s created by %s (IN PROGRESS)", created, aet)
        if uid is None:  # assigned here: the response carries it (PS3.7 10.1.5.1.2)
            reply = Dataset()
            reply.AffectedSOPInstanceUID = created
            return 0x0000, reply
        return 0x0000, None

    def set(self, event: Any) -> tuple[Any, Dataset | None]:
        aet = peer_aet(event)
        uid = str(getattr(event.request, "RequestedSOPInstanceUID", "") or "").strip()
        modifications = _data_set(event, "modification_list")
        if modifications is None:
            return status_dataset(MISSING_ATTRIBUTE, "The Modification List is missing, cut "
                                  "short, or does not decode"), None
        try:
            step = self.steps.set(uid, modifications)
        except MppsError as exc:
            log.warning("MPPS N-SET of %s from %s refused: %s", uid, aet, exc)
            return refusal(exc), None
        except Exception as exc:
            log.exception("MPPS N-SET of %s from %s failed", uid, aet)
            return status_dataset(PROCESSING_FAILURE,
                                  f"Processing failure: {type(exc).__name__}"), None
        log.info("MPPS %s set by %s (%s)", uid, aet, step.status)
        return 0x0000, None

    def get(self, event: Any) -> tuple[Any, Dataset | None]:
        uid = str(getattr(event.request, "RequestedSOPInstanceUID", "") or "").strip()
        step = self.steps.get(uid) if uid else None
        if step is None:
            return status_dataset(NO_SUCH_INSTANCE, "no Performed Procedure Step with this "
                                  "UID"), None
        wanted = list(getattr(event, "attribute_identifiers", None) or [])
        if not wanted:
            return 0x0000, step.dataset
        reply = Dataset()
        for tag in wanted:
            tag = Tag(tag)
            if tag in step.dataset:
                reply[tag] = step.dataset[tag]
        if "SpecificCharacterSet" in step.dataset:
            # The values are in it (PS3.3 C.12.1.1.2): asked for or not, it goes with them.
            reply.SpecificCharacterSet = step.dataset.SpecificCharacterSet
        return 0x0000, reply


def services(archive: Archive) -> list[Service]:
    """MPPS as an SCP (see :mod:`archivist.dimse.services`)."""
    handler = MppsHandler(archive)
    return [Service(MPPS_SOP_CLASS, "N-CREATE", handler.create),
            Service(MPPS_SOP_CLASS, "N-SET", handler.set),
            Service(MPPS_RETRIEVE_SOP_CLASS, "N-GET", handler.get)]


__all__ = ["MppsHandler", "cut_short", "request_data_set", "services"]
