"""The one search: C-FIND, QIDO-RS and the CLI all call :meth:`Search.find`.

Indexed keys are matched in SQL; any other key with a value is matched against the attributes
kept in the index for that level (never by opening files). Results stream: nothing is collected
in memory first.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from archivist.core.levels import KEYS, UNIQUE_KEY, MatchKind, QueryLevel
from archivist.core.matching import Constraint, Query, build_query, value_matches
from archivist.index.repository import Index, attrs_of
from archivist.index.schema import COLUMN_OF, TABLE_OF_LEVEL, TABLES_AT_LEVEL


def _own_table(level: QueryLevel) -> str:
    return TABLE_OF_LEVEL[level.value].name


def _tables_at(level: QueryLevel) -> set[str]:
    return {t.name for t in TABLES_AT_LEVEL[level.value]}


def _json_values(attrs: Mapping[str, Any], keyword: str) -> list[Any] | None:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    item = attrs.get(f"{tag:08X}")
    if not isinstance(item, dict):
        return None
    values = item.get("Value")
    if not isinstance(values, list):
        return None
    out = []
    for v in values:
        if isinstance(v, dict):
            v = v.get("Alphabetic", "")
        out.append(v)
    return out


class Search:
    """Runs queries against the index and builds result identifiers."""

    def __init__(self, index: Index, *, pn_case_insensitive: bool = True) -> None:
        self.index = index
        self.pn_case_insensitive = pn_case_insensitive

    def query_from_identifier(self, level: QueryLevel, identifier: Dataset) -> Query:
        """Build a query from a C-FIND/C-MOVE/C-GET Identifier (PS3.4 C.4.1.1.3)."""
        items: list[tuple[str, object]] = []
        for elem in identifier:
            keyword = elem.keyword or keyword_for_tag(elem.tag)
            if not keyword:
                continue
            if elem.VR == "SQ":
                items.append((keyword, None))
                continue
            items.append((keyword, elem.value))
        return build_query(level, items, pn_case_insensitive=self.pn_case_insensitive)

    def query_from_pairs(self, level: QueryLevel, pairs: list[tuple[str, str]]) -> Query:
        return build_query(level, pairs, pn_case_insensitive=self.pn_case_insensitive)

    def rows(self, query: Query, *, limit: int = 0, offset: int = 0) -> Iterator[dict[str, Any]]:
        """Matching index rows, with the non-indexed constraints applied."""
        tables = _tables_at(query.level)
        extra: list[tuple[Constraint, str]] = []
        for c in query.constraints:
            if c.keyword in COLUMN_OF:
                continue
            extra.append((c, _own_table(query.level)))
        if not extra:
            yield from self.index.search(query, limit=limit, offset=offset)
            return
        skipped = 0
        produced = 0
        for row in self.index.search(query):
            ok = True
            for c, table in extra:
                if table not in tables:
                    continue
                values = _json_values(attrs_of(row, table), c.keyword)
                if values is None or not any(
                    value_matches(c, v, pn_fold=query.pn_case_insensitive) for v in values
                ):
                    ok = False
                    break
            if not ok:
                continue
            if skipped < offset:
                skipped += 1
                continue
            yield row
            produced += 1
            if limit and produced >= limit:
                return

    def find(self, query: Query, *, limit: int = 0, offset: int = 0) -> Iterator[Dataset]:
        """Stream the identifiers that match `query`, holding the requested return keys."""
        for row in self.rows(query, limit=limit, offset=offset):
            yield self.identifier(query, row)

    def count(self, query: Query) -> int:
        return sum(1 for _ in self.rows(query))

    def identifier(self, query: Query, row: Mapping[str, Any]) -> Dataset:
        """Build the response identifier for one row (values in Unicode; no charset set)."""
        ds = Dataset()
        ds.QueryRetrieveLevel = query.level.value
        keys = list(query.return_keys)
        if UNIQUE_KEY[query.level] not in keys:
            keys.append(UNIQUE_KEY[query.level])
        tables = _tables_at(query.level)
        for keyword in keys:
            tag = tag_for_keyword(keyword)
            if tag is None:
                continue
            vr = dictionary_VR(tag)
            value: Any = None
            if keyword in COLUMN_OF and COLUMN_OF[keyword][0].name in tables:
                table, column = COLUMN_OF[keyword]
                value = row.get(f"{table.name}.{column}")
                kind = KEYS[keyword].kind
                if kind is MatchKind.MULTI and value is not None:
                    value = [v for v in str(value).split("\\") if v] or None
                elif value is not None and vr in ("IS", "US", "UL", "SL", "SS"):
                    value = int(value)
                elif value is not None and keyword == "PatientID" and value == "":
                    value = None
            else:
                level_table = _own_table(query.level)
                attrs = attrs_of(row, level_table)
                item = attrs.get(f"{tag:08X}")
                if isinstance(item, dict) and "Value" in item:
                    try:
                        elem = DataElement.from_json(Dataset, f"{tag:08X}", item["vr"],
                                                     item["Value"], "Value")
                        ds.add(elem)
                        continue
                    except Exception:  # noqa: BLE001 - fall back to an empty value
                        value = None
            if vr == "SQ":
                ds.add_new(tag, vr, [])
            elif value is None or value == "":
                ds.add_new(tag, vr, None)
            else:
                ds.add_new(tag, vr, value)
        return ds
