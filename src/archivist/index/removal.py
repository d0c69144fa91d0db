"""Removal of studies, series and instances from the index, leaving tombstones (Supplement 223).

A removal is one write transaction: the instance rows go (with their coded concepts and
validation findings), a series or study left without instances goes with them, a patient left
without studies too; the aggregates of what remains (counts, Modalities in Study, SOP Classes in
Study, Study Update DateTime, change sequence) are updated, one change row is written per
removed record, and one **tombstone** per removed record keeps what Repository Query needs to
return it as Removed from Operational Use (0008,0405) with its Reason for Removal Code Sequence
(0008,0406) (PS3.4 C.6.4, PS3.17 YYYY.2.3): the level, the UIDs, the removal time, the reason
(CID 7031), the row's primary key (its Record Key) and the index row itself as a search returns
it. Tombstones stay until :func:`purge`; storing a removed UID again clears its tombstone (a
trigger of revision 0004).

The blobs are not touched here: the caller deletes them once the transaction has committed
(:mod:`archivist.archive.delete`).

Record keys. A SQLite row id can be given again once the row with the largest id is deleted,
so a new record may come to share a primary key with a tombstone. Records are therefore ordered
by ``(pk, generation)``: a tombstone keeps the generation its row had, a live row's generation
is the number of tombstones at its key; :func:`purge` keeps the tombstones of a key that a live
row uses, so a live record's generation never changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from archivist.errors import IndexError_, NotFound, QueryError
from archivist.index.repository import Index
from archivist.index.schema import (
    TABLE_OF_LEVEL,
    TABLES_AT_LEVEL,
    change,
    instance,
    instance_code,
    patient,
    series,
    study,
    tombstone,
    validation_finding,
)

_CHUNK = 500


@dataclass(frozen=True)
class Reason:
    """A Reason for Removal from Operational Use (PS3.16 CID 7031)."""

    value: str
    scheme: str
    meaning: str


#: CID 7031 "Reason for Removal from Operational Use", by a short name for the CLI and the API.
REASONS: dict[str, Reason] = {
    "quality": Reason("113001", "DCM", "Rejected for Quality Reasons"),
    "safety": Reason("113037", "DCM", "Rejected for Patient Safety Reasons"),
    "worklist": Reason("113038", "DCM", "Incorrect Modality Worklist Entry"),
    "retention": Reason("113039", "DCM", "Data Retention Policy Expired"),
    "qc": Reason("113680", "DCM", "Quality Control Intent"),
    "inaccessible": Reason("130752", "DCM", "Data Not Accessible from Storage"),
    "kos": Reason("130753", "DCM", "Processed Key Object Selection"),
    "replaced": Reason("130754", "DCM", "Replaced by Alternate Representation"),
}
#: What an administrator's delete records when no reason is given (as dcm4chee's default
#: rejection, "Rejected for Quality Reasons").
DEFAULT_REASON = REASONS["quality"]


def reason_of(name: str | None) -> Reason:
    """The reason a short name (or a CID 7031 code value) stands for.

    Raises
    ------
    QueryError
        Not a CID 7031 reason.
    """
    if not name:
        return DEFAULT_REASON
    key = name.strip().lower()
    if key in REASONS:
        return REASONS[key]
    for reason in REASONS.values():
        if reason.value == key:
            return reason
    raise QueryError(f"unknown reason {name!r}: use one of {', '.join(REASONS)}")


@dataclass
class Removal:
    """What one removal took out of the index."""

    level: str
    study_instance_uid: str
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    reason: Reason = DEFAULT_REASON
    studies: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    size: int = 0
    storage_keys: list[str] = field(default_factory=list)
    change_seq: int = 0
    removed_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "StudyInstanceUID": self.study_instance_uid,
            "SeriesInstanceUID": self.series_instance_uid,
            "SOPInstanceUID": self.sop_instance_uid,
            "reason": {"CodeValue": self.reason.value,
                       "CodingSchemeDesignator": self.reason.scheme,
                       "CodeMeaning": self.reason.meaning},
            "removed": {"studies": len(self.studies), "series": len(self.series),
                        "instances": len(self.instances), "bytes": self.size},
            "removed_series": self.series,
            "removed_studies": self.studies,
            "change_seq": self.change_seq,
            "removed_at": self.removed_at.isoformat() if self.removed_at else None,
        }


def _columns(level: str) -> list[Any]:
    return [col.label(f"{t.name}.{col.name}") for t in TABLES_AT_LEVEL[level] for col in t.c]


def _from(level: str) -> Any:
    tables = TABLES_AT_LEVEL[level]
    from_: Any = tables[0]
    for parent, child in zip(tables[1:], tables[:-1]):
        fk = {"instance": "series_pk", "series": "study_pk", "study": "patient_pk"}[child.name]
        from_ = from_.join(parent, child.c[fk] == parent.c.pk)
    return from_


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def encode_row(row: Mapping[str, Any]) -> str:
    """An index row (``table.column`` -> value) as the JSON a tombstone keeps."""
    return json.dumps(dict(row), default=_json_default, separators=(",", ":"))


def decode_row(text: str) -> dict[str, Any]:
    """A tombstone's row, with its times as datetimes again (naive values are UTC)."""
    row: dict[str, Any] = json.loads(text)
    for key in ("study.updated_at", "instance.received_at"):
        value = row.get(key)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            row[key] = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return row


