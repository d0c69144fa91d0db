"""Unified Procedure Steps (PS3.4 Annex CC): worklist items that any system creates, claims,
reports progress on, completes or cancels, and others watch.

A UPS SOP Instance (a *workitem*) is created SCHEDULED (N-CREATE on UPS Push, or UPS-RS
``POST /workitems``); a performer claims it by changing its state to IN PROGRESS with a
Transaction UID of its own (N-ACTION Change State on UPS Pull), and from then on only the
holder of that Transaction UID may update it (N-SET) or move it to COMPLETED or CANCELED. Anyone
may ask for a cancellation (N-ACTION Request Cancellation): a SCHEDULED workitem is canceled at
once, an IN PROGRESS one is left to its performer, who is told. Subscribers (UPS Watch, UPS-RS
subscriptions), per workitem or global, receive events (UPS Event SOP Class): State Report,
Cancel Requested, Progress Report, Assigned.

This module is the rules and the store (the ``ups`` tables of the index), for the DIMSE side
(:mod:`archivist.dimse.ups`) and the HTTP side (UPS-RS) alike. Events are written to the
``ups_event`` table in the transaction of the change that caused them, and delivered from there
(:meth:`Workitems.due_events`), so a restart loses none, and every worker and node sees them.

The rules (PS3.4 CC.2 and Table CC.2.5-3), with the status codes of Annex CC:

- Create: Procedure Step State must be SCHEDULED (0xC309); Scheduled Procedure Step Priority
  (HIGH, MEDIUM or LOW), Procedure Step Label, Scheduled Procedure Step Start DateTime and Input
  Readiness State (READY, UNAVAILABLE or INCOMPLETE) are Type 1 (0x0120 missing, 0x0121 empty,
  0x0106 an enumerated value not allowed); a UID created already is 0x0111. What the archive
  fills in (a Worklist Label when none is given, the Type 2 attributes left out, the
  modification date and time) or drops (a Transaction UID) makes the answer 0xB300, created
  with modifications.
- Update (N-SET): unknown workitem 0xC307; COMPLETED or CANCELED 0xC300; IN PROGRESS needs the
  performer's Transaction UID (0xC301); the state, the SOP Class and Instance UIDs are not
  changed this way (0xC303 for the state, 0x0106 for the UIDs).
- Change state: SCHEDULED -> IN PROGRESS with a Transaction UID; IN PROGRESS -> COMPLETED (the
  final-state attributes present: the Performed Procedure Sequence with its start and end date
  and time, else 0xC304) or CANCELED, with the same Transaction UID (0xC301). Already IN
  PROGRESS 0xC302; back to SCHEDULED 0xC303; COMPLETED or CANCELED from SCHEDULED 0xC310;
  already COMPLETED 0xB306 / 0xC311 / 0xC300, already CANCELED 0xB304 / 0xC300.
- Request cancellation: SCHEDULED -> CANCELED (subscribers see IN PROGRESS then CANCELED);
  IN PROGRESS: the subscribers (its performer among them) get a Cancel Requested event;
  COMPLETED 0xC311; CANCELED 0xB304.

The Transaction UID is never returned (N-GET, C-FIND, UPS-RS). Nothing here logs a patient's
name or ID.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from archivist.core.attribute_set import decode as _decode
from archivist.core.attribute_set import encode as _encode
from archivist.core.attribute_set import has_value as _has_value
from archivist.core.attribute_set import label as _label
from archivist.core.attribute_set import tag_of as _tag
from archivist.core.attribute_set import text as _text
from archivist.core.dataset_query import DatasetQuery, answer
from archivist.core.uids import is_valid_uid
from archivist.errors import ArchivistError
from archivist.index.schema import ups, ups_event, ups_subscription

__all__ = [
    "CANCELED", "COMPLETED", "FILTERED_GLOBAL_SUBSCRIPTION", "GLOBAL_SUBSCRIPTION",
    "IN_PROGRESS", "SCHEDULED", "UPS_EVENT", "UPS_PULL", "UPS_PUSH", "UPS_QUERY", "UPS_WATCH",
    "PendingEvent", "UpsError", "UpsEvent", "Workitem", "Workitems",
]

UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"
UPS_QUERY = "1.2.840.10008.5.1.4.34.6.5"
#: The well-known SOP Instances of global subscriptions (PS3.4 CC.3.1).
GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5"
FILTERED_GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5.1"

SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED = "SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"
STATES = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED)
FINAL = (COMPLETED, CANCELED)

# Event Type IDs of the UPS Event SOP Class (PS3.4 Table CC.2.4-1).
STATE_REPORT, CANCEL_REQUESTED, PROGRESS_REPORT, SCP_STATUS_CHANGE, ASSIGNED = 1, 2, 3, 4, 5

# Status codes (PS3.4 CC.2).
NO_SUCH_ATTRIBUTE = 0x0105
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
INVALID_OBJECT_INSTANCE = 0x0117
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
CREATED_WITH_MODIFICATIONS = 0xB300
ALREADY_CANCELED = 0xB304
ALREADY_COMPLETED_WARNING = 0xB306
MAY_NO_LONGER_BE_UPDATED = 0xC300
WRONG_TRANSACTION_UID = 0xC301
ALREADY_IN_PROGRESS = 0xC302
ONLY_SCHEDULED_BY_CREATE = 0xC303
FINAL_STATE_NOT_MET = 0xC304
NO_SUCH_WORKITEM = 0xC307
UNKNOWN_RECEIVING_AE = 0xC308
NOT_SCHEDULED = 0xC309
NOT_IN_PROGRESS = 0xC310
ALREADY_COMPLETED = 0xC311

_PRIORITIES = ("HIGH", "MEDIUM", "LOW")
_READINESS = ("READY", "UNAVAILABLE", "INCOMPLETE")
#: Type 1 at creation (Table CC.2.5-3), besides the Procedure Step State.
_CREATE_TYPE1 = ("ScheduledProcedureStepPriority", "ProcedureStepLabel",
                 "ScheduledProcedureStepStartDateTime", "InputReadinessState")
#: Type 2 at creation: created empty when left out (with 0xB300).
_CREATE_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AdmissionID",
    "IssuerOfAdmissionIDSequence", "ReferencedRequestSequence",
    "ScheduledStationNameCodeSequence", "ScheduledStationClassCodeSequence",
    "ScheduledStationGeographicLocationCodeSequence", "ScheduledWorkitemCodeSequence",
    "InputInformationSequence", "UnifiedProcedureStepPerformedProcedureSequence",
)
#: Never changed by an update.
_FIXED = ("SOPClassUID", "SOPInstanceUID")
#: What a subscriber is told for each event type (besides what the event adds).
_ASSIGNED_KEYS = ("ScheduledStationNameCodeSequence", "ScheduledHumanPerformersSequence")
_CANCEL_KEYS = ("ReasonForCancellation", "ProcedureStepDiscontinuationReasonCodeSequence",
                "ContactURI", "ContactDisplayName")

#: The character set the attribute sets are stored in.
UTF8 = "ISO_IR 192"
#: At most this many bytes in one workitem's attribute set.
MAX_DATASET_BYTES = 4 << 20
#: Events not delivered within this time are dropped.
EVENT_KEEP = timedelta(days=1)
#: Events past EVENT_KEEP are looked for at most this often (a write: not at every poll).
EVENT_PURGE_EVERY = timedelta(minutes=1)


class UpsError(ArchivistError):
    """A request the UPS rules refuse: `status` is the DIMSE status to answer with (UPS-RS maps
    it to an HTTP status)."""

    def __init__(self, status: int, message: str, attributes: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.attributes = attributes


@dataclass
class UpsEvent:
    """One event for one subscriber."""

    aet: str
    ups_uid: str
    event_type: int
    info: Dataset


@dataclass
class PendingEvent(UpsEvent):
    """An event in the ``ups_event`` table: `pk` orders the events of one subscriber."""

    pk: int = 0
    attempts: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Workitem:
    """One stored UPS: its columns, and its attribute set (decoded when first asked for)."""

    sop_instance_uid: str
    state: str
    transaction_uid: str
    created_at: datetime
    updated_at: datetime
    calling_ae_title: str
    data: bytes

    @functools.cached_property
    def dataset(self) -> Dataset:
        """The attribute set, with the state; never the Transaction UID."""
        return _decode(self.data)

    def summary(self) -> dict[str, Any]:
        """The listing's JSON (no patient data)."""
        ds = self.dataset
        return {
            "sop_instance_uid": self.sop_instance_uid, "state": self.state,
            "priority": _text(ds, "ScheduledProcedureStepPriority") or None,
            "label": _text(ds, "ProcedureStepLabel") or None,
            "worklist_label": _text(ds, "WorklistLabel") or None,
            "input_readiness": _text(ds, "InputReadinessState") or None,
            "scheduled_start": _text(ds, "ScheduledProcedureStepStartDateTime") or None,
            "study_instance_uid": _text(ds, "StudyInstanceUID") or None,
            "calling_ae_title": self.calling_ae_title or None,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
        }














