"""The one search: C-FIND, QIDO-RS and the CLI all call :meth:`Search.find`.

Indexed keys are matched in SQL; any other key with a value is matched against the attributes
kept in the index for that level (never by opening files). Code Sequences (query by code, PS3.4
C.2.2.2.6) are matched in SQL on the normalised (scheme, value) of the codes indexed at ingest,
so a query with an SCT code finds objects stored with the retired SRT code of the same concept.
Results stream: nothing is collected in memory first.

The studies in which the archive keeps its own inventories (*container* studies holding only
Inventory Storage instances, see ``inventory/builder.py``) are left out of every search, unless
the query names them: a Study, Series or SOP Instance UID (so C-MOVE, C-GET and WADO-RS still
retrieve them by UID), or the Inventory Storage SOP Class (``SOPClassUID``/``SOPClassesInStudy``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from archivist.core.dataset_query import NOT_MATCHED
from archivist.core.levels import (
    CODE_SEQUENCES,
    KEYS,
    STUDY_AGGREGATE_OF,
    UNIQUE_KEY,
    MatchKind,
    QueryLevel,
)
from archivist.core.matching import (
    CodeConstraint,
    Constraint,
    Query,
    build_query,
    list_alternatives,
    parse_constraint,
    value_matches,
)
from archivist.errors import QueryError
from archivist.index.repository import Index, attrs_of
from archivist.index.schema import COLUMN_OF, TABLE_OF_LEVEL, TABLES_AT_LEVEL

#: Inventory Storage (PS3.4 B.5; Supplement 223): the SOP Class of container studies.
INVENTORY_STORAGE = "1.2.840.10008.5.1.4.1.1.201.1"
_NAMING_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def shows_containers(query: Query) -> bool:
    """Whether `query` names container studies (see the module docstring)."""
    for c in query.constraints:
        if c.op not in ("single", "list"):
            continue
        if c.keyword in _NAMING_KEYS or (c.keyword in ("SOPClassUID", "SOPClassesInStudy")
                                         and INVENTORY_STORAGE in c.values):
            return True
    return False


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
        out.append("" if v is None else v)  # null: an empty value among several (F.2.5)
    return out


def _json_empty(attrs: Mapping[str, Any], keyword: str) -> bool:
    """Whether the stored DICOM JSON attribute `keyword` is absent or has no value (PS3.4
    C.2.2.2.7): no ``Value``, or only empty values (a person name without any component group)."""
    tag = tag_for_keyword(keyword)
    item = attrs.get(f"{tag:08X}") if tag is not None else None
    if not isinstance(item, dict):
        return True
    values = item.get("Value")
    if not values:
        return True
    if not isinstance(values, list):
        return False
    for v in values:
        if isinstance(v, dict):
            if any(v.get(group) for group in ("Alphabetic", "Ideographic", "Phonetic")):
                return False
        elif v is not None and v != "":
            return False
    return True


#: VRs whose values may be longer than the attributes kept at ingest hold (256 characters):
#: a key without a column of one of these cannot tell an absent value from a long one.
_LONG_TEXT_VRS = frozenset({"LT", "ST", "UT", "UC", "UR"})


def _check_empty_on_attrs(keyword: str) -> None:
    """Refuse Empty Value Matching on a key without a column whose values may be too long to be
    kept in the index (see :data:`_LONG_TEXT_VRS`): it would match the entities whose value
    is long as well as those without one.

    Raises
    ------
    QueryError
        `keyword` has one of :data:`_LONG_TEXT_VRS`.
    """
    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag) if tag is not None else ""
    if vr in _LONG_TEXT_VRS:
        raise QueryError(f"{keyword}: Empty Value Matching (\"\") is not supported on a {vr} "
                         "attribute without an index column")


@functools.cache
def _instance_only_tags() -> frozenset[int]:
    """The tags PS3.3 places only in instance-level modules (``instance_attributes.json``,
    generated from the validator's tables by ``tests/archive/test_instance_attributes.py``)."""
    path = resources.files("archivist.archive") / "instance_attributes.json"
    return frozenset(int(t, 16) for t in json.loads(path.read_bytes())["tags"])


def _below_level(keyword: str, level: QueryLevel) -> bool:
    """Whether `keyword` is an attribute of instances only (PS3.3 places it in no patient,
    study, series, equipment or frame of reference module: Image Comments, Image Type) and
    `level` is above IMAGE. Such a key is not matched there (PS3.4 C.4.1.3.1: matching at the
    Query/Retrieve Level), as the indexed instance keys (Content Date) are not: the attributes
    kept for a study or series are its first instance's, and matching them would find a study
    by its first image only. An attribute PS3.3 does not place in any module is matched; so
    are series and equipment attributes at STUDY level (Operators' Name), on the attributes
    kept for the study."""
    if level is QueryLevel.IMAGE:
        return False
    tag = tag_for_keyword(keyword)
    return tag is not None and tag in _instance_only_tags()


def _column_values(row: Mapping[str, Any], keyword: str) -> list[str]:
    """The values of an indexed column of a search row (a multi-valued one is stored as
    ``\\A\\B\\``)."""
    table, name = COLUMN_OF[keyword]
    value = row.get(f"{table.name}.{name}")
    return [v for v in str(value or "").split("\\") if v]


#: pydicom's validation mode for values read back from the index (no checks).
_TRUSTED = pydicom_config.IGNORE
#: VRs whose indexed value :meth:`Search.json_identifier` writes itself (PS3.18 F.2.3).
_JSON_INT_VRS = frozenset({"IS", "US", "UL", "SL", "SS"})
_JSON_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM",
                            "UC", "UI", "UR", "UT"})


