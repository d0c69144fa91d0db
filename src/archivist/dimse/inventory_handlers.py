"""DIMSE handlers for Supplement 223: Repository Query, Inventory Q/R, Inventory Creation.

They plug into the acceptor through :mod:`archivist.dimse.services` (``services(archive)``) and,
like the core handlers, use only ``event.request``, ``event.identifier``,
``event.action_information``, ``event.assoc.requestor``, ``event.is_cancelled`` and
``event.move_destination``.

pynetdicom 3.0.4 sends a trailing 0x0000 Success after a handler's final 0xB001 Warning (its
C-FIND loop ``continue``s after a Warning). PS3.4 C.6.4.4 ends a Repository Query cut by a limit
with the Warning itself. The archive's own acceptor already treats 0xB001 as final; for handlers
served through pynetdicom's SCP loop, :func:`install_b001_fix` drops that extra Success; it is
installed when these services are loaded and changes nothing for other responses. Likewise
:func:`install_n_action_fix` lets an N-ACTION response carry the Attribute Identifier List that
pynetdicom 3.0.4 does not encode.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Iterator
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from archivist.archive.archive import Archive
from archivist.archive.retrieve import InstanceRef
from archivist.core.matching import EMPTY_VALUE, empty_matching_applies
from archivist.core.uids import is_valid_uid
from archivist.dimse.handlers import contexts_for
from archivist.dimse.services import Service, peer_aet
from archivist.dimse.status import Status, query_failure, status_dataset
from archivist.errors import QueryError
from archivist.inventory import (
    INVENTORY_CREATION,
    INVENTORY_FIND,
    INVENTORY_GET,
    INVENTORY_MOVE,
    INVENTORY_STORAGE,
    REPOSITORY_QUERY,
    STORAGE_MANAGEMENT_INSTANCE,
)
from archivist.inventory.builder import InventoryBuilder, InventorySpec, unsupported_scope_keys
from archivist.inventory.catalogue import Catalogue
from archivist.inventory.creation import InventoryCreation, JobError
from archivist.inventory.records import InvalidRecordKey, LimitReached, RepositoryQuery
from archivist.inventory.remote import EventSender, install_n_action_fix

log = logging.getLogger("archivist.dimse.inventory")


class RQStatus(enum.IntEnum):
    """Statuses Supplement 223 adds (PS3.4 C.6.4.4, KK.2.2)."""

    RESPONSE_LIMIT_REACHED = 0xB001  # Warning: matching reached the response limit
    INVALID_PRIOR_RECORD_KEY = 0xA710
    KEYS_NOT_SUPPORTED = 0xB010  # N-ACTION Warning: scope keys not supported for matching


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
        aet = peer_aet(event)
        try:
            req = self.rq.parse(event.identifier)
        except InvalidRecordKey as exc:
            log.warning("Repository Query from %s: %s", aet, exc)
            yield status_dataset(RQStatus.INVALID_PRIOR_RECORD_KEY, str(exc)), None
            return
        except Exception as exc:  # noqa: BLE001
            status, comment = query_failure(exc)
            log.warning("Repository Query from %s refused: %s", aet,
                        comment.partition(": ")[0])  # no key values (patient data)
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
            log.warning("Repository Query from %s failed: %s", aet, comment.partition(": ")[0])
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
        aet = peer_aet(event)
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
            log.warning("Inventory FIND from %s refused: %s", aet, comment.partition(": ")[0])
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
        aet = peer_aet(event)
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


# -- Inventory Creation (PS3.4 Annex KK) ----------------------------------------------------------

#: N-ACTION Action Type IDs (Table KK.2-1).
INITIATE, REQUEST_STATUS, CANCEL, PAUSE, RESUME = 11, 12, 13, 14, 15
#: Keys of the Scope of Inventory Macro's matching sequences and how they become query values.
_MATCHING = ("RangeMatchingSequence", "ListOfUIDMatchingSequence", "GeneralMatchingSequence",
             "EmptyValueMatchingSequence")


def scope_from_action(ds: Dataset) -> tuple[list[tuple[str, str]], list[int]]:
    """Scope keys of an Initiate request, and the tags we cannot match (for 0xB010).

    Range, List of UID and General Matching keys become C-FIND matching values; Empty Value
    Matching keys become ``""`` (C-FIND's Empty Value Matching, PS3.4 C.2.2.2.7) where it
    applies. Sequence-valued keys, and Empty Value Matching on a key it does not apply to, are
    not supported (they fall back to universal matching).
    """
    pairs: list[tuple[str, str]] = []
    unsupported: list[int] = []
    for item in ds.get("ScopeOfInventorySequence", None) or []:
        for name in _MATCHING:
            for group in item.get(name, None) or []:
                for elem in group:
                    if elem.VR == "SQ" or not elem.keyword:
                        unsupported.append(int(elem.tag))
                        continue
                    if name == "EmptyValueMatchingSequence":
                        if empty_matching_applies(elem.keyword):
                            pairs.append((elem.keyword, EMPTY_VALUE))
                        else:
                            unsupported.append(int(elem.tag))
                        continue
                    value = elem.value
                    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
                        text = "\\".join(str(v) for v in value)
                    else:
                        text = str(value if value is not None else "")
                    pairs.append((elem.keyword, text))
    return pairs, unsupported


class InventoryCreationHandler:
    """N-ACTION on the Storage Management SOP Instance (PS3.4 KK.2.2)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.engine = InventoryCreation(archive, EventSender(archive))
        if self.engine.pending():
            self.engine.start()  # resume what a previous process left
        if self.engine.outbox.names():
            self.engine.start_events()  # and deliver the events it could not

    def __call__(self, event: Any) -> tuple[Any, Dataset | None]:
        aet = peer_aet(event)
        req = event.request
        instance = str(getattr(req, "RequestedSOPInstanceUID", "") or "")
        if instance != STORAGE_MANAGEMENT_INSTANCE:
            return status_dataset(0x0112, "Use the Storage Management SOP Instance"), None
        action = int(getattr(req, "ActionTypeID", 0) or 0)
        if action not in (INITIATE, REQUEST_STATUS, CANCEL, PAUSE, RESUME):
            # Before the Action Information is read: what it must hold depends on the action.
            return status_dataset(0x0123, "No such action"), None
        try:
            info = event.action_information
        except Exception:  # noqa: BLE001 - no Action Information, or one that does not decode
            info = None
        info = info if isinstance(info, Dataset) else Dataset()
        uid = str(info.get("TransactionUID", "") or "").strip()
        if not uid:
            return status_dataset(0x0120, "Transaction UID is missing"), None
        try:
            if action == INITIATE:
                return self._initiate(aet, uid, info)
            if action == REQUEST_STATUS:
                interval = info.get("RequestedStatusInterval")
                self.engine.request_status(uid, int(interval) if interval not in (None, "")
                                           else None)
            elif action == CANCEL:
                retain = str(info.get("RetainInstances", "") or "").strip().upper()
                if retain not in ("YES", "NO"):
                    return status_dataset(0x0120, "Retain Instances must be YES or NO"), None
                self.engine.cancel(uid, retain == "YES")
            elif action == PAUSE:
                self.engine.pause(uid)
            else:
                self.engine.resume(uid)
        except JobError as exc:
            log.warning("Inventory Creation action %d from %s: %s", action, aet,
                        str(exc).partition(": ")[0])  # no scope values (patient data)
            return status_dataset(exc.status, str(exc)), None
        except Exception as exc:
            log.exception("Inventory Creation action %d from %s failed", action, aet)
            return status_dataset(0x0110, f"Processing failure: {type(exc).__name__}"), None
        return Status.SUCCESS, None

    def _initiate(self, aet: str, uid: str, info: Dataset) -> tuple[Any, Dataset | None]:
        level = str(info.get("InventoryLevel", "") or "").strip()
        if not level:
            return status_dataset(0x0120, "Inventory Level is missing"), None
        if not is_valid_uid(uid):
            # It would be written into every Inventory instance (a UI value) and name the job.
            return status_dataset(0x0106, "Transaction UID is not a valid UID"), None
        pairs, unsupported = scope_from_action(info)
        try:
            spec = InventorySpec(level=level, scope=pairs,
                                 studies_per_instance=self.engine.studies_per_instance,
                                 purpose=str(info.get("InventoryPurpose", "") or ""))
            bad = unsupported_scope_keys(pairs)
            if bad:
                unsupported += [int(tag_for_keyword(k) or 0) for k in bad]
                spec.scope = [(k, v) for k, v in pairs if k not in bad]
            InventoryBuilder(self.archive).study_keys(spec)  # the scope must parse
        except QueryError as exc:
            return status_dataset(0x0106, str(exc)), None
        interval = info.get("RequestedStatusInterval")
        self.engine.initiate(uid, spec, requester_aet=aet,
                             status_interval=int(interval) if interval not in (None, "") else 0)
        if unsupported:
            warn = status_dataset(RQStatus.KEYS_NOT_SUPPORTED,
                                  "Some scope keys are not supported for matching")
            warn.AttributeIdentifierList = unsupported
            return warn, None
        return Status.SUCCESS, None


# -- the registry entry point ------------------------------------------------------------------


def services(archive: Archive) -> list[Service]:
    """The Supplement 223 services this archive offers (see :mod:`archivist.dimse.services`)."""
    install_b001_fix()
    install_n_action_fix()
    accept_inventory_storage()
    qr = InventoryQR(archive)
    return [
        Service(INVENTORY_CREATION, "N-ACTION", InventoryCreationHandler(archive)),
        Service(REPOSITORY_QUERY, "C-FIND", RepositoryQueryHandler(archive)),
        Service(INVENTORY_FIND, "C-FIND", qr.find),
        Service(INVENTORY_MOVE, "C-MOVE", qr.move),
        Service(INVENTORY_GET, "C-GET", qr.get),
    ]


__all__ = [
    "INVENTORY_CREATION", "INVENTORY_FIND", "INVENTORY_GET", "INVENTORY_MOVE", "EventSender",
    "RQStatus", "install_b001_fix", "services",
]