def _now() -> datetime:
    return datetime.now(UTC)


def _dicom_now() -> str:
    return datetime.now().astimezone().strftime("%Y%m%d%H%M%S")


def _checked_encoding(ds: Dataset) -> bytes:
    try:
        data = _encode(ds)
    except Exception as exc:  # noqa: BLE001 - a value pydicom cannot write is the peer's
        raise UpsError(INVALID_ATTRIBUTE_VALUE,
                       f"the attribute set cannot be encoded ({type(exc).__name__})") from None
    if len(data) > MAX_DATASET_BYTES:
        raise UpsError(PROCESSING_FAILURE,
                       f"the attribute set is over {MAX_DATASET_BYTES >> 20} MiB")
    return data


def _require_enum(ds: Dataset, keyword: str, allowed: tuple[str, ...]) -> None:
    if _text(ds, keyword) not in allowed:
        raise UpsError(INVALID_ATTRIBUTE_VALUE,
                       f"{_label(keyword)} must be one of {', '.join(allowed)}",
                       (_tag(keyword),))


#: A DT value (PS3.5 Table 6.2-1): YYYY, then MM DD HH MM SS each optional in turn, a fraction
#: of 1 to 6 digits after seconds, an optional &ZZXX offset.
_DT = re.compile(r"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?"
                 r"(?:[+-]\d{4})?")
#: Length limits of the workitem's own text attributes (LO).
_LABELS = ("ProcedureStepLabel", "WorklistLabel")


