"""Attribute matching per PS3.4 C.2.2.2, independent of any storage back-end.

A query (a C-FIND Identifier, QIDO-RS parameters, CLI ``KEY=VALUE`` pairs) becomes a
:class:`Query`: a level, a list of :class:`Constraint` and the return keys asked for. The index
translates constraints to SQL; :func:`value_matches` applies the same rules in Python to keys
that have no column.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from archivist.core.levels import CODE_ITEM_KEYS, CODE_SEQUENCES, KEYS, MatchKind, QueryLevel
from archivist.errors import QueryError


@dataclass(frozen=True)
class Constraint:
    """One matching condition on one key.

    ``op`` is one of ``single``, ``wildcard``, ``list`` (UID list or any-of), ``range``,
    ``empty``. For ``range``, ``values`` is ``(low, high)`` where either may be ``""`` (open
    end). ``empty`` is Empty Value Matching (a key of ``""``, two QUOTATION MARK characters;
    PS3.4 C.2.2.2.7): the entities whose attribute is absent or zero length; ``values`` is
    ``()``. It is never Universal Matching (a zero-length key, which gives no constraint).
    """

    keyword: str
    op: str
    values: tuple[str, ...]
    kind: MatchKind = MatchKind.TEXT


@dataclass(frozen=True)
class CodeItem:
    """One item of a Code Sequence in a query (PS3.3 8.8): what a stored code must match.

    ``value`` matches Code Value, Long Code Value or URN Code Value; ``scheme`` the Coding Scheme
    Designator; ``meaning`` the Code Meaning. ``keys`` holds the normalised ``(scheme, value)``
    pairs of an exact query (retired SNOMED designators mapped to SCT); the archive's search fills
    it (the terminology lives above this layer), and the index then matches on those keys.
    """

    scheme: Constraint | None = None
    value: Constraint | None = None
    meaning: Constraint | None = None
    keys: tuple[tuple[str, str], ...] = ()

    @property
    def exact(self) -> bool:
        """True when a single designator and exact values are given (normalisable)."""
        return (self.scheme is not None and self.scheme.op == "single"
                and self.value is not None and self.value.op in ("single", "list"))


@dataclass(frozen=True)
class CodeConstraint:
    """Sequence matching on a Code Sequence (PS3.4 C.2.2.2.6): any item may match."""

    sequence: str
    items: tuple[CodeItem, ...]


@dataclass
class Query:
    """A parsed query: level, constraints and the keys to return."""

    level: QueryLevel
    constraints: list[Constraint] = field(default_factory=list)
    return_keys: list[str] = field(default_factory=list)
    pn_case_insensitive: bool = True
    codes: list[CodeConstraint] = field(default_factory=list)
    #: The attributes a C-FIND request's Code Sequence item names (PS3.4 C.2.2.1.3: a
    #: sequence's item returns the keys it holds); a sequence absent here, or whose item names
    #: none, returns whole items.
    item_keys: dict[str, frozenset[str]] = field(default_factory=dict)

    def constraint(self, keyword: str) -> Constraint | None:
        for c in self.constraints:
            if c.keyword == keyword:
                return c
        return None


_WILDCARD = re.compile(r"[*?]")

#: The key value that asks for Empty Value Matching (PS3.4 C.2.2.2.7): two QUOTATION MARK
#: characters, not a zero-length value (that is Universal Matching, C.2.2.2.3).
EMPTY_VALUE = '""'
#: The VRs on which a key of ``""`` is Empty Value Matching: the string VRs (text, names, codes,
#: dates, times, numbers as strings). On any other (UI, binary numbers, sequences) it keeps its
#: literal meaning.
EMPTY_MATCHING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH",
                                "ST", "TM", "UC", "UR", "UT"})


def normalise_pn(value: str) -> str:
    """Case- and accent-folded form of a person name, used for case-insensitive matching;
    trailing empty components and groups dropped (``SMITH^JOHN^^^`` is ``SMITH^JOHN``: PS3.5
    6.2.1.1 leaves them out, and senders that pad them name the same person)."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    if "^" in stripped or "=" in stripped:
        stripped = "=".join(group.rstrip("^") for group in stripped.split("=")).rstrip("=")
    return stripped


def normalise_time(value: str) -> str:
    """``HH:MM:SS`` (ACR-NEMA) to ``HHMMSS``; keeps fractions."""
    return value.replace(":", "").strip()


