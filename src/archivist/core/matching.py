"""Attribute matching per PS3.4 C.2.2.2, independent of any storage back-end.

A query (a C-FIND Identifier, QIDO-RS parameters, CLI ``KEY=VALUE`` pairs) becomes a
:class:`Query`: a level, a list of :class:`Constraint` and the return keys asked for. The index
translates constraints to SQL; :func:`value_matches` applies the same rules in Python to keys
that have no column.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable

from archivist.core.levels import KEYS, MatchKind, QueryLevel
from archivist.errors import QueryError


@dataclass(frozen=True)
class Constraint:
    """One matching condition on one key.

    ``op`` is one of ``single``, ``wildcard``, ``list`` (UID list or any-of), ``range``.
    For ``range``, ``values`` is ``(low, high)`` where either may be ``""`` (open end).
    """

    keyword: str
    op: str
    values: tuple[str, ...]
    kind: MatchKind = MatchKind.TEXT


@dataclass
class Query:
    """A parsed query: level, constraints and the keys to return."""

    level: QueryLevel
    constraints: list[Constraint] = field(default_factory=list)
    return_keys: list[str] = field(default_factory=list)
    pn_case_insensitive: bool = True

    def constraint(self, keyword: str) -> Constraint | None:
        for c in self.constraints:
            if c.keyword == keyword:
                return c
        return None


_WILDCARD = re.compile(r"[*?]")


def normalise_pn(value: str) -> str:
    """Case- and accent-folded form of a person name, used for case-insensitive matching."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return stripped.casefold()


def normalise_time(value: str) -> str:
    """``HH:MM:SS`` (ACR-NEMA) to ``HHMMSS``; keeps fractions."""
    return value.replace(":", "").strip()


def normalise_date(value: str) -> str:
    """``YYYY.MM.DD`` (ACR-NEMA) to ``YYYYMMDD``."""
    return value.replace(".", "").replace("-", "").strip()


def _check_date(text: str, keyword: str) -> str:
    d = normalise_date(text)
    if d and not (d.isdigit() and len(d) == 8):
        raise QueryError(f"{keyword}: {text!r} is not a date (YYYYMMDD)")
    return d


def _check_time(text: str, keyword: str) -> str:
    t = normalise_time(text)
    if t and not re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", t):
        raise QueryError(f"{keyword}: {text!r} is not a time (HHMMSS.FFFFFF)")
    return t


def parse_constraint(keyword: str, raw: object, kind: MatchKind | None = None) -> Constraint | None:
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

    Raises
    ------
    QueryError
        A malformed date, time or number.
    """
    if kind is None:
        kind = KEYS[keyword].kind if keyword in KEYS else MatchKind.TEXT
    if kind is MatchKind.COUNT:
        return None
    if raw is None:
        return None
    if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue":
        values = [str(v) for v in raw]  # type: ignore[union-attr]
    else:
        text = str(raw)
        values = text.split("\\") if "\\" in text else [text]
    values = [v.strip() if kind is not MatchKind.PN else v.rstrip() for v in values]
    values = [v for v in values if v != ""]
    if not values:
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
        return Constraint(keyword, "list", tuple(values), kind)
    if len(values) > 1:
        # Multiple values in a non-UID key: treat as "any of" (C.2.2.2.2 generalised).
        return Constraint(keyword, "list", tuple(values), kind)
    value = values[0]
    if kind in (MatchKind.DATE, MatchKind.TIME):
        check = _check_date if kind is MatchKind.DATE else _check_time
        if "-" in value and not (kind is MatchKind.DATE and re.fullmatch(r"\d{4}-\d\d-\d\d", value)):
            low, _, high = value.partition("-")
            low, high = check(low, keyword), check(high, keyword)
            if not low and not high:
                return None
            return Constraint(keyword, "range", (low, high), kind)
        return Constraint(keyword, "single", (check(value, keyword),), kind)
    if kind is MatchKind.INT:
        try:
            return Constraint(keyword, "single", (str(int(value)),), kind)
        except ValueError:
            raise QueryError(f"{keyword}: {value!r} is not a number") from None
    if _WILDCARD.search(value):
        if set(value) == {"*"}:
            return None
        return Constraint(keyword, "wildcard", (value,), kind)
    return Constraint(keyword, "single", (value,), kind)


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
    if stored is None or stored == "":
        return False
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
        return text == want
    if c.op == "wildcard":
        pattern = normalise_pn(c.values[0]) if fold else c.values[0]
        return bool(wildcard_to_regex(pattern, fold=False).match(text))
    if c.op == "list":
        values = [normalise_pn(v) for v in c.values] if fold else list(c.values)
        return text in values
    if c.op == "range":
        low, high = c.values
        norm = normalise_time(text) if c.kind is MatchKind.TIME else normalise_date(text)
        if low and norm < low:
            return False
        if high and norm[: len(high)] > high:
            return False
        return True
    return False


def build_query(
    level: QueryLevel,
    items: Iterable[tuple[str, object]],
    *,
    pn_case_insensitive: bool = True,
) -> Query:
    """Build a :class:`Query` from ``(keyword, value)`` pairs.

    Every keyword becomes a return key; non-empty values become constraints.
    """
    query = Query(level=level, pn_case_insensitive=pn_case_insensitive)
    seen: set[str] = set()
    for keyword, value in items:
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or keyword in seen:
            continue
        seen.add(keyword)
        query.return_keys.append(keyword)
        constraint = parse_constraint(keyword, value)
        if constraint is not None:
            query.constraints.append(constraint)
    return query
