"""C-FIND style matching of a query data set against data sets held whole (not in index columns):
worklist entries (PS3.4 Annex K) and Unified Procedure Steps (Annex CC).

A query is an Identifier: each element with a value is a matching key (PS3.4 C.2.2.2), each
element is also a return key. A sequence key whose item holds keys with values matches an entity
when one of the entity's items matches every key of that item (sequence matching, C.2.2.2.6),
one level deep per sequence and recursively. :func:`answer` builds the response: the keys asked
for, filled from the entity, absent values empty, a sequence's items cut to the keys of the
query's item (an empty item asks for all of them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from archivist.core.matching import Constraint, parse_constraint, value_matches

__all__ = ["DatasetQuery", "answer", "shallow", "value_of"]

#: Keys that say how to answer, not what to match.
NOT_MATCHED = frozenset({"SpecificCharacterSet", "QueryRetrieveLevel", "TimezoneOffsetFromUTC"})


@dataclass
class DatasetQuery:
    """The matching keys of an Identifier: `keys` on plain attributes, `items` per sequence
    (keyword -> the query of its first item)."""

    keys: list[Constraint] = field(default_factory=list)
    items: dict[str, DatasetQuery] = field(default_factory=dict)

    @classmethod
    def parse(cls, identifier: Dataset, *, skip: Iterable[str] = ()) -> DatasetQuery:
        """The matching keys of `identifier`; `skip` names keys matched otherwise (or never).

        Raises :class:`~archivist.errors.QueryError` or ValueError for a malformed value."""
        skipped = NOT_MATCHED | set(skip)
        out = cls()
        for elem in identifier:
            keyword = elem.keyword
            if not keyword or keyword in skipped:
                continue
            if elem.VR == "SQ":
                if elem.value:
                    inner = cls.parse(elem.value[0])
                    if inner:
                        out.items[keyword] = inner
                continue
            c = parse_constraint(keyword, elem.value, empty_value_matching=True)
            if c is not None:
                out.keys.append(c)
        return out

    def __bool__(self) -> bool:
        return bool(self.keys or self.items)

    def matches(self, ds: Dataset, *, pn_fold: bool = True) -> bool:
        """Whether `ds` matches every key."""
        if not all(value_matches(c, value_of(ds, c.keyword), pn_fold=pn_fold)
                   for c in self.keys):
            return False
        for keyword, inner in self.items.items():
            mine = ds.get(keyword)
            if not mine or not any(isinstance(item, Dataset)
                                   and inner.matches(item, pn_fold=pn_fold) for item in mine):
                return False
        return True


def value_of(ds: Dataset, keyword: str) -> Any:
    """`keyword`'s value in `ds` as text (a list for several values), None when absent or empty."""
    try:
        elem = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a value that does not decode matches nothing
        return None
    if elem is None or elem == "":
        return None
    if isinstance(elem, (list, tuple)) or type(elem).__name__ == "MultiValue":
        return [str(v) for v in elem]
    return str(elem)


def shallow(ds: Dataset, *, leave_out: int | None = None) -> Dataset:
    """A new data set with the values of `ds`: setting one in it leaves `ds` as it was
    (``copy.copy`` of a pydicom Dataset shares its elements). The element tagged `leave_out`
    is not copied (a caller about to replace a long sequence: pydicom walks every item of a
    sequence added to a data set)."""
    out = Dataset()
    for elem in ds:
        if elem.tag == leave_out:
            continue
        # A new element for each (pydicom changes an element in place when a value is set).
        out.add(DataElement(elem.tag, elem.VR, elem.value, already_converted=True))
    return out


def answer(identifier: Dataset, ds: Dataset, *, leave_out: Iterable[str] = ()) -> Dataset:
    """The keys of `identifier` with the values of `ds` (sequences item by item); the keys in
    `leave_out` are never answered. The Specific Character Set of `ds` goes with its values."""
    hidden = frozenset(leave_out)
    out = Dataset()
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword == "SpecificCharacterSet" or keyword in hidden:
            continue
        if elem.VR == "SQ":
            mine = ds.get(keyword)
            if mine is None:
                setattr(out, keyword, Sequence([]))
                continue
            wanted = elem.value[0] if elem.value else None
            items = []
            for item in mine:
                items.append(answer(wanted, item) if wanted is not None and len(wanted)
                             else item)
            setattr(out, keyword, Sequence(items))
            continue
        if keyword in ds:
            out.add(ds.data_element(keyword))  # type: ignore[arg-type]
        else:
            out.add_new(elem.tag, elem.VR, None)
    charset = ds.get("SpecificCharacterSet")
    if charset:
        out.SpecificCharacterSet = charset
    return out