#: The "column" of a return key below the query level: no row has it, its value is empty.
_NOT_AT_LEVEL = ""
#: The "match kind" of Modality / SOP Class UID at STUDY level, answered from the study's
#: Modalities / SOP Classes in Study column (:meth:`Search._aggregate`).
_AGGREGATE: Any = "aggregate"


@functools.lru_cache(maxsize=256)
def _identifier_plan(level: QueryLevel, return_keys: tuple[str, ...]
                     ) -> tuple[tuple[str, int, str, str | None, MatchKind | None], ...]:
    """What :meth:`Search.identifier` puts in a response for these return keys, worked out once
    per query shape: (keyword, tag, VR, ``table.column`` of an indexed key at this level or
    ``None``, match kind)."""
    keys = list(return_keys)
    if UNIQUE_KEY[level] not in keys:
        keys.append(UNIQUE_KEY[level])
    tables = _tables_at(level)
    plan = []
    for keyword in keys:
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        vr = "SQ" if keyword in CODE_SEQUENCES else dictionary_VR(tag)
        if " or " in vr:
            # An ambiguous VR ("OB or OW", "US or SS") cannot be written without the data set
            # that resolves it; an empty return key takes the first.
            vr = vr.split(" or ")[0]
        column = None
        kind = None
        if keyword in COLUMN_OF and COLUMN_OF[keyword][0].name in tables:
            table, name = COLUMN_OF[keyword]
            column = f"{table.name}.{name}"
            kind = KEYS[keyword].kind
        elif level is QueryLevel.STUDY and keyword in STUDY_AGGREGATE_OF:
            # Modality / SOP Class UID at STUDY level are matched as Modalities / SOP Classes
            # in Study (C-FIND, QIDO-RS): answered from those (:meth:`Search._aggregate`).
            table, name = COLUMN_OF[STUDY_AGGREGATE_OF[keyword]]
            column = f"{table.name}.{name}"
            kind = _AGGREGATE
        elif keyword not in CODE_SEQUENCES and keyword not in NOT_MATCHED and (
                keyword in COLUMN_OF or _below_level(keyword, level)):
            # A key of a level below this one (Series Number, SOP Instance UID at STUDY level;
            # Image Type above IMAGE) is not matched here, so its value is not answered
            # either: the one kept with the study or series is its first instance's, which
            # could contradict the query (SeriesNumber=99 answered with Series Number 1).
            # Code sequences keep their own answer (the entity's instances' codes); Timezone
            # Offset From UTC belongs to the whole identifier (PS3.4 C.4.1.1.3.1).
            column = _NOT_AT_LEVEL
        elif keyword == "AvailableTransferSyntaxUID" and level is QueryLevel.IMAGE:
            # The syntax the instance is stored in (PS3.4 C.6.1.1.5.1; as WADO-RS metadata).
            column = "instance.transfer_syntax_uid"
            kind = MatchKind.UID
        plan.append((keyword, tag, vr, column, kind))
    return tuple(plan)