def _chunks(values: list[int]) -> Iterable[list[int]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i:i + _CHUNK]


def _generations(conn: Any, level: str, pks: list[int]) -> dict[int, int]:
    """Tombstones already at each of `pks` (the generation the live rows there have)."""
    out: dict[int, int] = {}
    for chunk in _chunks(pks):
        for pk, n in conn.execute(
            select(tombstone.c.record_pk, func.count())
            .where(tombstone.c.level == level, tombstone.c.record_pk.in_(chunk))
            .group_by(tombstone.c.record_pk)
        ):
            out[int(pk)] = int(n)
    return out


def _index_failed(exc: SQLAlchemyError, what: str) -> IndexError_:
    """The error a removal or a purge raises when the database refused the transaction (for
    instance locked by another program for longer than the busy timeout): nothing changed."""
    cause = getattr(exc, "orig", None) or exc
    return IndexError_(f"the index could not be written ({cause}); nothing was {what}, "
                       "try again")


def remove(index: Index, *, study_uid: str, series_uid: str | None = None,
           sop_uid: str | None = None, reason: Reason = DEFAULT_REASON) -> Removal:
    """Remove a study, a series of it, or an instance of it, in one transaction.

    Parameters
    ----------
    study_uid, series_uid, sop_uid
        The study; with `series_uid` one series of it; with `sop_uid` one instance of it (of
        that series, when `series_uid` is given too).
    reason
        Recorded in each tombstone (Reason for Removal Code Sequence, CID 7031).

    Returns
    -------
    Removal
        The removed UIDs, their size, and the storage keys whose blobs may now be deleted.

    Raises
    ------
    NotFound
        The study, series or instance is not in the archive (nothing changed).
    IndexError_
        The database failed (nothing changed).
    """
    try:
        return _remove(index, study_uid, series_uid, sop_uid, reason)
    except SQLAlchemyError as exc:
        raise _index_failed(exc, "deleted") from exc


