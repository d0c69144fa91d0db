"""Modality Performed Procedure Steps (PS3.4 Annex F): what a modality reports it did.

A modality creates one MPPS SOP Instance with N-CREATE when it starts an acquisition (status
IN PROGRESS) and updates it with N-SET, finally to COMPLETED or DISCONTINUED, listing the series
and images it made. A RIS or an archive keeps them: dcm4chee shows them beside the study and
closes the matching worklist items; a reader checks that every image a modality says it made
has arrived. This module is the SCP's rules and its store (the ``mpps`` table of the index);
the DIMSE side is :mod:`archivist.dimse.mpps`, the HTTP side ``/api/mpps``.

The rules (PS3.4 F.7.2):

- N-CREATE: the Type 1 attributes of Table F.7.2-1 must be present (0x0120 Missing Attribute)
  and have a value (0x0121 Missing Attribute Value); the status must be IN PROGRESS (0x0106
  Invalid Attribute Value); a SOP Instance UID already created is 0x0111 Duplicate SOP Instance.
  Without an Affected SOP Instance UID the archive assigns one and returns it.
- N-SET: an unknown instance is 0x0112 No Such SOP Instance; one already COMPLETED or
  DISCONTINUED is 0x0110 ("may no longer be updated"); a status other than the three is 0x0106;
  the attributes the standard does not let N-SET change (the patient, the scheduled steps, the
  step's identity and start) may be repeated with their value but not changed (0x0106); moving to
  COMPLETED or DISCONTINUED needs the end date and time (0x0121).

Nothing here logs a patient's name or ID.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from archivist.core.attribute_set import decode as _decode
from archivist.core.attribute_set import encode as _encode
from archivist.core.attribute_set import has_value as _has_value
from archivist.core.attribute_set import label as _label
from archivist.core.attribute_set import tag_of as _tag
from archivist.core.attribute_set import text as _text
from archivist.core.uids import is_valid_uid
from archivist.errors import ArchivistError
from archivist.index.schema import instance, mpps, mpps_scheduled

__all__ = [
    "MPPS_RETRIEVE_SOP_CLASS",
    "MPPS_SOP_CLASS",
    "MppsError",
    "ProcedureStep",
    "ProcedureSteps",
]

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
MPPS_RETRIEVE_SOP_CLASS = "1.2.840.10008.3.1.2.3.4"

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
STATUSES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
FINAL = (COMPLETED, DISCONTINUED)

NO_SUCH_ATTRIBUTE = 0x0105
INVALID_ATTRIBUTE_VALUE = 0x0106
INVALID_OBJECT_INSTANCE = 0x0117
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
NO_SUCH_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121

#: Type 1 at N-CREATE (PS3.4 Table F.7.2-1): keyword -> how it is named in an Error Comment.
_CREATE_TYPE1 = (
    "ScheduledStepAttributesSequence", "PerformedStationAETitle",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepStatus", "PerformedProcedureStepID", "Modality",
)
#: What N-SET may not change (Table F.7.2-1, "N-SET: Not allowed"): repeated with the stored
#: value they are accepted (modalities often send the whole step again), changed they are not.
_SET_NOT_ALLOWED = (
    "SOPClassUID", "SOPInstanceUID", "ScheduledStepAttributesSequence", "PatientName",
    "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "ReferencedPatientSequence", "PerformedProcedureStepID", "PerformedStationAETitle",
    "PerformedStationName", "PerformedLocation", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "Modality", "StudyID",
)
#: Needed with a value once the step is COMPLETED or DISCONTINUED (F.7.2-1, "Final State").
_FINAL_TYPE1 = ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime")
#: The step's start and end, checked as dates and times (they are listed and compared).
_WHEN = (("PerformedProcedureStepStartDate", "DA"), ("PerformedProcedureStepStartTime", "TM"),
         ("PerformedProcedureStepEndDate", "DA"), ("PerformedProcedureStepEndTime", "TM"))
_TM = re.compile(r"(\d\d)(?:(\d\d)(?:(\d\d)(?:\.\d{1,6})?)?)?")


def _check_when(ds: Dataset) -> None:
    """0x0106 naming the attribute when a start or end date or time given is none (PS3.5
    6.2 DA YYYYMMDD, a real day; TM HH[MM[SS[.F]]]): 20261301 was kept and listed."""
    for keyword, vr in _WHEN:
        value = _text(ds, keyword)
        if not value:
            continue
        if vr == "DA":
            try:
                ok = len(value) == 8 and value.isdigit() and bool(
                    datetime.strptime(value, "%Y%m%d"))
            except ValueError:
                ok = False
        else:
            found = _TM.fullmatch(value)
            ok = found is not None and int(found[1]) < 24 and int(found[2] or 0) < 60 \
                and int(found[3] or 0) < 61
        if not ok:
            raise MppsError(INVALID_ATTRIBUTE_VALUE,
                            f"{_label(keyword)}: not a {'date' if vr == 'DA' else 'time'}",
                            (_tag(keyword),))

#: At most this many bytes in one step's attribute set (real ones are a few kilobytes).
MAX_DATASET_BYTES = 4 << 20


class MppsError(ArchivistError):
    """A request the MPPS rules refuse: `status` is the DIMSE status to answer with."""

    def __init__(self, status: int, message: str, attributes: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.attributes = attributes


@dataclass
class ProcedureStep:
    """One stored MPPS: its columns, and its attribute set (decoded when first asked for)."""

    sop_instance_uid: str
    status: str
    study_instance_uid: str
    accession_number: str
    modality: str
    performed_station_ae_title: str
    performed_procedure_step_id: str
    start: str
    end: str
    calling_ae_title: str
    created_at: datetime
    updated_at: datetime
    series_count: int
    image_count: int
    data: bytes

    @functools.cached_property
    def dataset(self) -> Dataset:
        return _decode(self.data)

    def summary(self) -> dict[str, Any]:
        """The listing's JSON (no patient data: the full set is in :attr:`dataset`)."""
        return {
            "sop_instance_uid": self.sop_instance_uid, "status": self.status,
            "study_instance_uid": self.study_instance_uid or None,
            "accession_number": self.accession_number or None, "modality": self.modality,
            "performed_station_ae_title": self.performed_station_ae_title,
            "performed_procedure_step_id": self.performed_procedure_step_id,
            "start": self.start or None, "end": self.end or None,
            "calling_ae_title": self.calling_ae_title or None,
            "series": self.series_count, "images": self.image_count,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
        }














