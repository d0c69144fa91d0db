"""DIMSE handlers for Supplement 223: Repository Query, Inventory Q/R, Inventory Creation.

They plug into the acceptor through :mod:`archivist.dimse.services` (``services(archive)``) and,
like the core handlers, use only ``event.request``, ``event.identifier``,
``event.action_information``, ``event.assoc.requestor``, ``event.is_cancelled`` and
``event.move_destination``.

pynetdicom 3.0.4 sends a trailing 0x0000 Success after a handler's final 0xB001 Warning (its
C-FIND loop ``continue``s after a Warning). PS3.4 C.6.4.4 ends a Repository Query cut by a limit
with the Warning itself, so :func:`install_b001_fix` drops that extra Success; it is installed
when these services are loaded and changes nothing for other responses.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset

from archivist.archive.archive import Archive
from archivist.archive.retrieve import InstanceRef
from archivist.dimse.handlers import contexts_for
from archivist.dimse.services import Service
from archivist.dimse.status import Status, query_failure, status_dataset
from archivist.inventory import (
    INVENTORY_CREATION,
    INVENTORY_FIND,
    INVENTORY_GET,
    INVENTORY_MOVE,
    INVENTORY_STORAGE,
    REPOSITORY_QUERY,
)
from archivist.inventory.catalogue import Catalogue
from archivist.inventory.records import InvalidRecordKey, LimitReached, RepositoryQuery

log = logging.getLogger("archivist.dimse.inventory")


class RQStatus(enum.IntEnum):
    """Statuses Supplement 223 adds (PS3.4 C.6.4.4, KK.2.2)."""

    RESPONSE_LIMIT_REACHED = 0xB001  # Warning: matching reached the response limit
    INVALID_PRIOR_RECORD_KEY = 0xA710
    KEYS_NOT_SUPPORTED = 0xB010  # N-ACTION Warning: scope keys not supported for matching


def _peer_aet(event: Any) -> str:
    aet = event.assoc.requestor.ae_title
    if isinstance(aet, bytes):
        aet = aet.decode("ascii", "replace")
    return str(aet).strip()


# -- the pynetdicom 0xB001 fix -----------------------------------------------------------------


def install_b001_fix() -> None:
    """Make 0xB001 the final C-FIND response in pynetdicom's SCP (idempotent).

    Wraps ``ServiceClass._c_find_scp``: while it runs, a 0x0000 response that follows a 0xB001
    response to the same request is not sent.
    """
    from pynetdicom.service_class import ServiceClass

    original = ServiceClass._c_find_scp
    if getattr(original, "_archivist_b001", False):
        return

    @functools.wraps(original)
    def _c_find_scp(self: Any, req: Any, context: Any) -> None:
        dimse = self.assoc.dimse
        send = dimse.send_msg
        state = {"warned": False}

        def send_msg(primitive: Any, context_id: int) -> None:
            status = getattr(primitive, "Status", None)
            if state["warned"] and status == 0x0000:
                return
            if status == RQStatus.RESPONSE_LIMIT_REACHED:
                state["warned"] = True
            send(primitive, context_id)

        dimse.send_msg = send_msg
        try:
            original(self, req, context)
        finally:
            try:
                del dimse.send_msg
            except AttributeError:
                dimse.send_msg = send

    _c_find_scp._archivist_b001 = True  # type: ignore[attr-defined]
    ServiceClass._c_find_scp = _c_find_scp  # type: ignore[method-assign]


def accept_inventory_storage() -> None:
    """Add Inventory Storage to the storage SOP classes the acceptor offers (idempotent).

    pynetdicom 3.0.4 keeps non-patient storage classes out of ``_STORAGE_CLASSES``, which the
    acceptor reads to propose storage contexts (with SCU and SCP roles, so C-GET can deliver):
    without this, inventories could neither be received by C-STORE nor sent by Inventory GET.
    """
    from pynetdicom.sop_class import _STORAGE_CLASSES  # type: ignore[attr-defined]

    _STORAGE_CLASSES.setdefault("InventoryStorage", INVENTORY_STORAGE)


# -- Repository Query --------------------------------------------------------------------------


class RepositoryQueryHandler:
    """C-FIND on the Repository Query SOP Class (PS3.4 C.6.4)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.rq = RepositoryQuery(archive.search)

    def __call__(self, event: Any) -> Iterator[tuple[Any, Dataset | None]]:
        aet = _peer_aet(event)
        try:
            req = self.rq.parse(event.identifier)
        except InvalidRecordKey as exc:
            log.warning("Repository Query from %s: %s", aet, exc)
            yield status_dataset(RQStatus.INVALID_PRIOR_RECORD_KEY, str(exc)), None
            return
        except Exception as exc:  # noqa: BLE001
            status, comment = query_failure(exc)
            log.warning("Repository Query from %s refused: %s", aet, comment)
            yield status_dataset(status, comment), None
            return
        charset = event.identifier.get("SpecificCharacterSet") or ""
        count = 0
        try:
            for item in self.rq.page(req):
                if event.is_cancelled:
                    yield Status.CANCEL, None
                    return
                if isinstance(item, LimitReached):
                    log.info("Repository Query from %s level=%s: %d records, limit reached",
                             aet, req.level.value, count)
                    yield RQStatus.RESPONSE_LIMIT_REACHED, None
                    return
                _charset(item, charset)
                yield Status.PENDING, item
                count += 1
        except Exception as exc:  # noqa: BLE001
            status, comment = query_failure(exc)
            log.warning("Repository Query from %s failed: %s", aet, comment)
            yield status_dataset(status, comment), None
            return
        log.info("Repository Query from %s level=%s: %d records", aet, req.level.value, count)
        yield Status.SUCCESS, None


