"""Hook for checking coded entries (PS3.3 8.8 Code Sequence Macro) against terminology.

The validator itself checks only the structure of code items (Type 1/1C of Code Value, Coding
Scheme Designator, Code Meaning). Checking a code against a coding scheme or a PS3.16 context
group belongs to the terminology package; it plugs in here by passing callables in
:attr:`archivist.validate.ValidationOptions.code_checkers`::

    def check_code(item: Dataset, path: str) -> Iterable[Finding]: ...

    validate_dataset(ds, options=ValidationOptions(code_checkers=(check_code,)))

Each checker is called once for every sequence item that carries Code Meaning (0008,0104), with
the item's path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from pydicom.dataset import Dataset

from archivist.validate import paths
from archivist.validate.findings import Finding

CodeChecker = Callable[[Dataset, str], Iterable[Finding]]

CODE_MEANING = 0x00080104


def iter_code_items(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, Dataset]]:
    """Yield ``(path, item)`` for every sequence item holding a Code Meaning, at any depth."""
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        vr = elem.VR
        if vr is None:
            vr = ds[tag].VR
        if vr != "SQ":
            continue
        path = prefix + paths.step(int(tag))
        for index, item in enumerate(ds[tag].value):
            item_path = paths.item(path, index)
            if CODE_MEANING in item:
                yield item_path, item
            yield from iter_code_items(item, item_path)


def run_code_checkers(ds: Dataset, checkers: Iterable[CodeChecker]) -> list[Finding]:
    """Run every checker over every code item of *ds* and collect their findings."""
    checkers = tuple(checkers)
    if not checkers:
        return []
    found: list[Finding] = []
    for path, item in iter_code_items(ds):
        for checker in checkers:
            found.extend(checker(item, path))
    return found