def _remove(index: Index, study_uid: str, series_uid: str | None, sop_uid: str | None,
            reason: Reason) -> Removal:
    level = "IMAGE" if sop_uid else ("SERIES" if series_uid else "STUDY")
    result = Removal(level, study_uid, series_uid, sop_uid, reason)
    with index.write_transaction() as conn:
        # Stamped once the write lock is held (see Index.add_instances): removal times, change
        # rows and Study Update DateTimes follow the order of the commits.
        now = datetime.now(UTC)
        result.removed_at = now
        where = [study.c.study_instance_uid == study_uid]
        if series_uid:
            where.append(series.c.series_instance_uid == series_uid)
        if sop_uid:
            where.append(instance.c.sop_instance_uid == sop_uid)
        inst_rows = [dict(r._mapping) for r in conn.execute(
            select(*_columns("IMAGE")).select_from(_from("IMAGE")).where(and_(*where))
            .order_by(instance.c.pk))]
        series_where = [study.c.study_instance_uid == study_uid]
        if series_uid:
            series_where.append(series.c.series_instance_uid == series_uid)
        elif sop_uid:
            series_where.append(series.c.pk.in_({r["instance.series_pk"] for r in inst_rows}))
        series_rows = [dict(r._mapping) for r in conn.execute(
            select(*_columns("SERIES")).select_from(_from("SERIES"))
            .where(and_(*series_where)).order_by(series.c.pk))]
        study_row = conn.execute(select(*_columns("STUDY")).select_from(_from("STUDY"))
                                 .where(study.c.study_instance_uid == study_uid)).first()
        if study_row is None:
            raise NotFound("no such study in this archive")
        if series_uid and not series_rows:
            raise NotFound("no such series in this study")
        if sop_uid and not inst_rows:
            raise NotFound("no such instance in this study" + (" and series" if series_uid
                                                                else ""))
        srow = dict(study_row._mapping)
        study_pk = int(srow["study.pk"])
        patient_pk = int(srow["study.patient_pk"])

        # Which series and whether the study empty out.
        removed_per_series: dict[int, int] = {}
        for r in inst_rows:
            removed_per_series[int(r["instance.series_pk"])] = \
                removed_per_series.get(int(r["instance.series_pk"]), 0) + 1
        gone_series = [r for r in series_rows
                       if removed_per_series.get(int(r["series.pk"]), 0)
                       >= int(r["series.number_of_series_related_instances"] or 0)]
        remaining_series = int(conn.execute(
            select(func.count()).select_from(series).where(series.c.study_pk == study_pk)
        ).scalar_one()) - len(gone_series)
        study_gone = remaining_series <= 0

        def change_row(kind: str, lvl: str, se: str | None, sop: str | None) -> int:
            return int(conn.execute(insert(change).values(
                kind=kind, level=lvl, study_instance_uid=study_uid, series_instance_uid=se,
                sop_instance_uid=sop, at=now)).inserted_primary_key[0])  # type: ignore[index]

        def bury(lvl: str, rows: list[dict[str, Any]]) -> None:
            own = TABLE_OF_LEVEL[lvl].name
            gens = _generations(conn, lvl, [int(r[f"{own}.pk"]) for r in rows])
            values = []
            for r in rows:
                se = r.get("series.series_instance_uid")
                sop = r.get("instance.sop_instance_uid")
                seq = change_row("removed", lvl, se, sop)
                result.change_seq = seq
                kept = dict(r)
                kept["study.updated_at"] = now  # the removal updated the study
                pk = int(r[f"{own}.pk"])
                values.append({
                    "level": lvl, "record_pk": pk, "generation": gens.get(pk, 0),
                    "study_instance_uid": study_uid, "series_instance_uid": se,
                    "sop_instance_uid": sop, "removed_at": now, "reason_value": reason.value,
                    "reason_scheme": reason.scheme, "reason_meaning": reason.meaning,
                    "change_seq": seq, "row": encode_row(kept),
                })
            if values:
                conn.execute(insert(tombstone), values)

        bury("IMAGE", inst_rows)
        bury("SERIES", gone_series)
        if study_gone:
            bury("STUDY", [srow])
        seq = result.change_seq or change_row("removed", level, series_uid, sop_uid)
        result.change_seq = seq

        # Index rows, children first.
        inst_pks = [int(r["instance.pk"]) for r in inst_rows]
        for chunk in _chunks(inst_pks):
            conn.execute(delete(instance_code).where(instance_code.c.instance_pk.in_(chunk)))
            conn.execute(delete(validation_finding)
                         .where(validation_finding.c.instance_pk.in_(chunk)))
            conn.execute(delete(instance).where(instance.c.pk.in_(chunk)))
        gone_pks = {int(r["series.pk"]) for r in gone_series}
        for pk, n in removed_per_series.items():
            if pk not in gone_pks:
                conn.execute(update(series).where(series.c.pk == pk).values(
                    number_of_series_related_instances=
                    series.c.number_of_series_related_instances - n, change_seq=seq))
        for chunk in _chunks(sorted(gone_pks)):
            conn.execute(delete(instance_code).where(instance_code.c.series_pk.in_(chunk)))
            conn.execute(delete(series).where(series.c.pk.in_(chunk)))
        if study_gone:
            conn.execute(delete(instance_code).where(instance_code.c.study_pk == study_pk))
            conn.execute(delete(study).where(study.c.pk == study_pk))
        else:
            mods = conn.execute(select(series.c.modality).distinct()
                                .where(series.c.study_pk == study_pk)).scalars().all()
            classes = conn.execute(
                select(instance.c.sop_class_uid).distinct()
                .select_from(instance.join(series, instance.c.series_pk == series.c.pk))
                .where(series.c.study_pk == study_pk)).scalars().all()
            conn.execute(update(study).where(study.c.pk == study_pk).values(
                number_of_study_related_instances=
                study.c.number_of_study_related_instances - len(inst_rows),
                number_of_study_related_series=
                study.c.number_of_study_related_series - len(gone_series),
                modalities_in_study="\\" + "".join(f"{m}\\" for m in sorted(
                    m for m in mods if m)),
                sop_classes_in_study="\\" + "".join(f"{c}\\" for c in sorted(classes)),
                updated_at=now, change_seq=seq))
        left = conn.execute(select(func.count()).select_from(study)
                            .where(study.c.patient_pk == patient_pk)).scalar_one()
        if int(left) == 0:
            conn.execute(delete(patient).where(patient.c.pk == patient_pk))
        else:
            conn.execute(update(patient).where(patient.c.pk == patient_pk).values(
                number_of_patient_related_instances=
                patient.c.number_of_patient_related_instances - len(inst_rows),
                number_of_patient_related_series=
                patient.c.number_of_patient_related_series - len(gone_series),
                number_of_patient_related_studies=
                patient.c.number_of_patient_related_studies - (1 if study_gone else 0)))

    result.instances = [str(r["instance.sop_instance_uid"]) for r in inst_rows]
    result.series = [str(r["series.series_instance_uid"]) for r in gone_series]
    result.studies = [study_uid] if study_gone else []
    result.size = sum(int(r["instance.size"]) for r in inst_rows)
    result.storage_keys = [str(r["instance.storage_key"]) for r in inst_rows]
    return result