def normalise_date(value: str) -> str:
    """``YYYY.MM.DD`` (ACR-NEMA) to ``YYYYMMDD``."""
    return value.replace(".", "").replace("-", "").strip()


def _check_date(text: str, keyword: str) -> str:
    d = normalise_date(text)
    if d and not (d.isdigit() and len(d) == 8 and 1 <= int(d[4:6]) <= 12
                  and 1 <= int(d[6:]) <= 31):
        raise QueryError(f"{keyword}: {text!r} is not a date (YYYYMMDD)")
    return d


def _check_time(text: str, keyword: str) -> str:
    t = normalise_time(text)
    if t and not (re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", t)
                  and int(t[:2]) <= 23 and int(t[2:4] or 0) <= 59 and int(t[4:6] or 0) <= 60):
        raise QueryError(f"{keyword}: {text!r} is not a time (HHMMSS.FFFFFF)")
    return t


#: The integers an index column holds (64-bit); IS values are 32-bit (PS3.5 6.2).
_INT_RANGE = range(-(2**63), 2**63)


def _check_int(text: str, keyword: str) -> str:
    """An integer key value (IS, US...) in its canonical form (``+3`` is ``3``).

    Raises
    ------
    QueryError
        Not an integer, or too large for any stored value.
    """
    try:
        number = int(text)
    except ValueError:
        raise QueryError(f"{keyword}: {text[:40]!r} is not a number") from None
    if number not in _INT_RANGE:
        raise QueryError(f"{keyword}: {text[:40]!r} is out of range")
    return str(number)


def _low_time(t: str) -> str:
    """A time (or date-time) as the low end of a range: trailing zeros of the fraction dropped,
    so ``101500.000-`` includes a stored ``101500`` (the values compare as text)."""
    if "." in t:
        t = t.rstrip("0").rstrip(".")
    return t


#: A DT value (PS3.5 Table 6.2-1): YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX].
_DT = r"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?(?:[+-]\d{4})?"
_DT_VALUE = re.compile(_DT)
_DT_RANGE = re.compile(f"({_DT})?-({_DT})?")
_DT_OFFSET = re.compile(r"[+-]\d{4}$")


_DT_PARTS = re.compile(r"(\d{10,14})(\.\d{1,6})?([+-])(\d\d)(\d\d)")


def normalise_datetime(value: str) -> str:
    """A DT value for comparison as text, in the archive's local time and without its UTC
    offset: a value that carries an offset is moved by it (PS3.4 C.2.2.2.5: the offset "shall
    be taken into account"), so ``20200101120000+0100`` is ``20200101110000`` on an archive
    running in UTC; a value without one is taken to be local time already. The precision is
    kept; a value coarser than the hour only loses its offset."""
    text = value.strip()
    if len(text) <= 8:
        return text
    found = _DT_PARTS.fullmatch(text)
    if found is None:
        return _DT_OFFSET.sub("", text)
    digits, fraction, sign, hours, minutes = found.groups()
    padded = digits + "0000"[: 14 - len(digits)]
    try:
        stated = datetime(int(padded[:4]), int(padded[4:6]), int(padded[6:8]), int(padded[8:10]),
                          int(padded[10:12]), min(int(padded[12:14]), 59))
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        moment = stated.replace(tzinfo=timezone(-offset if sign == "-" else offset))
        local = moment.astimezone().replace(tzinfo=None)
    except (ValueError, OverflowError, OSError):
        return digits + (fraction or "")
    shifted = local.strftime("%Y%m%d%H%M%S")
    if padded[12:14] == "60":
        shifted = shifted[:12] + "60"  # a leap second keeps its value
    return shifted[: len(digits)] + (fraction or "")


def _check_datetime(text: str, keyword: str) -> str:
    value = text.strip()
    if value and not _DT_VALUE.fullmatch(value):
        raise QueryError(f"{keyword}: {text!r} is not a date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX)")
    return normalise_datetime(value)


#: How keys without an indexed column match, by their dictionary VR (PS3.4 C.2.2.2): dates,
#: times and date-times by range, person names like PatientName; anything else as text.
_KIND_OF_VR = {"DA": MatchKind.DATE, "TM": MatchKind.TIME, "DT": MatchKind.DATETIME,
               "PN": MatchKind.PN}