def _charset(ds: Dataset, requested: Any) -> None:
    from archivist.dimse.charset import choose_charset

    cs = choose_charset(ds, requested)
    if cs:
        ds.SpecificCharacterSet = cs


# -- Inventory Query/Retrieve (PS3.4 Annex JJ) -------------------------------------------------


class InventoryQR:
    """Inventory FIND, MOVE and GET over the inventories stored in the archive."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.catalogue = Catalogue(archive)

    def find(self, event: Any) -> Iterator[tuple[Any, Dataset | None]]:
        aet = _peer_aet(event)
        count = 0
        try:
            for _, ds in self.catalogue.match(event.identifier):
                if event.is_cancelled:
                    yield Status.CANCEL, None
                    return
                yield Status.PENDING, ds
                count += 1
        except Exception as exc:  # noqa: BLE001
            status, comment = query_failure(exc)
            log.warning("Inventory FIND from %s refused: %s", aet, comment)
            yield status_dataset(status, comment), None
            return
        log.info("Inventory FIND from %s: %d inventories", aet, count)
        yield Status.SUCCESS, None

    def _load(self, ref: InstanceRef) -> Dataset | None:
        try:
            return self.archive.retrieve.dataset(ref)
        except Exception as exc:  # noqa: BLE001 - counted as a failed sub-operation
            log.error("cannot read stored inventory %s: %s", ref.sop_instance_uid,
                      type(exc).__name__)
            return None

    def move(self, event: Any) -> Iterator[Any]:
        aet = _peer_aet(event)
        dest = event.move_destination
        if isinstance(dest, bytes):
            dest = dest.decode("ascii", "replace")
        peer = self.archive.settings.peer(str(dest).strip())
        if peer is None:
            log.warning("Inventory MOVE from %s to unknown destination %r", aet, dest)
            yield None, None
            return
        try:
            refs = self.catalogue.refs_for(event.identifier)
        except Exception as exc:  # noqa: BLE001
            status, comment = query_failure(exc)
            yield peer.host, peer.port
            yield status_dataset(status, comment), None
            return
        yield peer.host, peer.port, {"contexts": contexts_for(refs)}
        yield len(refs)
        for ref in refs:
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            yield Status.PENDING, self._load(ref)

    def get(self, event: Any) -> Iterator[Any]:
        try:
            refs = self.catalogue.refs_for(event.identifier)
        except Exception as exc:  # noqa: BLE001
            status, comment = query_failure(exc)
            yield status_dataset(status, comment), None
            return
        yield len(refs)
        for ref in refs:
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            yield Status.PENDING, self._load(ref)


# -- the registry entry point ------------------------------------------------------------------


def services(archive: Archive) -> list[Service]:
    """The Supplement 223 services this archive offers (see :mod:`archivist.dimse.services`)."""
    install_b001_fix()
    accept_inventory_storage()
    qr = InventoryQR(archive)
    return [
        Service(REPOSITORY_QUERY, "C-FIND", RepositoryQueryHandler(archive)),
        Service(INVENTORY_FIND, "C-FIND", qr.find),
        Service(INVENTORY_MOVE, "C-MOVE", qr.move),
        Service(INVENTORY_GET, "C-GET", qr.get),
    ]


__all__ = [
    "INVENTORY_CREATION", "INVENTORY_FIND", "INVENTORY_GET", "INVENTORY_MOVE", "RQStatus",
    "install_b001_fix", "services",
]