def _check_values(ds: Dataset, keywords: Any = None) -> None:
    """The date-times and labels of `ds` (the top level; only `keywords` when given) are valid
    values of their VR: 0x0106 naming the attribute otherwise (a malformed start date-time
    would match no range query, a label over 64 characters no LO reader)."""
    for elem in ds:
        keyword = elem.keyword
        if keywords is not None and keyword not in keywords:
            continue
        if elem.VR == "DT" and elem.value not in (None, ""):
            values = elem.value if isinstance(elem.value, (list, tuple)) else [elem.value]
            if not all(_DT.fullmatch(str(v).strip()) for v in values):
                raise UpsError(INVALID_ATTRIBUTE_VALUE, f"{_label(keyword)} is not a date and "
                               "time (YYYYMMDDHHMMSS)", (int(elem.tag),))
        elif keyword in _LABELS and len(_text(ds, keyword)) > 64:
            raise UpsError(INVALID_ATTRIBUTE_VALUE, f"{_label(keyword)} is over 64 characters",
                           (int(elem.tag),))


def _columns(ds: Dataset) -> dict[str, Any]:
    return {
        "priority": _text(ds, "ScheduledProcedureStepPriority")[:16] or None,
        "procedure_step_label": _text(ds, "ProcedureStepLabel")[:64] or None,
        "worklist_label": _text(ds, "WorklistLabel")[:64] or None,
        "patient_id": _text(ds, "PatientID")[:64] or None,
        "study_instance_uid": _text(ds, "StudyInstanceUID")[:64] or None,
        "scheduled_start": _text(ds, "ScheduledProcedureStepStartDateTime")[:26] or None,
    }


def _state_info(ds: Dataset) -> Dataset:
    info = Dataset()
    info.ProcedureStepState = _text(ds, "ProcedureStepState")
    info.InputReadinessState = _text(ds, "InputReadinessState")
    if info.ProcedureStepState == CANCELED:
        progress = ds.get("ProcedureStepProgressInformationSequence")
        item = progress[0] if progress else Dataset()
        for keyword in ("ReasonForCancellation",
                        "ProcedureStepDiscontinuationReasonCodeSequence"):
            if keyword in item:
                info[_tag(keyword)] = item[_tag(keyword)]
    return info


def _progress_item(ds: Dataset) -> Dataset:
    """The (only) item of the Procedure Step Progress Information Sequence, created if needed."""
    if not ds.get("ProcedureStepProgressInformationSequence"):
        ds.ProcedureStepProgressInformationSequence = Sequence([Dataset()])
    return ds.ProcedureStepProgressInformationSequence[0]


def _final_state_missing(ds: Dataset) -> str | None:
    """What a COMPLETED workitem lacks (Table CC.2.5-3, Final State Requirements), or None."""
    performed = ds.get("UnifiedProcedureStepPerformedProcedureSequence")
    if not performed:
        return ("(0074,1216) Unified Procedure Step Performed Procedure Sequence needs an item "
                "before COMPLETED")
    item = performed[0]
    for keyword in ("PerformedProcedureStepStartDateTime", "PerformedProcedureStepEndDateTime"):
        if not _has_value(item, keyword):
            return f"{_label(keyword)} (in the Performed Procedure Sequence) needed for COMPLETED"
    return None