def _plain_json(item: dict[str, Any], vr: str) -> bool:
    """Whether a stored DICOM JSON attribute reads back unchanged through pydicom: the
    dictionary's VR, and plain strings, integers or person names as its values."""
    values = item["Value"]
    if item.get("vr") != vr or not isinstance(values, list) or not values:
        return False
    if vr == "PN":
        return all(isinstance(v, dict) and set(v) <= {"Alphabetic", "Ideographic", "Phonetic"}
                   and all(isinstance(x, str) for x in v.values()) for v in values)
    if vr in _JSON_INT_VRS:
        return all(type(v) is int for v in values)
    if vr in _JSON_TEXT_VRS:
        return all(isinstance(v, str) for v in values)
    return False


def _nulls_among(item: dict[str, Any]) -> bool:
    """Whether a stored DICOM JSON attribute holds an empty value among several (null, PS3.18
    F.2.5): ingest wrote it in the form WADO-RS metadata has (pydicom writes none such)."""
    values = item["Value"]
    return isinstance(values, list) and len(values) > 1 and None in values


def _from_stored_json(tag: int, item: dict[str, Any]) -> DataElement:
    """The element of a stored DICOM JSON attribute. An empty DS or IS value among several
    (null) is written as empty text: pydicom would read null as the text ``None``."""
    vr, values = item["vr"], item["Value"]
    if vr in ("DS", "IS") and isinstance(values, list) and None in values:
        text = "\\".join("" if v is None else _number_text(v) for v in values)
        return DataElement(tag, vr, text, validation_mode=_TRUSTED)
    return DataElement.from_json(Dataset, f"{tag:08X}", vr, values, "Value")


