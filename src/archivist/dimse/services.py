"""Extra DIMSE services: the seam through which feature modules add SOP classes to the SCP.

The core services (Verification, Storage, Query/Retrieve) are bound by the acceptor itself. A
feature (for example Supplement 223's Repository Query, Inventory Q/R and Inventory Creation)
lists a module in :data:`PROVIDERS`; that module exposes ``services(archive) -> list[Service]``.
The acceptor adds a presentation context for each service's SOP class and dispatches a request
to the service's handler when its message type and Affected (or Requested) SOP Class UID match.

A handler takes the same event-like object as the core handlers in :mod:`archivist.dimse.handlers`
and returns what pynetdicom expects for that message type: an iterator of ``(status, identifier)``
for C-FIND, the C-MOVE/C-GET generator protocol, or ``(status, dataset)`` for N-ACTION, N-GET...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archivist.archive.archive import Archive

MESSAGES = ("C-FIND", "C-MOVE", "C-GET", "N-ACTION", "N-GET", "N-SET", "N-CREATE",
            "N-DELETE", "N-EVENT-REPORT")

# Modules contributing services, each with ``services(archive) -> list[Service]``: Supplement
# 223's, Storage Commitment (PS3.4 Annex J), Modality Worklist (Annex K), Modality Performed
# Procedure Step (Annex F) and Unified Procedure Step (Annex CC).
PROVIDERS: tuple[str, ...] = ("archivist.dimse.inventory_handlers",
                              "archivist.dimse.commitment", "archivist.dimse.worklist",
                              "archivist.dimse.mpps", "archivist.dimse.ups")

# SOP classes whose DIMSE-N requests name the SOP Class of the instance rather than the one
# negotiated: every UPS instance is of the UPS Push SOP Class, so an N-GET, N-SET or N-ACTION
# on a UPS Pull or Watch context names UPS Push (PS3.4 CC.3.1.1, PS3.7 10.1). Negotiated SOP
# class -> the SOP Class UID its N-requests may name besides its own.
INSTANCE_SOP_CLASS: dict[str, str] = {
    "1.2.840.10008.5.1.4.34.6.2": "1.2.840.10008.5.1.4.34.6.1",  # UPS Watch -> UPS Push
    "1.2.840.10008.5.1.4.34.6.3": "1.2.840.10008.5.1.4.34.6.1",  # UPS Pull -> UPS Push
    "1.2.840.10008.5.1.4.34.6.4": "1.2.840.10008.5.1.4.34.6.1",  # UPS Event -> UPS Push
    "1.2.840.10008.5.1.4.34.6.5": "1.2.840.10008.5.1.4.34.6.1",  # UPS Query -> UPS Push
}


@dataclass(frozen=True)
class Service:
    """One DIMSE message type on one SOP class, served by `handler`."""

    sop_class: str
    message: str
    handler: Callable[[Any], Any]

    def __post_init__(self) -> None:
        if self.message not in MESSAGES:
            raise ValueError(f"unknown DIMSE message type {self.message!r}")


def load_services(archive: Archive) -> list[Service]:
    """Every extra service the configured providers offer for this archive."""
    found: list[Service] = []
    for name in PROVIDERS:
        module = importlib.import_module(name)
        found.extend(module.services(archive))
    return found


def request_sop_class(event: Any) -> str:
    """The SOP class a DIMSE request addresses (Affected for C-*/N-EVENT, Requested for N-*)."""
    req = event.request
    uid = getattr(req, "AffectedSOPClassUID", None) or getattr(req, "RequestedSOPClassUID", None)
    return str(uid or "")


def names_context_class(sop_class: str, negotiated: str) -> bool:
    """Whether a request naming `sop_class` belongs on a context negotiated for `negotiated`:
    the same class, or the class of the instances it operates on (:data:`INSTANCE_SOP_CLASS`)."""
    return sop_class == negotiated or INSTANCE_SOP_CLASS.get(negotiated) == sop_class


def negotiated_sop_class(event: Any) -> str:
    """The abstract syntax of the presentation context a request came on ("" when unknown)."""
    context = getattr(event, "context", None)
    return str(getattr(context, "abstract_syntax", "") or "")


def peer_aet(event: Any) -> str:
    """The calling AE title of the association a request came on, stripped."""
    aet = event.assoc.requestor.ae_title
    if isinstance(aet, bytes):
        aet = aet.decode("ascii", "replace")
    return str(aet).strip()