def kind_of(keyword: str) -> MatchKind:
    """How `keyword` is matched: its :data:`~archivist.core.levels.KEYS` entry, else by VR."""
    if keyword in KEYS:
        return KEYS[keyword].kind
    tag = tag_for_keyword(keyword)
    if tag is None:
        return MatchKind.TEXT
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return MatchKind.TEXT
    return _KIND_OF_VR.get(vr, MatchKind.TEXT)


#: Keys whose value the archive gives every entity (PS3.4 C.4.1.1.3.2; the QIDO-RS Retrieve
#: URL): never empty, so ``""`` keeps its literal meaning there, which matches nothing.
_ALWAYS_PRESENT = frozenset({"InstanceAvailability", "RetrieveAETitle", "RetrieveURL"})


def empty_matching_applies(keyword: str) -> bool:
    """Whether a key of ``""`` on `keyword` is Empty Value Matching (see
    :data:`EMPTY_MATCHING_VRS`); computed counts and the location keys the archive fills in
    never are."""
    if keyword in _ALWAYS_PRESENT or (keyword in KEYS and KEYS[keyword].kind is MatchKind.COUNT):
        return False
    tag = tag_for_keyword(keyword)
    if tag is None:
        return False
    try:
        return dictionary_VR(tag) in EMPTY_MATCHING_VRS
    except KeyError:
        return False


def parse_constraint(keyword: str, raw: object, kind: MatchKind | None = None, *,
                     empty_value_matching: bool = False) -> Constraint | None:
    """Turn one query value into a constraint, or None for universal matching.

    Parameters
    ----------
    keyword
        The DICOM keyword.
    raw
        The value as pydicom gives it (``str``, ``PersonName``, ``MultiValue``, number) or as
        text from a URL or the command line.
    kind
        How to match; looked up in :data:`archivist.core.levels.KEYS` when None.
    empty_value_matching
        Whether a value of ``""`` (two QUOTATION MARK characters) is Empty Value Matching
        (PS3.4 C.2.2.2.7; PS3.18 8.3.4.5 ``emptyvaluematching``) on the VRs where it applies
        (:func:`empty_matching_applies`); otherwise it is the literal value ``""``.

    Raises
    ------
    QueryError
        A malformed date, time or number.
    """
    if kind is None:
        kind = kind_of(keyword)
    if kind is MatchKind.COUNT:
        return None
    if raw is None:
        return None
    if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue":
        values = [str(v) for v in raw]  # type: ignore[attr-defined]
    else:
        text = str(raw)
        if (empty_value_matching and text.strip() == EMPTY_VALUE
                and empty_matching_applies(keyword)):
            return Constraint(keyword, "empty", (), kind)
        values = text.split("\\") if "\\" in text else [text]
    values = [v.strip() if kind is not MatchKind.PN else v.rstrip() for v in values]
    values = [v for v in values if v != ""]
    if not values or (len(values) == 1 and set(values[0]) == {"*"}):
        # A lone "*" is universal matching on any VR: wildcards do not apply to dates, times
        # and numbers (PS3.4 C.2.2.2.4), but StudyDate=* is what many requestors send for
        # "any", better answered than refused.
        return None
    if kind is MatchKind.UID:
        values = [v.rstrip("\x00") for v in values]
        if len(values) == 1:
            if _WILDCARD.search(values[0]):
                if values[0] == "*":
                    return None
                return Constraint(keyword, "wildcard", (values[0],), kind)
            return Constraint(keyword, "single", (values[0],), kind)
        return Constraint(keyword, "list", tuple(values), kind)
    if kind is MatchKind.MULTI:
        if len(values) == 1 and _WILDCARD.search(values[0]):
            # Wildcard matching on a multi-valued attribute (ModalitiesInStudy=M?): any value.
            return Constraint(keyword, "wildcard", (values[0],), kind)
        return Constraint(keyword, "list", tuple(values), kind)
    if kind is MatchKind.INT:
        values = [_check_int(v, keyword) for v in values]
    if len(values) > 1:
        # Multiple values in a non-UID key: treat as "any of" (C.2.2.2.2 generalised), each
        # value matched by its own kind of matching (a range, a wildcard: list_alternatives).
        if kind in (MatchKind.DATE, MatchKind.TIME, MatchKind.DATETIME):
            parsed = [parse_constraint(keyword, v, kind) for v in values]  # checks each value
            if any(p is None for p in parsed):
                return None  # one of them is universal ("-")
            if all(p is not None and p.op == "single" for p in parsed):
                values = [p.values[0] for p in parsed if p is not None]
        return Constraint(keyword, "list", tuple(values), kind)
    value = values[0]
    if kind is MatchKind.DATETIME:
        found = _DT_RANGE.fullmatch(value)
        if found is not None and found.group(1) and found.group(2) \
                and _DT_VALUE.fullmatch(value) \
                and found.group(2) < found.group(1)[: len(found.group(2))]:
            found = None  # "20240101120000-0500": one value with its UTC offset, not a range
        if found is not None:
            low = _low_time(_check_datetime(found.group(1) or "", keyword))
            high = _check_datetime(found.group(2) or "", keyword)
            if not low and not high:
                return None
            return Constraint(keyword, "range", (low, high), kind)
        return Constraint(keyword, "single", (_check_datetime(value, keyword),), kind)
    if kind in (MatchKind.DATE, MatchKind.TIME):
        check = _check_date if kind is MatchKind.DATE else _check_time
        if "-" in value and not (kind is MatchKind.DATE and re.fullmatch(r"\d{4}-\d\d-\d\d", value)):
            low, _, high = value.partition("-")
            low, high = check(low, keyword), check(high, keyword)
            if kind is MatchKind.TIME:
                low = _low_time(low)
            if not low and not high:
                return None
            return Constraint(keyword, "range", (low, high), kind)
        return Constraint(keyword, "single", (check(value, keyword),), kind)
    if kind is MatchKind.INT:
        return Constraint(keyword, "single", (value,), kind)
    if kind is MatchKind.PN and "=" in value:
        value = _pn_empty_groups_universal(value)
    if _WILDCARD.search(value):
        return Constraint(keyword, "wildcard", (value,), kind)
    return Constraint(keyword, "single", (value,), kind)