def _number_text(value: Any) -> str:
    """A JSON number as DS or IS text: an integral float without its ``.0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


class Search:
    """Runs queries against the index and builds result identifiers."""

    def __init__(self, index: Index, *, pn_case_insensitive: bool = True) -> None:
        self.index = index
        self.pn_case_insensitive = pn_case_insensitive

    def query_from_identifier(self, level: QueryLevel, identifier: Dataset, *,
                              study_aggregates: bool = False) -> Query:
        """Build a query from a C-FIND/C-MOVE/C-GET Identifier (PS3.4 C.4.1.1.3).

        The items of a Code Sequence (:data:`archivist.core.levels.CODE_SEQUENCES`) are
        matched (sequence matching, C.2.2.2.6); other sequences are return keys only. With
        `study_aggregates` (C-FIND), a Modality or SOP Class UID value at STUDY level matches
        Modalities / SOP Classes in Study.

        Raises
        ------
        QueryError
            A malformed value, or matching inside a code sequence on an attribute that is not
            part of the Code Sequence Macro.
        """
        items: list[tuple[str, object]] = []
        item_keys: dict[str, frozenset[str]] = {}
        for tag in list(identifier.keys()):
            try:
                elem = identifier[tag]
            except (AttributeError, ValueError, TypeError):
                # An ambiguous VR ("US or SS", "OB or OW") read in Implicit VR that pydicom
                # cannot resolve without Pixel Representation / Bits Allocated: a return key
                # when empty; a value on it cannot be matched.
                raw = identifier.get_item(tag)
                keyword = keyword_for_tag(tag)
                if raw is not None and raw.value:
                    raise QueryError(f"{keyword or tag}: a value on an attribute whose VR "
                                     "depends on the pixel data cannot be matched") from None
                if keyword:
                    items.append((keyword, None))
                continue
            keyword = elem.keyword or keyword_for_tag(elem.tag)
            if not keyword:
                continue
            if elem.VR == "SQ":
                value: object = None
                if keyword in CODE_SEQUENCES and elem.value:
                    value = [
                        {e.keyword: (None if e.VR == "SQ" else e.value)
                         for e in item if e.keyword}
                        for item in elem.value
                    ]
                    named = frozenset(k for item in value for k in item)  # type: ignore[attr-defined]
                    if named:
                        item_keys[keyword] = named
                items.append((keyword, value))
                continue
            items.append((keyword, elem.value))
        query = build_query(level, items, pn_case_insensitive=self.pn_case_insensitive,
                            empty_value_matching=True)
        query.item_keys = item_keys
        if study_aggregates and level is QueryLevel.STUDY:
            # Modality or SOP Class UID at STUDY level (common with findscu -k Modality=CT) is
            # a series/instance key a hierarchical query would ignore, returning every study:
            # matched as what it means there, Modalities / SOP Classes in Study, as QIDO-RS
            # does for /studies?Modality=.
            given = {c.keyword for c in query.constraints}
            for lower, study_key in STUDY_AGGREGATE_OF.items():
                value = identifier.get(lower)
                if study_key in given or value in (None, ""):
                    continue
                constraint = parse_constraint(study_key, value, empty_value_matching=True)
                if constraint is not None:
                    query.constraints.append(constraint)
        return query

    def query_from_pairs(self, level: QueryLevel, pairs: list[tuple[str, str]], *,
                         empty_value_matching: bool = True) -> Query:
        """Build a query from ``(key, value)`` text pairs (QIDO-RS parameters, the CLI).

        A key is a keyword or an 8-hex-digit tag; a dotted path addresses an attribute of a
        Code Sequence item: ``00081032.00080100=36118008`` with
        ``00081032.00080102=SCT``, or ``ProcedureCodeSequence.CodeValue=36118008``
        (PS3.18 8.3.4.1). The result is the same query a C-FIND Identifier with that sequence
        item gives. A value of ``""`` is Empty Value Matching (PS3.4 C.2.2.2.7), as in a C-FIND
        Identifier, unless `empty_value_matching` is False (QIDO-RS without
        ``emptyvaluematching=true``, PS3.18 8.3.4.5): then it is the literal value.

        Raises
        ------
        QueryError
            An unknown key, sequence matching on a non-code sequence, or a malformed value.
        """
        return build_query(level, pairs, pn_case_insensitive=self.pn_case_insensitive,
                           empty_value_matching=empty_value_matching)

    @staticmethod
    def normalise_codes(query: Query) -> Query:
        """Fill the normalised (scheme, value) keys of the exact code items of `query`.

        Retired SNOMED designators (SRT, SNM3, 99SDM) become SCT (PS3.16 8.3, Annex O), as the
        codes were indexed at ingest. Idempotent; called by :meth:`rows`.
        """
        if not query.codes or all(item.keys or not item.exact
                                  for cc in query.codes for item in cc.items):
            return query
        from archivist.terminology import normalise_code

        codes = []
        for cc in query.codes:
            items = []
            for item in cc.items:
                if item.exact and not item.keys:
                    assert item.scheme is not None and item.value is not None
                    keys = tuple(dict.fromkeys(
                        normalise_code(item.scheme.values[0], v) for v in item.value.values))
                    item = dataclasses.replace(item, keys=keys)
                items.append(item)
            codes.append(CodeConstraint(cc.sequence, tuple(items)))
        return dataclasses.replace(query, codes=codes)

    def rows(self, query: Query, *, limit: int = 0, offset: int = 0) -> Iterator[dict[str, Any]]:
        """Matching index rows, with the non-indexed constraints applied."""
        query = self.normalise_codes(query)
        tables = _tables_at(query.level)
        extra: list[tuple[Constraint, str]] = []
        # Wildcards on a multi-valued column (ModalitiesInStudy=M?): the index matches those
        # columns value by value in SQL, so these are matched here on the row's values (and so
        # are the constraints below).
        on_column = [c for c in query.constraints
                     if c.kind is MatchKind.MULTI and c.op == "wildcard" and c.keyword in COLUMN_OF
                     and COLUMN_OF[c.keyword][0].name in tables]
        if on_column:
            query = dataclasses.replace(
                query, constraints=[c for c in query.constraints if c not in on_column])
        # A time range with a low end (StudyTime=120000-) on a column: a stored value of lower
        # precision (1200, 12) names the same moment as the bound although it sorts before it
        # as text. The index is asked from the bound's hour on, the whole range is then matched
        # here (value_matches completes the stored value). A list holding a range or a
        # wildcard (StudyDate=20200101-20200131\\20201231) would be taken literally by the
        # index: it is matched here, value by value.
        here = [c for c in query.constraints
                if c.keyword in COLUMN_OF and COLUMN_OF[c.keyword][0].name in tables
                and ((c.kind is MatchKind.TIME and c.op == "range" and len(c.values[0]) > 2)
                     or list_alternatives(c) is not None)]
        if here:
            sql = []
            for c in query.constraints:
                if c not in here:
                    sql.append(c)
                elif c.op == "range":
                    sql.append(dataclasses.replace(c, values=(c.values[0][:2], c.values[1])))
            query = dataclasses.replace(query, constraints=sql)
            on_column += here
        for c in query.constraints:
            if c.keyword in COLUMN_OF or _below_level(c.keyword, query.level):
                continue
            if c.op == "empty":
                _check_empty_on_attrs(c.keyword)
            extra.append((c, _own_table(query.level)))
        hide = None if shows_containers(query) else INVENTORY_STORAGE
        if not extra and not on_column:
            yield from self.index.search(query, limit=limit, offset=offset,
                                         hide_studies_only_of=hide)
            return
        skipped = 0
        produced = 0
        for row in self.index.search(query, hide_studies_only_of=hide):
            ok = all(value_matches(c, _column_values(row, c.keyword),
                                   pn_fold=query.pn_case_insensitive) for c in on_column)
            parsed: dict[str, dict[str, Any]] = {}  # each table's stored JSON, parsed once
            for c, table in extra:
                if not ok:
                    break
                if table not in tables:
                    continue
                attrs = parsed.get(table)
                if attrs is None:
                    attrs = parsed[table] = attrs_of(row, table)
                if c.op == "empty":
                    if not _json_empty(attrs, c.keyword):
                        ok = False
                        break
                    continue
                values = _json_values(attrs, c.keyword)
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
        attrs: dict[str, Any] | None = None  # the row's stored JSON, parsed once when needed
        for keyword, tag, vr, column, kind in _identifier_plan(query.level,
                                                                tuple(query.return_keys)):
            if keyword in CODE_SEQUENCES:
                ds.add_new(tag, "SQ", self._code_items(query.level, row, keyword,
                                                       query.item_keys.get(keyword)))
                continue
            value: Any = None
            if kind is _AGGREGATE:
                assert column is not None  # an aggregate is always read from its column
                value = self._aggregate(query, row, keyword, column)
            elif column is not None:
                value = row.get(column)
                if kind is MatchKind.MULTI and value is not None:
                    value = [v for v in str(value).split("\\") if v] or None
                elif value is not None and vr in ("IS", "US", "UL", "SL", "SS"):
                    value = int(value)
                elif value is not None and keyword == "PatientID" and value == "":
                    value = None
            else:
                if attrs is None:
                    attrs = attrs_of(row, _own_table(query.level))
                item = attrs.get(f"{tag:08X}")
                if isinstance(item, dict) and "Value" in item:
                    try:
                        elem = _from_stored_json(tag, item)
                        ds.add(elem)
                        continue
                    except Exception:  # noqa: BLE001 - fall back to an empty value
                        value = None
            if vr == "SQ":
                ds.add_new(tag, vr, [])
            elif value is None or value == "":
                ds.add(DataElement(tag, vr, None, validation_mode=_TRUSTED))
            else:
                # Values come from the index, which took them from stored objects: they are
                # not validated again for every match (pydicom's regex checks cost more than
                # the rest of building the identifier).
                ds.add(DataElement(tag, vr, value, validation_mode=_TRUSTED))
        return ds

    def json_identifier(self, query: Query, row: Mapping[str, Any]) -> dict[str, Any]:
        """The response identifier of one row as DICOM JSON (PS3.18 F.2), without Query/Retrieve
        Level: what ``identifier(query, row).to_json_dict()`` gives, built from the row directly.

        Indexed values of the common VRs are written as they are; anything else (sequences,
        decimal numbers, multi-valued or multi-group text) goes through pydicom, one element at
        a time, so both paths give the same JSON.
        """
        out: dict[str, Any] = {}
        attrs: dict[str, Any] | None = None
        slow: list[tuple[str, int, str, str | None, MatchKind | None]] = []
        for entry in _identifier_plan(query.level, tuple(query.return_keys)):
            keyword, tag, vr, column, kind = entry
            key = f"{tag:08X}"
            if column is None:
                if keyword in CODE_SEQUENCES or vr == "SQ":
                    slow.append(entry)
                    continue
                if attrs is None:
                    attrs = attrs_of(row, _own_table(query.level))
                item = attrs.get(key)
                if not isinstance(item, dict) or "Value" not in item:
                    out[key] = {"vr": vr}
                elif _plain_json(item, vr) or _nulls_among(item):
                    out[key] = {"vr": vr, "Value": item["Value"]}
                else:
                    slow.append(entry)  # the stored JSON, normalised through pydicom
                continue
            value = (self._aggregate(query, row, keyword, column) if kind is _AGGREGATE
                     else row.get(column))
            if value is None or value == "":
                out[key] = {"vr": vr}
            elif kind is MatchKind.MULTI:
                values = [v for v in str(value).split("\\") if v]
                out[key] = {"vr": vr, "Value": values} if values else {"vr": vr}
            elif vr in _JSON_INT_VRS:
                out[key] = {"vr": vr, "Value": [int(value)]}
            elif vr in _JSON_TEXT_VRS and isinstance(value, str) and "\\" not in value:
                if vr == "PN":
                    if "=" in value:
                        slow.append(entry)
                        continue
                    out[key] = {"vr": vr, "Value": [{"Alphabetic": value}]}
                else:
                    out[key] = {"vr": vr, "Value": [value]}
            else:
                slow.append(entry)
        if slow:
            full = self.identifier(query, row)
            for _keyword, tag, _vr, _column, _kind in slow:
                if tag in full:
                    elem = full[tag]
                    if elem.VR == "PN":
                        out[f"{int(tag):08X}"] = _person_name_json(elem)
                        continue
                    one = Dataset()
                    one.add(elem)
                    out.update(one.to_json_dict())
        return out

    @staticmethod
    def _aggregate(query: Query, row: Mapping[str, Any], keyword: str, column: str) -> str | None:
        """Modality (or SOP Class UID) of a STUDY-level answer, one value (VM 1): the value the
        query asked for when the study holds it (a study matched by ``Modality=CT`` answers CT,
        whatever its first series is), else the study's only one; None (zero length) for a
        study of several that the query did not narrow."""
        held = [v for v in str(row.get(column) or "").split("\\") if v]
        asked = [v for c in query.constraints if c.keyword in (keyword, STUDY_AGGREGATE_OF[keyword])
                 and c.op in ("single", "list") for v in c.values]
        for value in asked:
            if value in held:
                return value
        return held[0] if len(held) == 1 else None

    def _code_items(self, level: QueryLevel, row: Mapping[str, Any], keyword: str,
                    named: frozenset[str] | None = None) -> Sequence:
        """The stored items of a Code Sequence for one result (the entity's instances' codes);
        with `named`, the attributes the request's item holds, each item has those only
        (empty where a code lacks one; the code's value under whichever of Code Value, Long
        Code Value and URN Code Value holds it, when one of them is named)."""
        pk = row.get(f"{_own_table(level)}.pk")
        if pk is None:
            return Sequence([])
        items = []
        for code in self.index.codes_of(level.value, int(pk), keyword):
            item = Dataset()
            value = str(code["original_value"])
            if value.lower().startswith("urn:") or "://" in value:
                item.URNCodeValue = value
            elif len(value) > 16:
                item.LongCodeValue = value
            else:
                item.CodeValue = value
            if code["original_scheme"]:
                item.CodingSchemeDesignator = code["original_scheme"]
            if code["meaning"]:
                item.CodeMeaning = code["meaning"]
            if named:
                item = _only(item, named)
            items.append(item)
        return Sequence(items)


_CODE_VALUES = frozenset({"CodeValue", "LongCodeValue", "URNCodeValue"})


def _only(item: Dataset, named: frozenset[str]) -> Dataset:
    """`item` with the attributes `named` only: those it lacks as empty values."""
    held = {elem.keyword for elem in item}
    wanted = set(named)
    if wanted & _CODE_VALUES and held & _CODE_VALUES:
        wanted = (wanted - _CODE_VALUES) | (held & _CODE_VALUES)
    out = Dataset()
    for keyword in wanted:
        tag = tag_for_keyword(keyword)
        if keyword in held:
            out.add(item[keyword])
        elif tag is not None and dictionary_VR(tag) != "SQ":
            out.add_new(tag, dictionary_VR(tag), None)
    return out


def _person_name_json(elem: Any) -> dict[str, Any]:
    """A PN element in DICOM JSON (PS3.18 F.2.2): each value's component groups, an empty
    value among several as null (F.2.5). pydicom's own conversion fails on an empty value among
    several (``DOE^J\\``: IndexError), which made QIDO-RS answer 500 for every query listing
    such an object."""
    raw = elem.value
    values = list(raw) if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" \
        else [raw]
    out: list[dict[str, str] | None] = []
    for value in values:
        text = str(value if value is not None else "")
        if not text:
            out.append(None)
            continue
        groups = text.split("=")
        item = {name: group for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"),
                                                    groups) if group}
        out.append(item or None)
    if not any(out):
        return {"vr": "PN"}
    return {"vr": "PN", "Value": out}
