"""Repository Query (PS3.4 C.6.4): Study Root C-FIND with record keys and paging.

A *record* is one row of the index at the query level (a study, a series or an instance), or
the tombstone such a row left when it was deleted. Its Record Key (0008,041B) is the row's
primary key, which only grows, with a generation that orders the rare records that came to
share a primary key (a SQLite row id is given again when the newest row is deleted; see
:mod:`archivist.index.removal`), written as::

    version (1 byte, = 2) | level (1 byte: 1 study, 2 series, 3 instance) | key (8 bytes,
    big endian) | generation (2 bytes, big endian)

so that byte order is record order and a key cannot be replayed at another level (12 bytes: OB
values have even length, so nothing is padded). Keys of version 1 (10 bytes, no generation),
issued before deletion existed, are still accepted. Responses are ordered by record key; a Prior
Record Key (0008,041C) continues after the record it names, so a chain of queries returns
exactly the records one query would (C.6.4.5.3). A key is valid as long as the index exists (a
key naming a purged tombstone still continues after it); a key that does not decode, names
another level, or was never issued is refused with 0xA710.

Records inserted between pages appear in a later page (their keys are larger); a record whose
study was updated keeps its key; a record deleted between pages keeps its key too, as a
tombstone. Inventory objects that the archive itself stores (kept in their own container
studies) are not records: they are non-patient objects (PS3.3 A.88).

Removed records. A deleted study, series or instance is returned with Removed from Operational
Use (0008,0405) ``YES`` and its Reason for Removal Code Sequence (0008,0406) (CID 7031) when
the identifier asks for Removed from Operational Use (universal matching or ``YES``), until its
tombstone is purged; an SCU that does not ask for the key never sees removed records. Removed
records match on the values they had when removed; sequence matching on codes does not match
them (their coded concepts are not kept).

Matching is the archive's one search (:mod:`archivist.core.matching`): indexed keys in SQL, other
keys on the attributes kept in the index. Repository keys handled here: Record Key (return only),
Prior Record Key, Maximum Number of Records (0008,0429), Study Update DateTime (0008,041F, range
matching), Removed from Operational Use (0008,0405) and Reason for Removal Code Sequence
(0008,0406).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from sqlalchemy import and_, func, select

from archivist.archive.search import Search
from archivist.core.levels import KEYS, MatchKind, QueryLevel
from archivist.core.matching import Constraint, Query, value_matches
from archivist.errors import QueryError
from archivist.index.removal import decode_row
from archivist.index.repository import attrs_of
from archivist.index.schema import (
    COLUMN_OF,
    TABLE_OF_LEVEL,
    TABLES_AT_LEVEL,
    instance,
    study,
    tombstone,
)
from archivist.inventory import INVENTORY_STORAGE

#: The UID keys a tombstone keeps in an indexed column of its own: keyword -> (the table whose
#: column the key names, the tombstone's column). A request's single-value or list match on one
#: of them narrows the tombstones read before their kept rows are decoded and matched.
_TOMBSTONE_UID_COLUMNS = {
    "StudyInstanceUID": ("study", tombstone.c.study_instance_uid),
    "SeriesInstanceUID": ("series", tombstone.c.series_instance_uid),
    "SOPInstanceUID": ("instance", tombstone.c.sop_instance_uid),
}

#: The most records one Repository Query response carries, whatever the SCU asks.
SERVER_CAP = 1000

KEY_VERSION = 2
_KEY_VERSION_1 = 1
#: The row key a record's tombstone row carries (``(code value, scheme, meaning)``).
REMOVED = "tombstone.reason"
#: The tombstone's own primary key, in a removed record's row.
TOMBSTONE = "tombstone.pk"
#: ``(pk, generation)`` of each record row.
RECORD = "record"
_LEVEL_CODE = {QueryLevel.STUDY: 1, QueryLevel.SERIES: 2, QueryLevel.IMAGE: 3}

#: Keys this module answers itself; they never reach the generic search.
REPOSITORY_KEYS = frozenset({
    "RecordKey", "PriorRecordKey", "MaximumNumberOfRecords", "StudyUpdateDateTime",
    "RemovedFromOperationalUse", "ReasonForRemovalCodeSequence",
})

_INVENTORY_ONLY = f"\\{INVENTORY_STORAGE}\\"


class InvalidRecordKey(QueryError):
    """A Prior Record Key that is malformed, of another level, or never issued (0xA710)."""


def encode_record_key(level: QueryLevel, pk: int, generation: int = 0) -> bytes:
    """The Record Key (0008,041B) of the record ``(pk, generation)`` at `level`."""
    return (bytes([KEY_VERSION, _LEVEL_CODE[level]]) + int(pk).to_bytes(8, "big")
            + int(generation).to_bytes(2, "big"))


def decode_record_key(level: QueryLevel, raw: bytes) -> tuple[int, int]:
    """The record ``(pk, generation)`` a Record Key names (version 1 keys: generation 0).

    Raises
    ------
    InvalidRecordKey
        Wrong length or version, or a key issued at another level.
    """
    data = bytes(raw)
    if not ((len(data) == 12 and data[0] == KEY_VERSION)
            or (len(data) == 10 and data[0] == _KEY_VERSION_1)):
        raise InvalidRecordKey("Prior Record Key was not issued by this repository")
    if data[1] != _LEVEL_CODE.get(level):
        raise InvalidRecordKey("Prior Record Key belongs to another query level")
    return int.from_bytes(data[2:10], "big"), int.from_bytes(data[10:], "big")


# -- Study Update DateTime ---------------------------------------------------------------------

_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?")


def _dt_bounds(text: str) -> tuple[datetime, datetime]:
    """The [start, end) interval, in naive UTC, that a DT value of any precision covers."""
    m = _DT.fullmatch(text.strip())
    if m is None:
        raise QueryError(f"StudyUpdateDateTime: {text!r} is not a date-time (DT)")
    year, month, day, hour, minute, second, frac, offset = m.groups()
    parts = [int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
             int(second or 0)]
    micro = int((frac or ".0")[1:].ljust(6, "0"))
    try:
        start = datetime(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], micro)
    except ValueError:
        raise QueryError(f"StudyUpdateDateTime: {text!r} is not a valid date-time") from None
    if frac:
        end = start + timedelta(microseconds=10 ** (6 - len(frac) + 1))
    elif second:
        end = start + timedelta(seconds=1)
    elif minute:
        end = start + timedelta(minutes=1)
    elif hour:
        end = start + timedelta(hours=1)
    elif day:
        end = start + timedelta(days=1)
    elif month:
        end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    else:
        end = start.replace(year=start.year + 1)
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])) * sign
        start, end = start - delta, end - delta
    return start, end


def parse_update_range(value: str) -> tuple[datetime | None, datetime | None] | None:
    """Study Update DateTime matching (single value or range, PS3.4 C.2.2.2.5), as naive UTC.

    Returns ``None`` for universal matching, else ``(from, before)`` (either may be open).
    """
    text = str(value or "").strip()
    if not text:
        return None
    if _DT.fullmatch(text):
        return _dt_bounds(text)
    low, sep, high = text.partition("-")
    if not sep:
        raise QueryError(f"StudyUpdateDateTime: {text!r} is not a date-time (DT)")
    lo = _dt_bounds(low)[0] if low.strip() else None
    hi = _dt_bounds(high)[1] if high.strip() else None
    if lo is None and hi is None:
        return None
    return lo, hi


def format_dt(value: datetime | None) -> str | None:
    """A stored (UTC) time as DT with an explicit ``+0000`` offset."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y%m%d%H%M%S.%f") + "+0000"


