"""Modality Performed Procedure Step SCP (PS3.4 Annex F): N-CREATE and N-SET on the MPPS SOP
Class, N-GET on the MPPS Retrieve SOP Class. The rules and the store are
:mod:`archivist.archive.mpps`; this module turns requests into calls and errors into statuses.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from archivist.archive.mpps import (
    MPPS_RETRIEVE_SOP_CLASS,
    MPPS_SOP_CLASS,
    NO_SUCH_INSTANCE,
    PROCESSING_FAILURE,
    MppsError,
    ProcedureSteps,
)
from archivist.dimse.services import Service, peer_aet
from archivist.dimse.status import status_dataset

if TYPE_CHECKING:
    from archivist.archive.archive import Archive

log = logging.getLogger("archivist.dimse.mpps")

MISSING_ATTRIBUTE = 0x0120


def _refusal(exc: MppsError) -> Dataset:
    status = status_dataset(exc.status, str(exc))
    if exc.attributes:
        status.AttributeIdentifierList = [Tag(t) for t in exc.attributes]
    return status


def _data_set(event: Any, attr: str) -> Dataset | None:
    try:
        ds = getattr(event, attr)
    except Exception:  # noqa: BLE001 - absent, or does not decode
        return None
    return ds if isinstance(ds, Dataset) else None


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
            return status_dataset(MISSING_ATTRIBUTE, "The Attribute List is missing or does "
                                  "not decode"), None
        try:
            created = self.steps.create(uid, attributes, aet)
        except MppsError as exc:
            log.warning("MPPS N-CREATE from %s refused: %s", aet, exc)
            return _refusal(exc), None
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
            return status_dataset(MISSING_ATTRIBUTE, "The Modification List is missing or "
                                  "does not decode"), None
        try:
            step = self.steps.set(uid, modifications)
        except MppsError as exc:
            log.warning("MPPS N-SET of %s from %s refused: %s", uid, aet, exc)
            return _refusal(exc), None
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
        return 0x0000, reply


def services(archive: Archive) -> list[Service]:
    """MPPS as an SCP (see :mod:`archivist.dimse.services`)."""
    handler = MppsHandler(archive)
    return [Service(MPPS_SOP_CLASS, "N-CREATE", handler.create),
            Service(MPPS_SOP_CLASS, "N-SET", handler.set),
            Service(MPPS_RETRIEVE_SOP_CLASS, "N-GET", handler.get)]


__all__ = ["MppsHandler", "services"]