def _pn_empty_groups_universal(value: str) -> str:
    """A person name query whose first (or middle) component group is empty constrains only
    the groups it gives: ``=山田*`` (no alphabetic group) finds ``Yamada^Tarou=山田^太郎``, as
    dcm4chee matches each group on its own. The empty groups become ``*``; trailing empty
    groups are left as they are (a name of fewer groups already matches on those it gives)."""
    groups = value.split("=")
    while groups and not groups[-1].strip("^ "):
        groups.pop()
    if len(groups) < 2 or all(g.strip("^ ") for g in groups):
        return value
    return "=".join(g if g.strip("^ ") else "*" for g in groups)


def list_alternatives(c: Constraint) -> tuple[Constraint | None, ...] | None:
    """The values of a list constraint as constraints of their own, when one of them is a range
    or a wildcard (``StudyDate=20200101-20200131\\20201231``, ``PatientName=SMITH*\\LEE``):
    the list matches when one of them does (None in the result: universal). None when every
    value is a single value (or a UID), which a plain list matches."""
    if c.op != "list" or c.kind in (MatchKind.UID, MatchKind.INT, MatchKind.COUNT):
        return None
    return _alternatives(c)


@functools.lru_cache(maxsize=256)
def _alternatives(c: Constraint) -> tuple[Constraint | None, ...] | None:
    kind = MatchKind.TEXT if c.kind is MatchKind.MULTI else c.kind
    parsed = tuple(parse_constraint(c.keyword, v, kind) for v in c.values)
    if all(p is not None and p.op == "single" for p in parsed):
        return None
    return parsed


def wildcard_to_regex(pattern: str, *, fold: bool) -> re.Pattern[str]:
    """Compile a DICOM wildcard (``*`` any run, ``?`` one character) to an anchored regex."""
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("^" + "".join(parts) + "$", re.DOTALL | (re.IGNORECASE if fold else 0))