def _references(ds: Dataset) -> list[tuple[str, str]]:
    """(Series Instance UID, SOP Instance UID) of every instance the step lists."""
    out = []
    for series in ds.get("PerformedSeriesSequence") or []:
        series_uid = _text(series, "SeriesInstanceUID")
        for keyword in ("ReferencedImageSequence",
                        "ReferencedNonImageCompositeSOPInstanceSequence"):
            for ref in series.get(keyword) or []:
                out.append((series_uid, _text(ref, "ReferencedSOPInstanceUID")))
    return out


def _counts(ds: Dataset) -> dict[str, int]:
    return {"series_count": len(ds.get("PerformedSeriesSequence") or []),
            "image_count": len(_references(ds))}


def _study_of(ds: Dataset) -> tuple[str, str]:
    """(Study Instance UID, Accession Number) of the first scheduled step."""
    for item in ds.get("ScheduledStepAttributesSequence") or []:
        return _text(item, "StudyInstanceUID"), _text(item, "AccessionNumber")
    return "", ""


def _now() -> datetime:
    return datetime.now(UTC)


class ProcedureSteps:
    """The MPPS SOP Instances of one archive (its index's ``mpps`` table)."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self._lock = threading.Lock()

    # -- N-CREATE --------------------------------------------------------------------------------

    def create(self, uid: str | None, attributes: Dataset, calling_aet: str = "") -> str:
        """Create a step from an N-CREATE's Attribute List; returns its SOP Instance UID."""
        if uid is not None and not is_valid_uid(uid):
            raise MppsError(INVALID_OBJECT_INSTANCE, "Affected SOP Instance UID is not a UID")
        ds = Dataset()
        ds.update(attributes)
        for keyword in _CREATE_TYPE1:
            if keyword not in ds:
                raise MppsError(MISSING_ATTRIBUTE, f"{_label(keyword)} is missing",
                                (_tag(keyword),))
            if not _has_value(ds, keyword):
                raise MppsError(MISSING_ATTRIBUTE_VALUE, f"{_label(keyword)} has no value",
                                (_tag(keyword),))
        status = _text(ds, "PerformedProcedureStepStatus")
        if status != IN_PROGRESS:
            raise MppsError(INVALID_ATTRIBUTE_VALUE,
                            "(0040,0252) Status must be IN PROGRESS at N-CREATE",
                            (_tag("PerformedProcedureStepStatus"),))
        for item in ds.ScheduledStepAttributesSequence:
            if not is_valid_uid(_text(item, "StudyInstanceUID")):
                raise MppsError(MISSING_ATTRIBUTE_VALUE if not _text(item, "StudyInstanceUID")
                                else INVALID_ATTRIBUTE_VALUE,
                                "(0040,0270) each item needs a Study Instance UID",
                                (_tag("ScheduledStepAttributesSequence"),))
        _check_when(ds)
        uid = uid or generate_uid()
        ds.SOPClassUID = MPPS_SOP_CLASS
        ds.SOPInstanceUID = uid
        data = self._checked_encoding(ds)
        study, accession = _study_of(ds)
        now = _now()
        row = {
            "sop_instance_uid": uid, "status": status, "study_instance_uid": study or None,
            "accession_number": accession[:64] or None,
            "patient_id": _text(ds, "PatientID")[:64] or None,
            "modality": _text(ds, "Modality")[:16],
            "performed_station_ae_title": _text(ds, "PerformedStationAETitle")[:16],
            "performed_procedure_step_id": _text(ds, "PerformedProcedureStepID")[:64],
            "start_date": _text(ds, "PerformedProcedureStepStartDate")[:8],
            "start_time": _text(ds, "PerformedProcedureStepStartTime")[:16],
            "end_date": _text(ds, "PerformedProcedureStepEndDate")[:8] or None,
            "end_time": _text(ds, "PerformedProcedureStepEndTime")[:16] or None,
            "calling_ae_title": calling_aet[:16] or None, **_counts(ds),
            "created_at": now, "updated_at": now, "dataset": data,
        }
        scheduled = [{"study_instance_uid": _text(item, "StudyInstanceUID"),
                      "scheduled_procedure_step_id":
                          _text(item, "ScheduledProcedureStepID")[:64] or None}
                     for item in ds.ScheduledStepAttributesSequence]
        try:
            with self._lock, self.index.write_transaction() as conn:
                pk = conn.execute(insert(mpps).values(row)).inserted_primary_key[0]
                conn.execute(insert(mpps_scheduled),
                             [{**item, "mpps_pk": pk} for item in scheduled])
        except IntegrityError:
            raise MppsError(DUPLICATE_INSTANCE,
                            "This Performed Procedure Step exists already") from None
        return uid

    # -- N-SET -----------------------------------------------------------------------------------

    def set(self, uid: str, modifications: Dataset) -> ProcedureStep:
        """Apply an N-SET's Modification List; returns the step as it is now."""
        with self._lock, self.index.write_transaction() as conn:
            found = conn.execute(select(mpps).where(mpps.c.sop_instance_uid == uid)
                                 .with_for_update()).first()
            if found is None:
                raise MppsError(NO_SUCH_INSTANCE, "no Performed Procedure Step with this UID")
            step = self._step(found)
            if step.status in FINAL:
                raise MppsError(PROCESSING_FAILURE,
                                "Performed Procedure Step object may no longer be updated")
            ds = step.dataset
            for keyword in _SET_NOT_ALLOWED:
                if keyword in modifications and (
                        keyword not in ds or modifications[keyword].value != ds[keyword].value):
                    raise MppsError(INVALID_ATTRIBUTE_VALUE,
                                    f"{_label(keyword)} may not change",
                                    (_tag(keyword),))
            for elem in modifications:
                if elem.tag.group in (0x0000, 0x0002):
                    continue
                ds[elem.tag] = elem
            status = _text(ds, "PerformedProcedureStepStatus")
            if status not in STATUSES:
                raise MppsError(INVALID_ATTRIBUTE_VALUE,
                                "(0040,0252) Status: IN PROGRESS, COMPLETED or DISCONTINUED",
                                (_tag("PerformedProcedureStepStatus"),))
            _check_when(ds)
            if status in FINAL:
                for keyword in _FINAL_TYPE1:
                    if not _has_value(ds, keyword):
                        raise MppsError(MISSING_ATTRIBUTE_VALUE,
                                        f"{_label(keyword)} needed for {status}",
                                        (_tag(keyword),))
            data = self._checked_encoding(ds)
            now = _now()
            counts = _counts(ds)
            conn.execute(update(mpps).where(mpps.c.pk == found._mapping["pk"]).values(
                status=status,
                end_date=_text(ds, "PerformedProcedureStepEndDate")[:8] or None,
                end_time=_text(ds, "PerformedProcedureStepEndTime")[:16] or None,
                updated_at=now, dataset=data, **counts))
        return replace(step, status=status, end=self._when(ds, "End"), updated_at=now,
                       data=data, series_count=counts["series_count"],
                       image_count=counts["image_count"])

    # -- reading -----------------------------------------------------------------------------

    def get(self, uid: str) -> ProcedureStep | None:
        with self.index.reader.connect() as conn:
            found = conn.execute(select(mpps).where(mpps.c.sop_instance_uid == uid)).first()
        return None if found is None else self._step(found)

    def list(self, *, study: str | None = None, status: str | None = None,
             limit: int = 100, offset: int = 0) -> list[ProcedureStep]:
        """Newest update first."""
        query = select(mpps)
        if study:
            query = query.where(mpps.c.study_instance_uid == study)
        if status:
            query = query.where(mpps.c.status == status)
        query = query.order_by(mpps.c.updated_at.desc(), mpps.c.pk.desc()).limit(limit)
        query = query.offset(offset)
        with self.index.reader.connect() as conn:
            rows = conn.execute(query).all()
        return [self._step(row) for row in rows]

    def scheduled_step_states(self, study: str) -> dict[str, str]:
        """Scheduled Procedure Step ID -> the status of the newest step performed for it, of
        the steps that name a scheduled step of `study` (for the worklist; a grouped procedure
        names several studies)."""
        query = (select(mpps_scheduled.c.scheduled_procedure_step_id, mpps.c.status)
                 .join(mpps, mpps.c.pk == mpps_scheduled.c.mpps_pk)
                 .where(mpps_scheduled.c.study_instance_uid == study)
                 .order_by(mpps.c.updated_at, mpps.c.pk))
        with self.index.reader.connect() as conn:
            rows = conn.execute(query).all()
        return {str(sps): str(status) for sps, status in rows if sps}

    def arrival(self, step: ProcedureStep) -> dict[str, Any]:
        """Which of the instances the step lists (Performed Series Sequence) the archive holds:
        ``referenced``, ``stored`` and up to 100 ``missing`` (series, SOP Instance UID)."""
        references = _references(step.dataset)
        held: set[str] = set()
        wanted = sorted({sop for _, sop in references if sop})
        with self.index.reader.connect() as conn:
            for i in range(0, len(wanted), 500):
                held.update(conn.execute(select(instance.c.sop_instance_uid).where(
                    instance.c.sop_instance_uid.in_(wanted[i:i + 500]))).scalars())
        missing = [{"series_instance_uid": series, "sop_instance_uid": sop}
                   for series, sop in references if sop not in held][:100]
        stored = sum(1 for _, sop in references if sop in held)
        return {"referenced": len(references), "stored": stored, "missing": missing}

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _checked_encoding(ds: Dataset) -> bytes:
        try:
            data = _encode(ds)
        except Exception as exc:  # noqa: BLE001 - a value pydicom cannot write is the peer's
            raise MppsError(INVALID_ATTRIBUTE_VALUE,
                            f"the attribute set cannot be encoded ({type(exc).__name__})") from None
        if len(data) > MAX_DATASET_BYTES:
            raise MppsError(PROCESSING_FAILURE,
                            f"the attribute set is over {MAX_DATASET_BYTES >> 20} MiB")
        return data

    @staticmethod
    def _when(ds: Dataset, which: str) -> str:
        date = _text(ds, f"PerformedProcedureStep{which}Date")
        time = _text(ds, f"PerformedProcedureStep{which}Time")
        return f"{date} {time}".strip()

    def _step(self, row: Any) -> ProcedureStep:
        m = row._mapping
        created, updated = m["created_at"], m["updated_at"]
        if created.tzinfo is None:  # SQLite gives the stored UTC time back naive
            created, updated = created.replace(tzinfo=UTC), updated.replace(tzinfo=UTC)
        return ProcedureStep(
            sop_instance_uid=m["sop_instance_uid"], status=m["status"],
            study_instance_uid=m["study_instance_uid"] or "",
            accession_number=m["accession_number"] or "", modality=m["modality"] or "",
            performed_station_ae_title=m["performed_station_ae_title"] or "",
            performed_procedure_step_id=m["performed_procedure_step_id"] or "",
            start=f"{m['start_date'] or ''} {m['start_time'] or ''}".strip(),
            end=f"{m['end_date'] or ''} {m['end_time'] or ''}".strip(),
            calling_ae_title=m["calling_ae_title"] or "", created_at=created, updated_at=updated,
            series_count=int(m["series_count"] or 0), image_count=int(m["image_count"] or 0),
            data=bytes(m["dataset"]))


def dicom_json(ds: Dataset) -> dict[str, Any]:
    """The attribute set in the DICOM JSON model (PS3.18 F.2), bulk values left out."""
    return json.loads(ds.to_json(bulk_data_threshold=1 << 20,
                                 bulk_data_element_handler=lambda _elem: ""))
