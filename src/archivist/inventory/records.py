"""Repository Query (PS3.4 C.6.4): Study Root C-FIND with record keys and paging.

A *record* is one row of the index at the query level (a study, a series or an instance). Its
Record Key (0008,041B) is the row's primary key, which only grows, written as::

    version (1 byte, = 1) | level (1 byte: 1 study, 2 series, 3 instance) | key (8 bytes, big endian)

so that byte order is numeric order and a key cannot be replayed at another level (10 bytes: OB
values have even length, so nothing is padded). Responses are ordered by record key; a Prior
Record Key (0008,041C) continues after the record it names, so a chain of queries returns
exactly the records one query would (C.6.4.5.3). A key is valid as long as the index exists; a
key that does not decode, names another level, or was never issued is refused with 0xA710.

Records inserted between pages appear in a later page (their keys are larger); a record whose
study was updated keeps its key. Inventory objects that the archive itself stores (kept in their
own container studies) are not records: they are non-patient objects (PS3.3 A.88).

Matching is the archive's one search (:mod:`archivist.core.matching`): indexed keys in SQL, other
keys on the attributes kept in the index. Repository keys handled here: Record Key (return only),
Prior Record Key, Maximum Number of Records (0008,0429), Study Update DateTime (0008,041F, range
matching), Removed from Operational Use (0008,0405) and Reason for Removal Code Sequence
(0008,0406).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from sqlalchemy import and_, false, func, select

from archivist.archive.search import Search
from archivist.core.levels import KEYS, MatchKind, QueryLevel
from archivist.core.matching import Constraint, Query, value_matches
from archivist.errors import QueryError
from archivist.index.repository import attrs_of
from archivist.index.schema import COLUMN_OF, TABLE_OF_LEVEL, TABLES_AT_LEVEL, instance, study
from archivist.inventory import INVENTORY_STORAGE

#: The most records one Repository Query response carries, whatever the SCU asks.
SERVER_CAP = 1000

KEY_VERSION = 1
_LEVEL_CODE = {QueryLevel.STUDY: 1, QueryLevel.SERIES: 2, QueryLevel.IMAGE: 3}

#: Keys this module answers itself; they never reach the generic search.
REPOSITORY_KEYS = frozenset({
    "RecordKey", "PriorRecordKey", "MaximumNumberOfRecords", "StudyUpdateDateTime",
    "RemovedFromOperationalUse", "ReasonForRemovalCodeSequence",
})

_INVENTORY_ONLY = f"\\{INVENTORY_STORAGE}\\"


class InvalidRecordKey(QueryError):
    """A Prior Record Key that is malformed, of another level, or never issued (0xA710)."""


def encode_record_key(level: QueryLevel, pk: int) -> bytes:
    """The Record Key (0008,041B) of the row `pk` at `level`."""
    return bytes([KEY_VERSION, _LEVEL_CODE[level]]) + int(pk).to_bytes(8, "big")


def decode_record_key(level: QueryLevel, raw: bytes) -> int:
    """The row a Record Key names.

    Raises
    ------
    InvalidRecordKey
        Wrong length or version, or a key issued at another level.
    """
    data = bytes(raw)
    if len(data) != 10 or data[0] != KEY_VERSION:
        raise InvalidRecordKey("Prior Record Key was not issued by this repository")
    if data[1] != _LEVEL_CODE.get(level):
        raise InvalidRecordKey("Prior Record Key belongs to another query level")
    return int.from_bytes(data[2:], "big")


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
    limit: int = SERVER_CAP
    return_keys: set[str] = field(default_factory=set)
    update_range: tuple[datetime | None, datetime | None] | None = None
    removed: str | None = None  # "YES" / "NO" matching, None = universal


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
        plain = Dataset()
        for elem in identifier:
            if elem.keyword not in REPOSITORY_KEYS:
                plain.add(elem)
        query = self.search.query_from_identifier(level, plain)
        req = RepositoryRequest(level=level, query=query, limit=self.cap)
        req.return_keys = {k for k in REPOSITORY_KEYS if k in identifier}
        prior = identifier.get("PriorRecordKey")
        if prior:
            req.prior_pk = decode_record_key(level, bytes(prior))
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
        return req

    def _max_pk(self, level: QueryLevel) -> int:
        table = TABLE_OF_LEVEL[level.value]
        with self.index.reader.connect() as conn:
            return int(conn.execute(select(func.max(table.c.pk))).scalar() or 0)

    # -- reading -------------------------------------------------------------------------------

    def rows(self, req: RepositoryRequest) -> Iterator[dict[str, Any]]:
        """Every matching index row after the prior record, in record-key order (streamed)."""
        level, query = req.level, req.query
        tables = TABLES_AT_LEVEL[level.value]
        own = tables[0]
        columns = [col.label(f"{t.name}.{col.name}") for t in tables for col in t.c]
        from_: Any = own
        for parent, child in zip(tables[1:], tables[:-1]):
            fk = {"instance": "series_pk", "series": "study_pk", "study": "patient_pk"}[child.name]
            from_ = from_.join(parent, child.c[fk] == parent.c.pk)
        allowed = {t.name for t in tables}
        conditions: list[Any] = [own.c.pk > req.prior_pk,
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
        if req.update_range is not None:
            low, high = req.update_range
            if low is not None:
                conditions.append(study.c.updated_at >= low)
            if high is not None:
                conditions.append(study.c.updated_at < high)
        if req.removed == "YES":
            # Nothing is removed from operational use: the archive has no deletion yet.
            conditions.append(false())
        stmt = select(*columns).select_from(from_).where(and_(*conditions)).order_by(own.c.pk)
        with self.index.reader.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=200).execute(stmt)
            for row in result:
                mapping = dict(row._mapping)
                if extra and not self._extra_match(mapping, own.name, extra, query):
                    continue
                yield mapping

    @staticmethod
    def _extra_match(row: dict[str, Any], table: str, extra: list[Constraint], query: Query) -> bool:
        attrs = attrs_of(row, table)
        for c in extra:
            values = _json_values(attrs, c.keyword)
            if values is None or not any(
                value_matches(c, v, pn_fold=query.pn_case_insensitive) for v in values
            ):
                return False
        return True

    def identifier(self, req: RepositoryRequest, row: dict[str, Any]) -> Dataset:
        """One response identifier: the C-FIND keys plus the repository keys asked for."""
        ds = self.search.identifier(req.query, row)
        pk = int(row[f"{TABLE_OF_LEVEL[req.level.value].name}.pk"])
        keys = req.return_keys
        if "RecordKey" in keys:
            ds.RecordKey = encode_record_key(req.level, pk)
        if "StudyUpdateDateTime" in keys:
            ds.StudyUpdateDateTime = format_dt(row.get("study.updated_at"))
        if "RemovedFromOperationalUse" in keys:
            ds.RemovedFromOperationalUse = "NO"
        if "ReasonForRemovalCodeSequence" in keys:
            ds.ReasonForRemovalCodeSequence = []
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
        pk_col = f"{TABLE_OF_LEVEL[req.level.value].name}.pk"
        for row in self.rows(req):
            yield int(row[pk_col]), row