def value_matches(c: Constraint, stored: object, *, pn_fold: bool = True) -> bool:
    """Apply a constraint in Python to a stored value (``None`` when absent).

    Used for keys that have no typed column; mirrors the SQL translation in the index.
    """
    if c.op == "empty":
        if isinstance(stored, (list, tuple)):
            return all(v is None or v == "" for v in stored)
        return stored is None or stored == ""
    if stored is None or stored == "":
        return False
    alternatives = list_alternatives(c)
    if alternatives is not None:
        return any(alt is None or value_matches(alt, stored, pn_fold=pn_fold)
                   for alt in alternatives)
    if isinstance(stored, (list, tuple)):
        return any(value_matches(c, v, pn_fold=pn_fold) for v in stored)
    text = str(stored)
    fold = c.kind is MatchKind.PN and pn_fold
    if fold:
        text = normalise_pn(text)
    if c.op == "single":
        want = normalise_pn(c.values[0]) if fold else c.values[0]
        if c.kind is MatchKind.INT:
            try:
                return int(text) == int(want)
            except ValueError:
                return False
        if c.kind is MatchKind.TIME:
            return normalise_time(text).startswith(want) or normalise_time(text) == want
        if c.kind is MatchKind.DATETIME:
            return normalise_datetime(text) == want
        if c.kind is MatchKind.PN:
            # fewer component groups than stored match on those given (as in SQL)
            return text == want or text.startswith(want + "=")
        return text == want
    if c.op == "wildcard":
        pattern = normalise_pn(c.values[0]) if fold else c.values[0]
        regex = wildcard_to_regex(pattern, fold=False)
        if c.kind is MatchKind.PN and "=" in text and not regex.match(text):
            # as in SQL: or the stored name's first groups, as many as the pattern gives
            groups = pattern.count("=") + 1
            return bool(regex.match("=".join(text.split("=")[:groups])))
        return bool(regex.match(text))
    if c.op == "list":
        values = [normalise_pn(v) for v in c.values] if fold else list(c.values)
        return text in values
    if c.op == "range":
        low, high = c.values
        if c.kind is MatchKind.TIME:
            norm = normalise_time(text)
        elif c.kind is MatchKind.DATETIME:
            norm = normalise_datetime(text)
        else:
            norm = normalise_date(text)
        if low and _earliest(norm, c.kind) < low:
            return False
        return not (high and norm[: len(high)] > high)
    return False


#: What a time or date-time of lower precision is completed with to name its first moment.
_TIME_FILL = "000000"
_DATETIME_FILL = "00000101000000"


def _earliest(norm: str, kind: MatchKind) -> str:
    """A stored time or date-time of lower precision (``1200``, ``2020``) as its first moment
    (``120000``, ``20200101000000``), for the low end of a range: as text it sorts before the
    bound although it names the same moment (``1200`` is 12:00:00, so ``120000-`` finds it)."""
    if kind is MatchKind.TIME:
        fill = _TIME_FILL
    elif kind is MatchKind.DATETIME:
        fill = _DATETIME_FILL
    else:
        return norm
    digits = norm.split(".")[0]
    if not digits.isdigit() or len(digits) >= len(fill):
        return norm
    return digits + fill[len(digits):]


_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")


def resolve_keyword(key: str) -> str:
    """The DICOM keyword of a query key given as a keyword or as 8 hex digits (``00100010``).

    Raises
    ------
    QueryError
        Neither a keyword of the data dictionary nor the tag of one (private tags included).
    """
    text = key.strip()
    if _HEX_TAG.fullmatch(text):
        keyword = keyword_for_tag(int(text, 16))
        if not keyword:
            raise QueryError(f"{text}: not a tag of the DICOM dictionary (private and unknown "
                             "attributes cannot be queried)")
        return str(keyword)
    if not text or tag_for_keyword(text) is None:
        raise QueryError(f"{key!r} is not a DICOM keyword or tag")
    return text


def parse_code_item(sequence: str, item: Mapping[str, object]) -> CodeItem | None:
    """Turn one Code Sequence item of a query into a :class:`CodeItem` (None: return key only).

    Parameters
    ----------
    sequence
        The Code Sequence keyword (one of :data:`archivist.core.levels.CODE_SEQUENCES`).
    item
        ``keyword -> value`` of the item's attributes; empty values are return keys.

    Raises
    ------
    QueryError
        A value on an attribute that is not part of the Code Sequence Macro (PS3.3 Table 8.8-1),
        or values in more than one of Code Value / Long Code Value / URN Code Value.
    """
    for keyword, raw in item.items():
        if keyword in CODE_ITEM_KEYS or raw is None or str(raw).strip() == "":
            continue
        raise QueryError(f"{sequence}.{keyword}: matching inside a code sequence is supported on "
                         f"{', '.join(sorted(CODE_ITEM_KEYS))} only")
    value: Constraint | None = None
    for keyword in ("CodeValue", "LongCodeValue", "URNCodeValue"):
        c = parse_constraint(f"{sequence}.{keyword}", item.get(keyword), MatchKind.TEXT)
        if c is None:
            continue
        if value is not None:
            raise QueryError(f"{sequence}: give one of CodeValue, LongCodeValue or URNCodeValue")
        value = c
    scheme = parse_constraint(f"{sequence}.CodingSchemeDesignator",
                              item.get("CodingSchemeDesignator"), MatchKind.TEXT)
    meaning = parse_constraint(f"{sequence}.CodeMeaning", item.get("CodeMeaning"), MatchKind.TEXT)
    if value is None and scheme is None and meaning is None:
        return None
    return CodeItem(scheme=scheme, value=value, meaning=meaning)