# -- requests ----------------------------------------------------------------------------------


@dataclass
class RepositoryRequest:
    """A parsed Repository Query identifier."""

    level: QueryLevel
    query: Query
    prior_pk: int = 0
    prior_generation: int = -1  # -1: records at prior_pk are all after it (no prior key)
    limit: int = SERVER_CAP
    return_keys: set[str] = field(default_factory=set)
    update_range: tuple[datetime | None, datetime | None] | None = None
    removed: str | None = None  # "YES" / "NO" matching, None = universal
    #: Removed records are returned only when the identifier asks for Removed from
    #: Operational Use (an SCU that does not ask could not tell them from the others).
    include_removed: bool = False


def reason_item(value: str, scheme: str, meaning: str) -> Dataset:
    """One Reason for Removal Code Sequence item (CID 7031)."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


class LimitReached:
    """Sentinel yielded after the last record of a page cut short by the response limit."""


LIMIT_REACHED = LimitReached()


def _json_values(attrs: dict[str, Any], keyword: str) -> list[Any] | None:
    tag = tag_for_keyword(keyword)
    item = attrs.get(f"{tag:08X}") if tag is not None else None
    if not isinstance(item, dict) or not isinstance(item.get("Value"), list):
        return None
    return [v.get("Alphabetic", "") if isinstance(v, dict) else v for v in item["Value"]]


class RepositoryQuery:
    """Record-key paging over the archive's one search.

    Parameters
    ----------
    search
        The archive's search (its index is read with the same matching rules as C-FIND).
    cap
        The server's limit on records per response (the SCU may ask for fewer).
    """

    def __init__(self, search: Search, *, cap: int = SERVER_CAP) -> None:
        self.search = search
        self.index = search.index
        self.cap = max(1, int(cap))

    # -- parsing -------------------------------------------------------------------------------

    def parse(self, identifier: Dataset) -> RepositoryRequest:
        """Read a Repository Query identifier (PS3.4 C.6.4.1).

        Raises
        ------
        QueryError
            Level missing, PATIENT level, or a malformed key.
        InvalidRecordKey
            The Prior Record Key is not one this repository issued.
        """
        try:
            level = QueryLevel.parse(str(identifier.get("QueryRetrieveLevel", "") or ""))
        except ValueError:
            raise QueryError("Query/Retrieve Level missing or unknown") from None
        if level is QueryLevel.PATIENT:
            raise QueryError("Repository Query uses the Study Root model (no PATIENT level)")
        for tag in list(identifier.keys()):
            # A key whose value cannot be read as its VR is named (QA s22: "Unable to
            # process", with no word on which key).
            try:
                if " or " in dictionary_VR(tag):
                    continue  # an ambiguous VR: query_from_identifier says what is wrong
            except KeyError:
                pass  # private, or not in the dictionary: read as it is
            try:
                identifier[tag]
            except Exception as exc:  # noqa: BLE001 - pydicom's conversions fail in many ways
                name = keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
                raise QueryError(f"{name} cannot be read ({type(exc).__name__})") from None
        plain = Dataset()
        for elem in identifier:
            if elem.keyword not in REPOSITORY_KEYS:
                plain.add(elem)
        query = self.search.query_from_identifier(level, plain)
        req = RepositoryRequest(level=level, query=query, limit=self.cap)
        req.return_keys = {k for k in REPOSITORY_KEYS if k in identifier}
        prior = identifier.get("PriorRecordKey")
        if prior:
            req.prior_pk, req.prior_generation = decode_record_key(level, bytes(prior))
            if req.prior_pk > self._max_pk(level):
                raise InvalidRecordKey("Prior Record Key was never issued")
        max_records = identifier.get("MaximumNumberOfRecords")
        if max_records not in (None, ""):
            try:
                wanted = int(max_records)
            except (TypeError, ValueError):
                raise QueryError("Maximum Number of Records is not a number") from None
            if wanted > 0:
                req.limit = min(wanted, self.cap)
        if "StudyUpdateDateTime" in identifier:
            req.update_range = parse_update_range(str(identifier.StudyUpdateDateTime or ""))
        removed = str(identifier.get("RemovedFromOperationalUse", "") or "").strip().upper()
        if removed:
            if removed not in ("YES", "NO"):
                raise QueryError("Removed From Operational Use must be YES or NO")
            req.removed = removed
        req.include_removed = "RemovedFromOperationalUse" in identifier and removed != "NO"
        return req

    def _max_pk(self, level: QueryLevel) -> int:
        table = TABLE_OF_LEVEL[level.value]
        with self.index.reader.connect() as conn:
            live = int(conn.execute(select(func.max(table.c.pk))).scalar() or 0)
            removed = int(conn.execute(select(func.max(tombstone.c.record_pk))
                                       .where(tombstone.c.level == level.value)).scalar() or 0)
        return max(live, removed)

    # -- reading -------------------------------------------------------------------------------

    def rows(self, req: RepositoryRequest) -> Iterator[dict[str, Any]]:
        """Every matching record after the prior record, in record-key order (streamed).

        Live rows and (when asked for) tombstones are merged on ``(pk, generation)``; each row
        carries that pair under :data:`RECORD`, and a tombstone's row its reason under
        :data:`REMOVED`.
        """
        prior = (req.prior_pk, req.prior_generation)
        live: Iterator[dict[str, Any]] = iter(())
        removed: Iterator[dict[str, Any]] = iter(())
        if req.removed != "YES":
            live = (r for r in self._live_rows(req) if r[RECORD] > prior)
        if req.include_removed:
            removed = (r for r in self._removed_rows(req) if r[RECORD] > prior)
        yield from heapq.merge(live, removed, key=lambda r: r[RECORD])

    def _live_rows(self, req: RepositoryRequest) -> Iterator[dict[str, Any]]:
        level, query = req.level, req.query
        tables = TABLES_AT_LEVEL[level.value]
        own = tables[0]
        columns = [col.label(f"{t.name}.{col.name}") for t in tables for col in t.c]
        from_: Any = own
        for parent, child in zip(tables[1:], tables[:-1]):
            fk = {"instance": "series_pk", "series": "study_pk", "study": "patient_pk"}[child.name]
            from_ = from_.join(parent, child.c[fk] == parent.c.pk)
        allowed = {t.name for t in tables}
        conditions: list[Any] = [own.c.pk >= req.prior_pk,
                                 study.c.sop_classes_in_study != _INVENTORY_ONLY]
        if level is QueryLevel.IMAGE:
            conditions.append(instance.c.sop_class_uid != INVENTORY_STORAGE)
        extra: list[Constraint] = []
        for c in query.constraints:
            if c.keyword in COLUMN_OF:
                if COLUMN_OF[c.keyword][0].name in allowed and KEYS[c.keyword].kind is not MatchKind.COUNT:
                    conditions.append(self.index._condition(c, query.pn_case_insensitive))
            else:
                extra.append(c)
        for cc in self.search.normalise_codes(query).codes:
            conditions.append(self.index._code_condition(level.value, cc))
        if req.update_range is not None:
            low, high = req.update_range
            if low is not None:
                conditions.append(study.c.updated_at >= low)
            if high is not None:
                conditions.append(study.c.updated_at < high)
        generations = self._shared_keys(level)
        stmt = select(*columns).select_from(from_).where(and_(*conditions)).order_by(own.c.pk)
        pk_col = f"{own.name}.pk"
        with self.index.reader.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=200).execute(stmt)
            for row in result:
                mapping = dict(row._mapping)
                if extra and not self._extra_match(mapping, own.name, extra, query):
                    continue
                pk = int(mapping[pk_col])
                mapping[RECORD] = (pk, generations.get(pk, 0))
                yield mapping

    def _shared_keys(self, level: QueryLevel) -> dict[int, int]:
        """Live rows whose primary key tombstones also hold: pk -> the live row's generation."""
        own = TABLE_OF_LEVEL[level.value]
        stmt = (select(tombstone.c.record_pk, func.count())
                .select_from(tombstone.join(own, own.c.pk == tombstone.c.record_pk))
                .where(tombstone.c.level == level.value).group_by(tombstone.c.record_pk))
        with self.index.reader.connect() as conn:
            return {int(pk): int(n) for pk, n in conn.execute(stmt)}

    def _removed_rows(self, req: RepositoryRequest) -> Iterator[dict[str, Any]]:
        """Tombstones at the query level that match, as rows like the live ones."""
        level, query = req.level, req.query
        if query.codes:
            return  # their coded concepts are not kept
        own = TABLE_OF_LEVEL[level.value].name
        allowed = {t.name for t in TABLES_AT_LEVEL[level.value]}
        where = [tombstone.c.level == level.value, tombstone.c.record_pk >= req.prior_pk]
        for c in query.constraints:
            # The kept row holds the same UIDs as these columns: reading only the tombstones
            # they select keeps a per-series request (an inventory's) from decoding them all.
            uid_column = _TOMBSTONE_UID_COLUMNS.get(c.keyword)
            if uid_column is not None and uid_column[0] in allowed and c.op in ("single", "list"):
                where.append(uid_column[1].in_(c.values))
        stmt = (select(tombstone.c.pk, tombstone.c.record_pk, tombstone.c.generation,
                       tombstone.c.row,
                       tombstone.c.reason_value, tombstone.c.reason_scheme,
                       tombstone.c.reason_meaning)
                .where(*where)
                .order_by(tombstone.c.record_pk, tombstone.c.generation))
        with self.index.reader.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=200).execute(stmt)
            for t in result:
                row = decode_row(t.row)
                if row.get("study.sop_classes_in_study") == _INVENTORY_ONLY or (
                        level is QueryLevel.IMAGE
                        and row.get("instance.sop_class_uid") == INVENTORY_STORAGE):
                    continue
                if not self._row_matches(row, own, allowed, query, req):
                    continue
                row[f"{own}.pk"] = None  # the key may be a live row's now: look nothing up by it
                row[RECORD] = (int(t.record_pk), int(t.generation))
                row[REMOVED] = (t.reason_value, t.reason_scheme, t.reason_meaning)
                row[TOMBSTONE] = int(t.pk)
                yield row

    def _row_matches(self, row: dict[str, Any], own: str, allowed: set[str], query: Query,
                     req: RepositoryRequest) -> bool:
        """The SQL conditions of :meth:`_live_rows`, applied in Python to a kept row."""
        fold = query.pn_case_insensitive
        extra: list[Constraint] = []
        for c in query.constraints:
            if c.keyword not in COLUMN_OF:
                extra.append(c)
                continue
            table, column = COLUMN_OF[c.keyword]
            if table.name not in allowed or KEYS[c.keyword].kind is MatchKind.COUNT:
                continue
            value = row.get(f"{table.name}.{column}")
            if KEYS[c.keyword].kind is MatchKind.MULTI and value is not None:
                value = [v for v in str(value).split("\\") if v]
            if not value_matches(c, value, pn_fold=fold):
                return False
        if req.update_range is not None:
            updated = row.get("study.updated_at")
            if updated is None:
                return False
            naive = updated.astimezone(UTC).replace(tzinfo=None) if updated.tzinfo else updated
            low, high = req.update_range
            if (low is not None and naive < low) or (high is not None and naive >= high):
                return False
        return not extra or self._extra_match(row, own, extra, query)

    @staticmethod
    def _extra_match(row: dict[str, Any], table: str, extra: list[Constraint], query: Query) -> bool:
        attrs = attrs_of(row, table)
        for c in extra:
            values = _json_values(attrs, c.keyword)
            if c.op == "empty":  # Empty Value Matching: absent, or no value
                if values is not None and not value_matches(c, list(values)):
                    return False
                continue
            if values is None or not any(
                value_matches(c, v, pn_fold=query.pn_case_insensitive) for v in values
            ):
                return False
        return True

    def identifier(self, req: RepositoryRequest, row: dict[str, Any]) -> Dataset:
        """One response identifier: the C-FIND keys plus the repository keys asked for."""
        ds = self.search.identifier(req.query, row)
        pk, generation = row[RECORD]
        keys = req.return_keys
        reason = row.get(REMOVED)
        if "RecordKey" in keys:
            ds.RecordKey = encode_record_key(req.level, pk, generation)
        if "StudyUpdateDateTime" in keys:
            ds.StudyUpdateDateTime = format_dt(row.get("study.updated_at"))
        if "RemovedFromOperationalUse" in keys or reason is not None:
            ds.RemovedFromOperationalUse = "YES" if reason is not None else "NO"
        if "ReasonForRemovalCodeSequence" in keys or reason is not None:
            ds.ReasonForRemovalCodeSequence = [reason_item(*reason)] if reason else []
        return ds

    def page(self, req: RepositoryRequest) -> Iterator[Dataset | LimitReached]:
        """At most ``req.limit`` identifiers, then :data:`LIMIT_REACHED` if more records match."""
        for produced, row in enumerate(self.rows(req)):
            if produced >= req.limit:
                yield LIMIT_REACHED
                return
            yield self.identifier(req, row)

    def all_records(self, req: RepositoryRequest) -> Iterator[tuple[int, dict[str, Any]]]:
        """Every matching row with its record key number, without a page limit (for builders)."""
        for row in self.rows(req):
            yield int(row[RECORD][0]), row