class Workitems:
    """The UPS SOP Instances of one archive, their subscriptions and undelivered events."""

    def __init__(self, index: Any, *, default_worklist_label: str = "ARCHIVIST",
                 pn_fold: bool = True) -> None:
        self.index = index
        self.default_worklist_label = default_worklist_label
        self.pn_fold = pn_fold
        self._lock = threading.Lock()
        # pk -> (updated_at, decoded data set): find() decodes each workitem once per change.
        self._decoded: dict[int, tuple[datetime, Dataset]] = {}
        self._purged_at: datetime | None = None

    # -- create ----------------------------------------------------------------------------------

    def create(self, uid: str | None, attributes: Dataset,
               calling_aet: str = "") -> tuple[str, list[str]]:
        """Create a SCHEDULED workitem; returns its SOP Instance UID and what the archive
        changed in it (non-empty: answer 0xB300)."""
        if uid is not None and not is_valid_uid(uid):
            raise UpsError(INVALID_OBJECT_INSTANCE, "the SOP Instance UID is not a valid UID")
        _decoded_all(attributes)
        ds = Dataset()
        ds.update(attributes)
        for elem in list(ds):
            if elem.tag.group in (0x0000, 0x0002):
                del ds[elem.tag]
        ds.SpecificCharacterSet = UTF8
        changes: list[str] = []
        if "ProcedureStepState" not in ds:
            raise UpsError(MISSING_ATTRIBUTE, f"{_label('ProcedureStepState')} is missing",
                           (_tag("ProcedureStepState"),))
        if _text(ds, "ProcedureStepState") != SCHEDULED:
            raise UpsError(NOT_SCHEDULED, "The provided value of UPS State was not SCHEDULED",
                           (_tag("ProcedureStepState"),))
        for keyword in _CREATE_TYPE1:
            if keyword not in ds:
                raise UpsError(MISSING_ATTRIBUTE, f"{_label(keyword)} is missing",
                               (_tag(keyword),))
            if not _has_value(ds, keyword):
                raise UpsError(MISSING_ATTRIBUTE_VALUE, f"{_label(keyword)} has no value",
                               (_tag(keyword),))
        _require_enum(ds, "ScheduledProcedureStepPriority", _PRIORITIES)
        _require_enum(ds, "InputReadinessState", _READINESS)
        _check_values(ds)
        study = _text(ds, "StudyInstanceUID")
        if study and not is_valid_uid(study):
            raise UpsError(INVALID_ATTRIBUTE_VALUE, "(0020,000D) Study Instance UID is not a "
                           "valid UID", (_tag("StudyInstanceUID"),))
        if "TransactionUID" in ds:
            del ds.TransactionUID
            changes.append("Transaction UID dropped (set when the workitem is claimed)")
        if not _has_value(ds, "WorklistLabel"):
            ds.WorklistLabel = self.default_worklist_label
            changes.append(f"Worklist Label set to {self.default_worklist_label}")
        added = [k for k in _CREATE_TYPE2 if k not in ds]
        for keyword in added:
            setattr(ds, keyword, Sequence([]) if keyword.endswith("Sequence") else None)
        if added:
            changes.append(f"empty {', '.join(added)} added")
        given_uid = _text(ds, "SOPInstanceUID")
        if uid is None and given_uid:
            if not is_valid_uid(given_uid):
                raise UpsError(INVALID_OBJECT_INSTANCE, "(0008,0018) SOP Instance UID is not a "
                               "valid UID", (_tag("SOPInstanceUID"),))
            uid = given_uid
        uid = uid or generate_uid()
        if given_uid and given_uid != uid:
            raise UpsError(INVALID_ATTRIBUTE_VALUE, "(0008,0018) SOP Instance UID differs from "
                           "the workitem's", (_tag("SOPInstanceUID"),))
        ds.SOPClassUID = UPS_PUSH
        ds.SOPInstanceUID = uid
        ds.ScheduledProcedureStepModificationDateTime = _dicom_now()
        data = _checked_encoding(ds)
        now = _now()
        row = {"sop_instance_uid": uid, "state": SCHEDULED, "transaction_uid": None,
               "calling_ae_title": calling_aet[:16] or None, "created_at": now,
               "updated_at": now, "dataset": data, **_columns(ds)}
        try:
            with self._lock, self.index.write_transaction() as conn:
                conn.execute(insert(ups).values(row))
                events = []
                for sub in conn.execute(select(ups_subscription).where(
                        ups_subscription.c.ups_uid.is_(None))).all():
                    m = sub._mapping
                    if m["filter"] is not None and not DatasetQuery.parse(
                            _decode(bytes(m["filter"]))).matches(ds, pn_fold=self.pn_fold):
                        continue
                    conn.execute(insert(ups_subscription).values(
                        aet=m["aet"], ups_uid=uid, deletion_lock=m["deletion_lock"],
                        filter=None, created_at=now))
                    events.append(UpsEvent(m["aet"], uid, STATE_REPORT, _state_info(ds)))
                self._queue(conn, events)
        except IntegrityError:
            raise UpsError(DUPLICATE_INSTANCE, "A workitem with this UID exists already") from None
        return uid, changes

    # -- read ------------------------------------------------------------------------------------

    def get(self, uid: str) -> Workitem | None:
        with self.index.reader.connect() as conn:
            found = conn.execute(select(ups).where(ups.c.sop_instance_uid == uid)).first()
        return None if found is None else self._workitem(found)

    def find(self, identifier: Dataset, *, limit: int | None = None,
             offset: int = 0) -> Iterator[Workitem]:
        """The workitems matching the keys of `identifier` (C-FIND matching; the Transaction
        UID is never matched), oldest first.

        Raises :class:`~archivist.errors.QueryError` or ValueError for a malformed key."""
        query = DatasetQuery.parse(identifier, skip=("TransactionUID",))
        sql = select(ups)
        state = next((c for c in query.keys
                      if c.keyword == "ProcedureStepState" and c.op == "single"), None)
        if state is not None:
            sql = sql.where(ups.c.state == state.values[0])
        uid = next((c for c in query.keys
                    if c.keyword == "SOPInstanceUID" and c.op == "single"), None)
        if uid is not None:
            sql = sql.where(ups.c.sop_instance_uid == uid.values[0])
        with self.index.reader.connect() as conn:
            keys = conn.execute(sql.order_by(ups.c.pk)).all()
        skipped = 0
        given = 0
        for row in keys:
            if limit is not None and given >= limit:
                return
            item = self._cached(row)
            if not query.matches(item.dataset, pn_fold=self.pn_fold):
                continue
            if skipped < offset:
                skipped += 1
                continue
            given += 1
            yield item

    def recent(self, *, state: str | None = None, limit: int = 100,
             offset: int = 0) -> list[Workitem]:
        """Newest update first."""
        sql = select(ups)
        if state:
            sql = sql.where(ups.c.state == state)
        sql = sql.order_by(ups.c.updated_at.desc(), ups.c.pk.desc()).limit(limit).offset(offset)
        with self.index.reader.connect() as conn:
            return [self._workitem(row) for row in conn.execute(sql).all()]

    @staticmethod
    def answer(identifier: Dataset, item: Workitem) -> Dataset:
        """A C-FIND answer: the keys of `identifier` with the workitem's values."""
        return answer(identifier, item.dataset, leave_out=("TransactionUID",))

    # -- update ----------------------------------------------------------------------------------

    def set(self, uid: str, modifications: Dataset,
            transaction_uid: str | None = None) -> Workitem:
        """Apply an N-SET's Modification List (or UPS-RS update). The Transaction UID is taken
        from `transaction_uid`, else from the modifications."""
        given = transaction_uid or _text(modifications, "TransactionUID")
        with self._lock, self.index.write_transaction() as conn:
            row = self._locked(conn, uid)
            item = self._workitem(row)
            if item.state in FINAL:
                raise UpsError(MAY_NO_LONGER_BE_UPDATED, f"The UPS is {item.state} and may no "
                               "longer be updated")
            if item.state == IN_PROGRESS and given != item.transaction_uid:
                raise UpsError(WRONG_TRANSACTION_UID, "The correct Transaction UID was not "
                               "provided" if given else "IN PROGRESS: the Transaction UID of its "
                               "performer is needed", (_tag("TransactionUID"),))
            ds = item.dataset
            if "ProcedureStepState" in modifications and (
                    _text(modifications, "ProcedureStepState") != item.state):
                raise UpsError(ONLY_SCHEDULED_BY_CREATE, "(0074,1000) Procedure Step State is "
                               "set by Change State, not by an update", (_tag("ProcedureStepState"),))
            for keyword in _FIXED:
                if keyword in modifications and _text(modifications, keyword) != _text(ds,
                                                                                      keyword):
                    raise UpsError(INVALID_ATTRIBUTE_VALUE, f"{_label(keyword)} may not change",
                                   (_tag(keyword),))
            _decoded_all(modifications)
            before = {k: _encode_one(ds, k) for k in (*_ASSIGNED_KEYS, "InputReadinessState",
                                                      "ProcedureStepProgressInformationSequence")}
            for elem in modifications:
                if elem.tag.group in (0x0000, 0x0002) or elem.keyword in (
                        "TransactionUID", "ProcedureStepState", "SpecificCharacterSet"):
                    continue
                ds[elem.tag] = elem
            if "ScheduledProcedureStepPriority" in modifications:
                _require_enum(ds, "ScheduledProcedureStepPriority", _PRIORITIES)
            if "InputReadinessState" in modifications:
                _require_enum(ds, "InputReadinessState", _READINESS)
            _check_values(ds, {elem.keyword for elem in modifications})
            ds.ScheduledProcedureStepModificationDateTime = _dicom_now()
            data = _checked_encoding(ds)
            events: list[tuple[int, Dataset]] = []
            if before["ProcedureStepProgressInformationSequence"] != _encode_one(
                    ds, "ProcedureStepProgressInformationSequence"):
                info = Dataset()
                info.ProcedureStepState = item.state
                info.ProcedureStepProgressInformationSequence = (
                    ds.ProcedureStepProgressInformationSequence)
                events.append((PROGRESS_REPORT, info))
            if any(before[k] != _encode_one(ds, k) for k in _ASSIGNED_KEYS):
                info = Dataset()
                for keyword in _ASSIGNED_KEYS:
                    if keyword in ds:
                        info[_tag(keyword)] = ds[_tag(keyword)]
                info.InputReadinessState = _text(ds, "InputReadinessState")
                events.append((ASSIGNED, info))
            if before["InputReadinessState"] != _encode_one(ds, "InputReadinessState"):
                events.append((STATE_REPORT, _state_info(ds)))
            now = _now()
            conn.execute(update(ups).where(ups.c.pk == row._mapping["pk"]).values(
                updated_at=now, dataset=data, **_columns(ds)))
            self._notify(conn, uid, events)
        return Workitem(uid, item.state, item.transaction_uid, item.created_at, now,
                        item.calling_ae_title, data)

    def change_state(self, uid: str, state: str, transaction_uid: str) -> tuple[Workitem, int]:
        """N-ACTION Change State (UPS-RS ``PUT .../state``); returns the workitem and the status
        (0, or a warning when it already was in that final state)."""
        state = (state or "").strip()
        if state not in STATES:
            raise UpsError(INVALID_ATTRIBUTE_VALUE, "(0074,1000) Procedure Step State must be "
                           "IN PROGRESS, COMPLETED or CANCELED", (_tag("ProcedureStepState"),))
        transaction_uid = (transaction_uid or "").strip()
        with self._lock, self.index.write_transaction() as conn:
            row = self._locked(conn, uid)
            item = self._workitem(row)
            current = item.state
            if state == SCHEDULED:
                raise UpsError(ONLY_SCHEDULED_BY_CREATE, "The UPS may only become SCHEDULED "
                               "when it is created")
            if current == COMPLETED:
                if state == COMPLETED:
                    return item, ALREADY_COMPLETED_WARNING
                if state == CANCELED:
                    raise UpsError(ALREADY_COMPLETED, "The UPS is already COMPLETED")
                raise UpsError(MAY_NO_LONGER_BE_UPDATED, "The UPS is COMPLETED and may no "
                               "longer be updated")
            if current == CANCELED:
                if state == CANCELED:
                    return item, ALREADY_CANCELED
                raise UpsError(MAY_NO_LONGER_BE_UPDATED, "The UPS is CANCELED and may no longer "
                               "be updated")
            if not transaction_uid:
                raise UpsError(WRONG_TRANSACTION_UID, "(0008,1195) Transaction UID is needed to "
                               "change the state", (_tag("TransactionUID"),))
            ds = item.dataset
            if current == SCHEDULED:
                if state != IN_PROGRESS:
                    raise UpsError(NOT_IN_PROGRESS, "The UPS is not yet IN PROGRESS: claim it "
                                   "first")
                if not is_valid_uid(transaction_uid):
                    raise UpsError(INVALID_ATTRIBUTE_VALUE, "(0008,1195) Transaction UID is not "
                                   "a valid UID", (_tag("TransactionUID"),))
                new_tuid: str | None = transaction_uid
            else:  # IN PROGRESS
                if state == IN_PROGRESS:
                    raise UpsError(ALREADY_IN_PROGRESS, "The UPS is already IN PROGRESS")
                if transaction_uid != item.transaction_uid:
                    raise UpsError(WRONG_TRANSACTION_UID, "The correct Transaction UID was not "
                                   "provided", (_tag("TransactionUID"),))
                if state == COMPLETED:
                    missing = _final_state_missing(ds)
                    if missing:
                        raise UpsError(FINAL_STATE_NOT_MET, missing)
                else:
                    progress = _progress_item(ds)
                    if not _has_value(progress, "ProcedureStepCancellationDateTime"):
                        progress.ProcedureStepCancellationDateTime = _dicom_now()
                new_tuid = item.transaction_uid
            ds.ProcedureStepState = state
            data = _checked_encoding(ds)
            now = _now()
            conn.execute(update(ups).where(ups.c.pk == row._mapping["pk"]).values(
                state=state, transaction_uid=new_tuid, updated_at=now, dataset=data))
            self._notify(conn, uid, [(STATE_REPORT, _state_info(ds))])
        return Workitem(uid, state, new_tuid or "", item.created_at, now, item.calling_ae_title,
                        data), 0

    def request_cancel(self, uid: str, info: Dataset | None = None,
                       requesting_aet: str = "") -> tuple[Workitem, int]:
        """N-ACTION Request Cancellation (UPS-RS ``POST .../cancelrequest``): a SCHEDULED
        workitem is canceled now; for one IN PROGRESS its subscribers are told. Returns the
        workitem and the status (0, or 0xB304 when it was canceled already)."""
        info = info if info is not None else Dataset()
        with self._lock, self.index.write_transaction() as conn:
            row = self._locked(conn, uid)
            item = self._workitem(row)
            if item.state == COMPLETED:
                raise UpsError(ALREADY_COMPLETED, "The UPS is already COMPLETED")
            if item.state == CANCELED:
                return item, ALREADY_CANCELED
            if item.state == IN_PROGRESS:
                event = Dataset()
                if requesting_aet:  # (an HTTP client names no AE title)
                    event.RequestingAE = requesting_aet[:16]
                for keyword in _CANCEL_KEYS:
                    if keyword in info:
                        event[_tag(keyword)] = info[_tag(keyword)]
                self._notify(conn, uid, [(CANCEL_REQUESTED, event)])
                return item, 0
            ds = item.dataset
            progress = _progress_item(ds)
            progress.ProcedureStepCancellationDateTime = _dicom_now()
            for keyword in _CANCEL_KEYS:
                if keyword in info:
                    progress[_tag(keyword)] = info[_tag(keyword)]
            ds.ProcedureStepState = IN_PROGRESS
            passing = _state_info(ds)
            ds.ProcedureStepState = CANCELED
            data = _checked_encoding(ds)
            now = _now()
            conn.execute(update(ups).where(ups.c.pk == row._mapping["pk"]).values(
                state=CANCELED, updated_at=now, dataset=data))
            # Subscribers see the states in the order the state machine allows (CC.1.1).
            self._notify(conn, uid, [(STATE_REPORT, passing), (STATE_REPORT, _state_info(ds))])
        return Workitem(uid, CANCELED, item.transaction_uid, item.created_at, now,
                        item.calling_ae_title, data), 0

    # -- subscriptions ---------------------------------------------------------------------------

    def subscribe(self, aet: str, uid: str, deletion_lock: bool = False,
                  matching: Dataset | None = None) -> None:
        """Subscribe `aet` to a workitem, or to all (`uid` the global subscription UID; with
        the filtered one, `matching` holds the keys a workitem must match). Each workitem
        subscribed to is reported at once (a State Report of its current state)."""
        aet = aet.strip()
        if not aet or len(aet) > 16:
            raise UpsError(INVALID_ATTRIBUTE_VALUE, "(0074,1234) Receiving AE must be an AE "
                           "title of 1 to 16 characters", (_tag("ReceivingAE"),))
        now = _now()
        with self._lock, self.index.write_transaction() as conn:
            if uid in (GLOBAL_SUBSCRIPTION, FILTERED_GLOBAL_SUBSCRIPTION):
                query = None
                stored_filter = None
                if uid == FILTERED_GLOBAL_SUBSCRIPTION and matching is not None and len(matching):
                    query = DatasetQuery.parse(matching, skip=("TransactionUID",))
                    stored_filter = _checked_encoding(matching)
                conn.execute(delete(ups_subscription).where(and_(
                    ups_subscription.c.aet == aet, ups_subscription.c.ups_uid.is_(None))))
                conn.execute(insert(ups_subscription).values(
                    aet=aet, ups_uid=None, deletion_lock=deletion_lock, filter=stored_filter,
                    created_at=now))
                have = set(conn.execute(select(ups_subscription.c.ups_uid).where(and_(
                    ups_subscription.c.aet == aet,
                    ups_subscription.c.ups_uid.is_not(None)))).scalars())
                events = []
                for found in conn.execute(select(ups).where(ups.c.state.in_(
                        (SCHEDULED, IN_PROGRESS))).order_by(ups.c.pk)).all():
                    item = self._workitem(found)
                    if query is not None and not query.matches(item.dataset,
                                                               pn_fold=self.pn_fold):
                        continue
                    if item.sop_instance_uid not in have:
                        conn.execute(insert(ups_subscription).values(
                            aet=aet, ups_uid=item.sop_instance_uid,
                            deletion_lock=deletion_lock, filter=None, created_at=now))
                    events.append(UpsEvent(aet, item.sop_instance_uid, STATE_REPORT,
                                           _state_info(item.dataset)))
                self._queue(conn, events)
                return
            found = conn.execute(select(ups).where(ups.c.sop_instance_uid == uid)).first()
            if found is None:
                raise UpsError(NO_SUCH_WORKITEM, "Specified SOP Instance UID does not exist or "
                               "is not a UPS Instance managed by this SCP")
            item = self._workitem(found)
            conn.execute(delete(ups_subscription).where(and_(
                ups_subscription.c.aet == aet, ups_subscription.c.ups_uid == uid)))
            conn.execute(insert(ups_subscription).values(
                aet=aet, ups_uid=uid, deletion_lock=deletion_lock, filter=None, created_at=now))
            self._queue(conn, [UpsEvent(aet, uid, STATE_REPORT, _state_info(item.dataset))])

    def unsubscribe(self, aet: str, uid: str) -> None:
        """End `aet`'s subscription to a workitem; from the global subscription UID, its global
        subscription and every one to a workitem."""
        aet = aet.strip()
        with self._lock, self.index.write_transaction() as conn:
            if uid in (GLOBAL_SUBSCRIPTION, FILTERED_GLOBAL_SUBSCRIPTION):
                conn.execute(delete(ups_subscription).where(ups_subscription.c.aet == aet))
                return
            if conn.execute(select(ups.c.pk).where(ups.c.sop_instance_uid == uid)).first() is None:
                raise UpsError(NO_SUCH_WORKITEM, "Specified SOP Instance UID does not exist or "
                               "is not a UPS Instance managed by this SCP")
            conn.execute(delete(ups_subscription).where(and_(
                ups_subscription.c.aet == aet, ups_subscription.c.ups_uid == uid)))

    def suspend_global(self, aet: str) -> None:
        """End `aet`'s global subscription, keeping those to the workitems it already had."""
        with self._lock, self.index.write_transaction() as conn:
            conn.execute(delete(ups_subscription).where(and_(
                ups_subscription.c.aet == aet.strip(), ups_subscription.c.ups_uid.is_(None))))

    def subscriptions(self, aet: str | None = None) -> list[dict[str, Any]]:
        sql = select(ups_subscription)
        if aet is not None:
            sql = sql.where(ups_subscription.c.aet == aet)
        with self.index.reader.connect() as conn:
            rows = conn.execute(sql.order_by(ups_subscription.c.pk)).all()
        return [{"aet": r._mapping["aet"], "ups_uid": r._mapping["ups_uid"],
                 "global": r._mapping["ups_uid"] is None,
                 "filtered": r._mapping["filter"] is not None,
                 "deletion_lock": bool(r._mapping["deletion_lock"])} for r in rows]

    def subscribers(self, uid: str) -> list[str]:
        with self.index.reader.connect() as conn:
            return sorted(set(conn.execute(select(ups_subscription.c.aet).where(
                ups_subscription.c.ups_uid == uid)).scalars()))

    # -- events ----------------------------------------------------------------------------------

    def due_events(self, aets: Collection[str] | None = None, *, limit: int = 100) -> list[PendingEvent]:
        """Undelivered events whose time has come, oldest first: a subscriber's due events in
        order, an event waiting for a retry holding back the later ones of its subscriber.
        Events older than :data:`EVENT_KEEP` are dropped first (looked for at most every
        :data:`EVENT_PURGE_EVERY`)."""
        now = _now()
        if self._purged_at is None or now - self._purged_at >= EVENT_PURGE_EVERY:
            self._purged_at = now
            with self.index.write_transaction() as conn:
                conn.execute(delete(ups_event).where(ups_event.c.created_at < now - EVENT_KEEP))
        with self.index.reader.connect() as conn:
            if aets is None:
                aets = list(conn.execute(select(ups_event.c.aet).distinct()).scalars())
            rows = []
            for aet in sorted(set(aets)):
                # Each subscriber's queue read from its head: one whose first event waits (a
                # subscriber that does not answer) hides no one else's behind a long queue.
                rows.extend(conn.execute(select(ups_event).where(ups_event.c.aet == aet)
                                         .order_by(ups_event.c.pk).limit(limit)).all())
        rows.sort(key=lambda row: row._mapping["pk"])
        held: set[str] = set()
        out: list[PendingEvent] = []
        for row in rows:
            m = row._mapping
            if m["aet"] in held:
                continue
            not_before = m["not_before"]
            if not_before is not None and not_before.tzinfo is None:
                not_before = not_before.replace(tzinfo=UTC)
            if not_before is not None and not_before > now:
                held.add(m["aet"])
                continue
            created = m["created_at"]
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            out.append(PendingEvent(m["aet"], m["ups_uid"], int(m["event_type"]),
                                    _decode(bytes(m["info"])), pk=int(m["pk"]),
                                    attempts=int(m["attempts"]), created_at=created))
            if len(out) >= limit:
                break
        return out

    def claim(self, pk: int, lease: float = 60.0) -> bool:
        """Take event `pk` for delivery for `lease` seconds: True for one caller only, among
        the threads, workers and nodes sharing the index (the event is due again when the
        lease runs out and neither :meth:`delivered` nor :meth:`retry_later` was called)."""
        now = _now()
        with self.index.write_transaction() as conn:
            done = conn.execute(update(ups_event).where(and_(
                ups_event.c.pk == pk,
                or_(ups_event.c.not_before.is_(None), ups_event.c.not_before <= now),
            )).values(not_before=now + timedelta(seconds=lease)))
            return bool(done.rowcount == 1)

    def delivered(self, pk: int) -> None:
        with self.index.write_transaction() as conn:
            conn.execute(delete(ups_event).where(ups_event.c.pk == pk))

    def retry_later(self, pk: int, delay: float) -> None:
        with self.index.write_transaction() as conn:
            conn.execute(update(ups_event).where(ups_event.c.pk == pk).values(
                attempts=ups_event.c.attempts + 1,
                not_before=_now() + timedelta(seconds=delay)))

    def events_of(self, aet: str, *, after: int = 0, limit: int = 100) -> list[PendingEvent]:
        """`aet`'s undelivered events after `after` (a pk), oldest first (UPS-RS delivery)."""
        sql = (select(ups_event).where(and_(ups_event.c.aet == aet, ups_event.c.pk > after))
               .order_by(ups_event.c.pk).limit(limit))
        with self.index.reader.connect() as conn:
            rows = conn.execute(sql).all()
        return [PendingEvent(r._mapping["aet"], r._mapping["ups_uid"],
                             int(r._mapping["event_type"]), _decode(bytes(r._mapping["info"])),
                             pk=int(r._mapping["pk"]), attempts=int(r._mapping["attempts"]))
                for r in rows]

    # -- helpers ---------------------------------------------------------------------------------

    def _notify(self, conn: Any, uid: str, events: list[tuple[int, Dataset]]) -> None:
        if not events:
            return
        aets = sorted(set(conn.execute(select(ups_subscription.c.aet).where(
            ups_subscription.c.ups_uid == uid)).scalars()))
        self._queue(conn, [UpsEvent(aet, uid, kind, info) for kind, info in events
                           for aet in aets])

    @staticmethod
    def _queue(conn: Any, events: list[UpsEvent]) -> None:
        if not events:
            return
        now = _now()
        conn.execute(insert(ups_event), [
            {"aet": e.aet, "ups_uid": e.ups_uid, "event_type": e.event_type,
             "info": _encode(_with_charset(e.info)), "created_at": now, "attempts": 0, "not_before": None}
            for e in events])

    def _locked(self, conn: Any, uid: str) -> Any:
        found = conn.execute(select(ups).where(ups.c.sop_instance_uid == uid)
                             .with_for_update()).first()
        if found is None:
            raise UpsError(NO_SUCH_WORKITEM, "Specified SOP Instance UID does not exist or is "
                           "not a UPS Instance managed by this SCP")
        return found

    def _cached(self, row: Any) -> Workitem:
        """The workitem of `row`, its data set decoded once per change (for matching only:
        callers must not change it)."""
        item = self._workitem(row)
        pk = int(row._mapping["pk"])
        known = self._decoded.get(pk)
        if known is not None and known[0] == item.updated_at:
            item.__dict__["dataset"] = known[1]
        else:
            if len(self._decoded) > 20_000:
                self._decoded.clear()
            self._decoded[pk] = (item.updated_at, item.dataset)
        return item

    @staticmethod
    def _workitem(row: Any) -> Workitem:
        m = row._mapping
        created, updated = m["created_at"], m["updated_at"]
        if created.tzinfo is None:  # SQLite gives the stored UTC time back naive
            created, updated = created.replace(tzinfo=UTC), updated.replace(tzinfo=UTC)
        return Workitem(sop_instance_uid=m["sop_instance_uid"], state=m["state"],
                        transaction_uid=m["transaction_uid"] or "", created_at=created,
                        updated_at=updated, calling_ae_title=m["calling_ae_title"] or "",
                        data=bytes(m["dataset"]))


def _decoded_all(ds: Dataset) -> None:
    """Every value of a request's data set decoded now, by the data set's own Specific
    Character Set, so that it can be stored in UTF-8 beside values that came in another (the
    stored attribute set is always in ISO_IR 192). Values set as text stay as they are."""
    for tag in list(ds.keys()):
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value or []:
                _decoded_all(item)


def _with_charset(info: Dataset) -> Dataset:
    """An event's attributes (values taken from the stored, UTF-8 set) labelled as such."""
    if "SpecificCharacterSet" not in info:
        info.SpecificCharacterSet = UTF8
    return info


def _encode_one(ds: Dataset, keyword: str) -> bytes | None:
    if keyword not in ds:
        return None
    one = Dataset()
    one[_tag(keyword)] = ds[_tag(keyword)]
    try:
        return _encode(one)
    except Exception:  # noqa: BLE001
        return repr(ds[_tag(keyword)].value).encode()