def purge(index: Index, *, older_than: timedelta | None = None) -> int:
    """Delete tombstones (all, or those removed more than `older_than` ago).

    Tombstones at a record key that a live row now uses are kept (they order that row).

    Returns
    -------
    int
        How many tombstones were deleted.

    Raises
    ------
    QueryError
        A negative `older_than` (it would purge tombstones of removals yet to come).
    IndexError_
        The database failed (nothing was purged).
    """
    if older_than is not None and older_than < timedelta(0):
        raise QueryError("the age of the tombstones to purge cannot be negative")
    deleted = 0
    try:
        with index.write_transaction() as conn:
            for lvl, table in (("STUDY", study), ("SERIES", series), ("IMAGE", instance)):
                live = select(table.c.pk).where(table.c.pk == tombstone.c.record_pk).exists()
                where: list[Any] = [tombstone.c.level == lvl, ~live]
                if older_than is not None:
                    where.append(tombstone.c.removed_at
                                 < datetime.now(UTC) - older_than)
                deleted += int(conn.execute(delete(tombstone).where(and_(*where))).rowcount
                               or 0)
    except SQLAlchemyError as exc:
        raise _index_failed(exc, "purged") from exc
    return deleted


def count(index: Index) -> int:
    """Tombstones kept."""
    with index.reader.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tombstone)).scalar_one())


def tombstones_of(index: Index, *, study_uid: str | None = None) -> list[dict[str, Any]]:
    """The tombstones (of one study, or all), oldest first, without their rows."""
    cols = [c for c in tombstone.c if c.name != "row"]
    stmt = select(*cols).order_by(tombstone.c.pk)
    if study_uid:
        stmt = stmt.where(tombstone.c.study_instance_uid == study_uid)
    with index.reader.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]
