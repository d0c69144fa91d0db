"""Unified Procedure Step SCP (PS3.4 Annex CC): UPS Push, Pull, Watch and Query, and UPS Event
reports to the subscribers.

The rules and the store are :mod:`archivist.archive.ups` (shared with UPS-RS); this module turns
DIMSE requests into calls and :class:`~archivist.archive.ups.UpsError` into statuses:

- UPS Push (1.2.840.10008.5.1.4.34.6.1): N-CREATE, N-ACTION Request Cancellation (2), N-GET.
- UPS Pull (…6.3): C-FIND, N-GET, N-SET, N-ACTION Change State (1).
- UPS Watch (…6.2): N-ACTION Request Cancellation (2), Subscribe (3), Unsubscribe (4) and
  Suspend Global Subscription (5), N-GET, C-FIND.
- UPS Query (…6.5): C-FIND.

Every UPS instance is of the UPS Push SOP Class, so N-requests on a Pull or Watch context may
name UPS Push as their SOP Class (CC.3.1.1; :data:`archivist.dimse.services.INSTANCE_SOP_CLASS`);
what a request may do is decided by the SOP class negotiated for its context (Tables CC.2-1 to
CC.2-5): an N-ACTION of another SOP class is 0x0123 No such action.

UPS Event (…6.4): the events the store queued (``ups_event``) for subscribers with a configured
address (``--peer AET=HOST:PORT``) are sent by :class:`UpsEventSender`, a thread of each serving
process, in N-EVENT-REPORTs on an association the archive opens, proposing the UPS Event SOP
Class with the archive in the SCP role (SCP/SCU Role Selection, PS3.7 D.3.3.4), as Storage
Commitment reports are. The Affected SOP Class UID is UPS Push and the Affected SOP Instance UID
the workitem's (CC.2.4.3). A subscription for a Receiving AE without an address is refused
(0xC308): its events could never reach it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from archivist.archive.ups import (
    CREATED_WITH_MODIFICATIONS,
    FILTERED_GLOBAL_SUBSCRIPTION,
    GLOBAL_SUBSCRIPTION,
    INVALID_ATTRIBUTE_VALUE,
    MISSING_ATTRIBUTE,
    NO_SUCH_WORKITEM,
    PROCESSING_FAILURE,
    UNKNOWN_RECEIVING_AE,
    UPS_EVENT,
    UPS_PULL,
    UPS_PUSH,
    UPS_QUERY,
    UPS_WATCH,
    PendingEvent,
    UpsError,
    Workitems,
)
from archivist.core.pynetdicom_race import install as install_scu_guard
from archivist.core.scu_socket import no_delay
from archivist.core.tls import client_context
from archivist.dimse.mpps import request_data_set
from archivist.dimse.services import Service, peer_aet
from archivist.dimse.status import Status, query_failure, refusal, status_dataset
from archivist.dimse.worklist import in_query_charset
from archivist.errors import QueryError

if TYPE_CHECKING:
    from archivist.archive.archive import Archive
    from archivist.config import Peer, Settings

log = logging.getLogger("archivist.dimse.ups")

# N-ACTION Action Type IDs (PS3.4 Tables CC.2.1-1, CC.2.2-1, CC.2.3-1).
CHANGE_STATE, REQUEST_CANCEL, SUBSCRIBE, UNSUBSCRIBE, SUSPEND_GLOBAL = 1, 2, 3, 4, 5
#: The N-ACTIONs each SOP class defines (Tables CC.2-1 to CC.2-3).
ACTIONS = {UPS_PUSH: frozenset({REQUEST_CANCEL}), UPS_PULL: frozenset({CHANGE_STATE}),
           UPS_WATCH: frozenset({REQUEST_CANCEL, SUBSCRIBE, UNSUBSCRIBE, SUSPEND_GLOBAL})}
NO_SUCH_ACTION = 0x0123  # PS3.7 C.4.14
#: Action Information keys that are not matching keys of a filtered global subscription.
_SUBSCRIPTION_KEYS = ("ReceivingAE", "DeletionLock")

#: The sender looks for due events this often when nothing wakes it (seconds).
POLL_SECONDS = 1.0
#: A failed delivery is retried after 1 s, then 2, 4... up to 60 s (PendingEvent.attempts).
RETRY_FIRST, RETRY_MAX = 1.0, 60.0
#: At most this many events per pass.
BATCH = 100
#: Subscribers sent to at once by one sender.
SUBSCRIBERS_AT_ONCE = 8
#: 0xC307's Error Comment: Table CC.2.7-2's words ("...is not a UPS Instance managed by this
#: SCP") are 86 characters, and an Error Comment (LO) holds 64: cut, they ended "UPS Instan".
NO_SUCH_WORKITEM_COMMENT = "SOP Instance UID is not a UPS Instance managed by this SCP"
#: A refusal's text that starts with the tag it is about ("(0074,1000) ...").
_TAG_PREFIX = re.compile(r"\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\) ")




def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _refused(exc: UpsError) -> Dataset:
    """The status of a refusal by the rules, an unknown workitem's with an Error Comment that
    arrives whole (the store's words for it are UPS-RS's too, where they need not fit in 64
    characters)."""
    status = refusal(exc)
    text = str(exc)
    tagged = _TAG_PREFIX.match(text)
    if exc.status == NO_SUCH_WORKITEM and len(text) > 64:
        status.ErrorComment = NO_SUCH_WORKITEM_COMMENT
    elif len(text) > 64 and tagged is not None and "AttributeIdentifierList" in status:
        # "(0074,1000) Procedure Step State must be ...": the tag is in the Attribute
        # Identifier List; without it the words fit.
        status.ErrorComment = text[tagged.end():][:64]
    return status


def _requested_uid(event: Any) -> str:
    return str(getattr(event.request, "RequestedSOPInstanceUID", "") or "").strip()


class UpsHandler:
    """The UPS requests on one archive. `sender` (when subscribers can be reached) is woken
    after each change, so the events it caused go out at once."""

    def __init__(self, settings: Settings, items: Workitems,
                 sender: UpsEventSender | None = None) -> None:
        self.settings = settings
        self.items = items
        self.sender = sender

    def _changed(self) -> None:
        if self.sender is not None:
            self.sender.wake()

    # -- N-CREATE (UPS Push, CC.2.5) -------------------------------------------------------------

    def create(self, event: Any) -> tuple[Any, Dataset | None]:
        aet = peer_aet(event)
        uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "").strip() or None
        attributes = request_data_set(event, "attribute_list", "AttributeList")
        if attributes is None:
            return status_dataset(MISSING_ATTRIBUTE, "The Attribute List is missing, cut "
                                  "short, or does not decode"), None
        try:
            created, changes = self.items.create(uid, attributes, aet)
        except UpsError as exc:
            log.warning("UPS N-CREATE from %s refused (0x%04X): %s", aet, exc.status, exc)
            return _refused(exc), None
        except Exception:
            log.exception("UPS N-CREATE from %s failed", aet)
            return status_dataset(PROCESSING_FAILURE, "Processing failure"), None
        self._changed()
        log.info("UPS %s created by %s (SCHEDULED)", created, aet)
        reply = None
        if uid is None:  # assigned here: the response carries it (PS3.7 10.1.5.1.2)
            reply = Dataset()
            reply.AffectedSOPInstanceUID = created
        if changes:
            # Created with modifications (Table CC.2.5-4): what the archive filled in or dropped.
            return status_dataset(CREATED_WITH_MODIFICATIONS, "; ".join(changes)), reply
        return Status.SUCCESS, reply

    # -- N-GET (CC.2.7) --------------------------------------------------------------------------

    def get(self, event: Any) -> tuple[Any, Dataset | None]:
        uid = _requested_uid(event)
        item = self.items.get(uid) if uid else None
        if item is None:
            return status_dataset(NO_SUCH_WORKITEM, NO_SUCH_WORKITEM_COMMENT), None
        ds = item.dataset
        if "TransactionUID" in ds:  # never returned (CC.2.7.3)
            del ds.TransactionUID
        wanted = list(getattr(event, "attribute_identifiers", None) or [])
        if not wanted:
            return Status.SUCCESS, ds
        reply = Dataset()
        for tag in wanted:
            tag = Tag(tag)
            if tag in ds and tag != Tag("TransactionUID"):
                reply[tag] = ds[tag]
        if "SpecificCharacterSet" in ds:
            # The values are in it (PS3.3 C.12.1.1.2): asked for or not, it goes with them.
            reply.SpecificCharacterSet = ds.SpecificCharacterSet
        return Status.SUCCESS, reply

    # -- N-SET (UPS Pull, CC.2.6) ----------------------------------------------------------------

    def set(self, event: Any) -> tuple[Any, Dataset | None]:
        aet = peer_aet(event)
        uid = _requested_uid(event)
        modifications = request_data_set(event, "modification_list", "ModificationList")
        if modifications is None:
            return status_dataset(MISSING_ATTRIBUTE, "The Modification List is missing, cut "
                                  "short, or does not decode"), None
        try:
            item = self.items.set(uid, modifications)
        except UpsError as exc:
            log.warning("UPS N-SET of %s from %s refused (0x%04X): %s", uid, aet, exc.status,
                        exc)
            return _refused(exc), None
        except Exception:
            log.exception("UPS N-SET of %s from %s failed", uid, aet)
            return status_dataset(PROCESSING_FAILURE, "Processing failure"), None
        self._changed()
        log.info("UPS %s updated by %s (%s)", uid, aet, item.state)
        return Status.SUCCESS, None

    # -- C-FIND (UPS Pull, Watch, Query; CC.2.8) -------------------------------------------------

    def find(self, event: Any) -> Iterator[tuple[Any, Dataset | None]]:
        identifier: Dataset = event.identifier
        charset = identifier.get("SpecificCharacterSet")
        found = self.items.find(identifier)
        count = 0
        while True:
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            try:
                item = next(found)
            except StopIteration:
                break
            except (QueryError, ValueError) as exc:
                status, comment = query_failure(exc if isinstance(exc, QueryError)
                                                else QueryError(str(exc)))
                yield status_dataset(status, comment), None
                return
            yield Status.PENDING, in_query_charset(Workitems.answer(identifier, item), charset)
            count += 1
        log.info("UPS query from %s: %d workitems", peer_aet(event), count)
        yield Status.SUCCESS, None

    # -- N-ACTION (CC.2.1, CC.2.2, CC.2.3) -------------------------------------------------------

    def action(self, sop_class: str) -> Callable[[Any], tuple[Any, Dataset | None]]:
        """The N-ACTION handler of `sop_class`: the Action Types that SOP class defines."""
        allowed = ACTIONS[sop_class]

        def handle(event: Any) -> tuple[Any, Dataset | None]:
            kind = int(getattr(event.request, "ActionTypeID", 0) or 0)
            if kind not in allowed:
                return status_dataset(NO_SUCH_ACTION, f"No such action type {kind} on this "
                                      "UPS SOP Class"), None
            info = request_data_set(event, "action_information", "ActionInformation")
            if info is None:
                info = Dataset() if kind == REQUEST_CANCEL else None  # (optional there)
            if info is None:
                return status_dataset(MISSING_ATTRIBUTE, "The Action Information is missing, "
                                      "cut short, or does not decode"), None
            aet = peer_aet(event)
            uid = _requested_uid(event)
            try:
                status = self._act(kind, uid, info, aet)
            except UpsError as exc:
                log.warning("UPS N-ACTION %d on %s from %s refused (0x%04X): %s", kind, uid,
                            aet, exc.status, exc)
                return _refused(exc), None
            except Exception:
                log.exception("UPS N-ACTION %d on %s from %s failed", kind, uid, aet)
                return status_dataset(PROCESSING_FAILURE, "Processing failure"), None
            self._changed()
            return status, None

        return handle

    def _act(self, kind: int, uid: str, info: Dataset, aet: str) -> Any:
        if kind == CHANGE_STATE:
            if "ProcedureStepState" not in info:
                raise UpsError(MISSING_ATTRIBUTE, "(0074,1000) Procedure Step State is "
                               "missing", (int(Tag("ProcedureStepState")),))
            state = _text(info, "ProcedureStepState")
            item, status = self.items.change_state(uid, state, _text(info, "TransactionUID"))
            log.info("UPS %s: %s by %s", uid, item.state, aet)
            return self._warning(status, f"The UPS is already {item.state}")
        if kind == REQUEST_CANCEL:
            item, status = self.items.request_cancel(uid, info, aet)
            log.info("UPS %s: cancellation requested by %s (%s)", uid, aet, item.state)
            return self._warning(status, "The UPS is already CANCELED")
        receiving = _text(info, "ReceivingAE")
        if not receiving:
            raise UpsError(MISSING_ATTRIBUTE, "(0074,1234) Receiving AE is missing",
                           (int(Tag("ReceivingAE")),))
        if kind == SUBSCRIBE:
            return self._subscribe(uid, info, receiving, aet)
        if kind == UNSUBSCRIBE:
            self.items.unsubscribe(receiving, uid)
            log.info("UPS %s: %s unsubscribed by %s", uid, receiving, aet)
            return Status.SUCCESS
        # SUSPEND_GLOBAL
        if uid not in (GLOBAL_SUBSCRIPTION, FILTERED_GLOBAL_SUBSCRIPTION):
            raise UpsError(NO_SUCH_WORKITEM, "Suspend Global Subscription is on "
                           f"{GLOBAL_SUBSCRIPTION}")
        self.items.suspend_global(receiving)
        log.info("UPS global subscription of %s suspended by %s", receiving, aet)
        return Status.SUCCESS

    def _subscribe(self, uid: str, info: Dataset, receiving: str, aet: str) -> Any:
        if "DeletionLock" not in info:
            raise UpsError(MISSING_ATTRIBUTE, "(0074,1230) Deletion Lock is missing",
                           (int(Tag("DeletionLock")),))
        lock = _text(info, "DeletionLock").upper()
        if lock not in ("TRUE", "FALSE"):
            raise UpsError(INVALID_ATTRIBUTE_VALUE, "(0074,1230) Deletion Lock must be TRUE "
                           "or FALSE", (int(Tag("DeletionLock")),))
        if self.settings.peer(receiving) is None:
            # Its events could never be sent: say so now (PS3.4 CC.2.3.4).
            raise UpsError(UNKNOWN_RECEIVING_AE, "Receiving AE unknown: configure --peer "
                           f"{receiving}=HOST:PORT")
        matching = None
        if uid == FILTERED_GLOBAL_SUBSCRIPTION:
            matching = Dataset()
            for elem in info:
                if elem.tag.group != 0x0000 and elem.keyword not in _SUBSCRIPTION_KEYS:
                    matching.add(elem)
        try:
            self.items.subscribe(receiving, uid, deletion_lock=lock == "TRUE",
                                 matching=matching)
        except (QueryError, ValueError) as exc:
            raise UpsError(INVALID_ATTRIBUTE_VALUE,
                           f"A matching key cannot be used: {exc}") from None
        log.info("UPS %s: %s subscribed by %s (deletion lock %s)", uid, receiving, aet, lock)
        return Status.SUCCESS

    @staticmethod
    def _warning(status: int, comment: str) -> Any:
        return status_dataset(status, comment) if status else Status.SUCCESS


class UpsEventSender:
    """A thread sending the queued UPS events of the subscribers with a configured address.

    Each pass takes :meth:`Workitems.due_events` of those AE titles, and for each subscriber
    opens one association and sends its events in order, each :meth:`~Workitems.claim`-ed
    first (so the threads, workers and nodes sharing the index never send the same one) and
    :meth:`~Workitems.delivered` once the subscriber answered (whatever its status). A failure
    (no association, no answer) puts the event back with :meth:`~Workitems.retry_later`, 1 s
    doubling to 60 s by its attempts, and holds back the subscriber's later events. Idle, a
    pass is one read of the ``ups_event`` table a second (:data:`POLL_SECONDS`);
    :meth:`wake` starts one at once.
    """

    def __init__(self, settings: Settings, items: Workitems, *,
                 alive: Callable[[], bool] = lambda: True) -> None:
        self.settings = settings
        self.items = items
        self.alive = alive
        self.lease = max(60.0, settings.acse_timeout + settings.dimse_timeout + 30)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=SUBSCRIBERS_AT_ONCE,
                                        thread_name_prefix="ups-event")
        self._busy: set[str] = set()  # subscribers being sent to now
        self._busy_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="ups-event-sender",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set() and self.alive():
            self._wake.clear()
            try:
                delay = self._pass()
                failures = 0
            except Exception:  # noqa: BLE001 - the index unavailable for a moment: again later
                failures += 1
                (log.warning if failures == 1 else log.debug)(
                    "UPS events could not be read", exc_info=True)
                delay = min(RETRY_MAX, RETRY_FIRST * 2 ** failures)
            if delay > 0:
                self._wake.wait(delay)

    def _pass(self) -> float:
        """Send what is due; returns how long to wait before the next pass."""
        aets = {peer.aet for peer in self.settings.peers}
        if not aets:
            return POLL_SECONDS
        due = self.items.due_events(aets, limit=BATCH)
        by_aet: dict[str, list[PendingEvent]] = {}
        for event in due:
            by_aet.setdefault(event.aet, []).append(event)
        # Each subscriber's events on a thread of their own, a pass not waiting for them: one
        # that does not answer (up to the ACSE timeout) holds back no one else's.
        started = 0
        for aet, events in by_aet.items():
            with self._busy_lock:
                if aet in self._busy:
                    continue
                self._busy.add(aet)
            self._pool.submit(self._deliver_then_free, aet, events)
            started += 1
        return POLL_SECONDS if not started else min(POLL_SECONDS, 0.2)

    def _deliver_then_free(self, aet: str, events: list[PendingEvent]) -> None:
        try:
            if self._deliver(aet, events):
                self._wake.set()  # more may be due behind them
        except Exception:  # logged; the events are due again after their lease
            log.warning("UPS events to %s failed", aet, exc_info=True)
        finally:
            with self._busy_lock:
                self._busy.discard(aet)

    def _deliver(self, aet: str, events: list[PendingEvent]) -> int:
        """Send `events` (one subscriber's, in order) on one association; returns how many
        were delivered."""
        peer = self.settings.peer(aet)
        assoc = None
        sent = 0
        try:
            for event in events:
                if self._stop.is_set():
                    break
                if not self.items.claim(event.pk, self.lease):
                    break  # another sender has it (and, after it, the later ones)
                try:
                    if peer is None:
                        raise ConnectionError(f"{aet} has no configured address")
                    if assoc is None:
                        assoc = self._associate(peer)
                    status = self._send(assoc, event)
                except Exception as exc:  # noqa: BLE001 - the subscriber cannot be reached
                    pause = min(RETRY_MAX, RETRY_FIRST * 2 ** event.attempts)
                    self.items.retry_later(event.pk, pause)
                    (log.warning if event.attempts == 0 else log.debug)(
                        "UPS event %d of %s to %s not delivered (attempt %d, next in %.0f s): "
                        "%s", event.event_type, event.ups_uid, aet, event.attempts + 1, pause,
                        exc)
                    break
                self.items.delivered(event.pk)
                sent += 1
                log.info("UPS event %d of %s to %s: 0x%04X", event.event_type, event.ups_uid,
                         aet, status)
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()
        return sent

    def _associate(self, peer: Peer) -> Any:
        from pynetdicom import AE, build_role

        settings = self.settings
        install_scu_guard()  # pynetdicom's lost-response race
        ae = AE(ae_title=settings.aet)
        ae.acse_timeout = settings.acse_timeout
        ae.dimse_timeout = settings.dimse_timeout
        ae.network_timeout = settings.network_timeout
        ae.add_requested_context(UPS_EVENT)
        tls = client_context(settings, peer.aet)  # a peer of dicom_tls_peers: TLS
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet,
                             ext_neg=[build_role(UPS_EVENT, scu_role=False, scp_role=True)],
                             tls_args=(tls, peer.host) if tls is not None else None)
        if not assoc.is_established:
            raise ConnectionError(f"association with {peer.aet} at {peer.host}:{peer.port} "
                                  "not accepted")
        no_delay(assoc)  # event data sets go out without waiting for a delayed ACK
        return assoc

    @staticmethod
    def _send(assoc: Any, event: PendingEvent) -> int:
        # On the UPS Event context; the Affected SOP Class is the instance's, UPS Push
        # (PS3.4 CC.2.4.3).
        status, _ = assoc.send_n_event_report(event.info, event.event_type, UPS_PUSH,
                                              event.ups_uid, meta_uid=UPS_EVENT)
        if not status or "Status" not in status:
            raise ConnectionError("no response to the N-EVENT-REPORT")
        return int(status.Status) & 0xFFFF


def services(archive: Archive) -> list[Service]:
    """UPS Push, Pull, Watch and Query as an SCP, and the UPS Event sender when peers are
    configured (see :mod:`archivist.dimse.services`)."""
    settings = archive.settings
    items = Workitems(archive.index, pn_fold=settings.pn_case_insensitive)
    sender = None
    if settings.peers:  # (no address, no DIMSE subscriber: 0xC308)
        data_dir = Path(settings.data_dir)
        sender = UpsEventSender(settings, items, alive=data_dir.exists)
    handler = UpsHandler(settings, items, sender)
    return [
        Service(UPS_PUSH, "N-CREATE", handler.create),
        Service(UPS_PUSH, "N-ACTION", handler.action(UPS_PUSH)),
        Service(UPS_PUSH, "N-GET", handler.get),
        Service(UPS_PULL, "C-FIND", handler.find),
        Service(UPS_PULL, "N-GET", handler.get),
        Service(UPS_PULL, "N-SET", handler.set),
        Service(UPS_PULL, "N-ACTION", handler.action(UPS_PULL)),
        Service(UPS_WATCH, "N-ACTION", handler.action(UPS_WATCH)),
        Service(UPS_WATCH, "N-GET", handler.get),
        Service(UPS_WATCH, "C-FIND", handler.find),
        Service(UPS_QUERY, "C-FIND", handler.find),
    ]


__all__ = ["UpsEventSender", "UpsHandler", "services"]