def _items_of(value: object) -> list[Mapping[str, object]] | None:
    """The items of a sequence value given as a list of mappings (None for anything else)."""
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, Mapping) for v in value):
        return list(value)
    return None


def build_query(
    level: QueryLevel,
    items: Iterable[tuple[str, object]],
    *,
    pn_case_insensitive: bool = True,
    empty_value_matching: bool = False,
) -> Query:
    """Build a :class:`Query` from ``(key, value)`` pairs.

    Every key becomes a return key; non-empty values become constraints. With
    `empty_value_matching`, a value of ``""`` asks for the entities whose attribute is absent or
    zero length (PS3.4 C.2.2.2.7; see :func:`parse_constraint`). A key is a keyword or
    an 8-hex-digit tag; a dotted path (``ProcedureCodeSequence.CodeValue``,
    ``00081032.00080100``) addresses an attribute of a Code Sequence item, as QIDO-RS writes
    sequence matching (PS3.18 8.3.4.1). The dotted keys of one sequence form one item. A Code
    Sequence may also be given as a list of items (mappings), as a C-FIND Identifier carries it
    (PS3.4 C.2.2.2.6); an item without values keeps meaning "return this key".

    Raises
    ------
    QueryError
        An unknown key, sequence matching on a sequence that is not a code sequence (see
        :data:`archivist.core.levels.CODE_SEQUENCES`) or deeper than one level, or a malformed
        value.
    """
    query = Query(level=level, pn_case_insensitive=pn_case_insensitive)
    seen: set[str] = set()
    dotted: dict[str, dict[str, object]] = {}
    sequences: dict[str, list[Mapping[str, object]]] = {}

    def returned(keyword: str) -> None:
        if keyword not in seen:
            seen.add(keyword)
            query.return_keys.append(keyword)

    for key, value in items:
        path = [resolve_keyword(part) for part in str(key).split(".")]
        keyword = path[0]
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        if keyword == "TimezoneOffsetFromUTC":
            # Not a matching key: in a request it states the time zone of the query's dates
            # and times (PS3.4 C.4.1.1.3.1, Timezone query adjustment); returned as stored.
            returned(keyword)
            continue
        if len(path) > 1:
            if keyword not in CODE_SEQUENCES:
                raise QueryError(f"{key}: sequence matching is supported on code sequences only "
                                 f"({', '.join(CODE_SEQUENCES)})")
            if len(path) > 2:
                raise QueryError(f"{key}: sequence matching goes one level deep only")
            member = dotted.setdefault(keyword, {})
            if path[1] in member and value not in (None, ""):
                previous = member[path[1]]
                merged = [*(previous if isinstance(previous, list) else [previous]), value]
                member[path[1]] = [str(v) for v in merged if v not in (None, "")]
            else:
                member[path[1]] = value
            returned(keyword)
            continue
        if keyword in seen:
            continue
        returned(keyword)
        if keyword in CODE_SEQUENCES:
            seq_items = _items_of(value)
            if seq_items:
                sequences[keyword] = seq_items
            elif value not in (None, "") and not (isinstance(value, (list, tuple)) and not value):
                raise QueryError(f"{keyword} is a sequence: match on its items "
                                 f"({keyword}.CodeValue=..., {keyword}.CodingSchemeDesignator=...)")
            continue
        if _items_of(value) is not None:
            continue  # items of another sequence: returned, not matched (PS3.4 C.2.2.2.6)
        constraint = parse_constraint(keyword, value, empty_value_matching=empty_value_matching)
        if constraint is not None:
            query.constraints.append(constraint)
    for keyword, member in dotted.items():
        sequences.setdefault(keyword, []).append(member)
    for keyword, seq_items in sequences.items():
        parsed = [parse_code_item(keyword, item) for item in seq_items]
        code_items = tuple(p for p in parsed if p is not None)
        if code_items:
            query.codes.append(CodeConstraint(keyword, code_items))
    return query
