"""Access to the generated PS3.3 tables in ``validate/_standard/standard.json``.

The tables map SOP Class UID -> IOD (PS3.4 B.5), IOD -> modules with usage M/C/U (PS3.3 Annex A)
and module -> attributes with their PS3.5 7.4 type, sequences nested (PS3.3 Annex C). They are
produced by ``tools/generate_iod_tables.py`` from highdicom's offline tables and loaded once per
process (about 60 ms), then shared read-only.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

_TABLE = Path(__file__).resolve().parent / "_standard" / "standard.json"


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One attribute of a module: tag, PS3.5 7.4 type and, for sequences, the item's attributes."""

    tag: int
    type: str
    children: tuple[AttributeSpec, ...] | None


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    """A PS3.3 module (macros already expanded)."""

    key: str
    name: str
    attributes: tuple[AttributeSpec, ...]
    top_level_tags: frozenset[int]


@dataclass(frozen=True, slots=True)
class ModuleUsage:
    """A module's row in an IOD table: module key, usage (``M``, ``C`` or ``U``) and the IE."""

    module: str
    usage: str
    ie: str


@dataclass(frozen=True, slots=True)
class IODSpec:
    """A composite or normalized IOD of PS3.3 Annex A/B."""

    key: str
    name: str
    modules: tuple[ModuleUsage, ...]


class StandardTables:
    """The loaded tables; use :func:`tables` to get the shared instance."""

    def __init__(self, raw: dict[str, object]) -> None:
        self.source = str(raw.get("source", ""))
        self._sop_classes: dict[str, str] = raw["sop_classes"]  # type: ignore[assignment]
        self._iods_raw: dict[str, dict[str, object]] = raw["iods"]  # type: ignore[assignment]
        self._modules_raw: dict[str, dict[str, object]] = raw["modules"]  # type: ignore[assignment]
        self._modules: dict[str, ModuleSpec] = {}
        self._iods: dict[str, IODSpec] = {}
        self._iod_tags: dict[str, frozenset[int]] = {}
        # What the checkers work out once from these tables (per IOD), kept with them.
        self.derived: dict[tuple[str, str], object] = {}

    @property
    def sop_class_uids(self) -> list[str]:
        """Every SOP Class UID with an IOD in the tables."""
        return list(self._sop_classes)

    @property
    def iod_keys(self) -> list[str]:
        """Every IOD key (``ct-image``, ``segmentation``, ...)."""
        return list(self._iods_raw)

    def iod_for_sop_class(self, uid: str) -> IODSpec | None:
        """Return the IOD that a SOP Class UID stores, or None when unknown (PS3.4 B.5)."""
        key = self._sop_classes.get(uid)
        return self.iod(key) if key else None

    def iod(self, key: str) -> IODSpec:
        """Return the IOD with this key (KeyError when unknown)."""
        spec = self._iods.get(key)
        if spec is None:
            raw = self._iods_raw[key]
            rows = raw["modules"]
            assert isinstance(rows, list)
            spec = IODSpec(
                key, str(raw["name"]), tuple(ModuleUsage(m, u, ie) for m, u, ie in rows)
            )
            self._iods[key] = spec
        return spec

    def module(self, key: str) -> ModuleSpec:
        """Return the module with this key (KeyError when unknown), built on first use."""
        spec = self._modules.get(key)
        if spec is None:
            raw = self._modules_raw[key]
            rows = raw["attributes"]
            attributes = _build(json.loads(rows) if isinstance(rows, str) else rows)  # type: ignore[arg-type]
            spec = ModuleSpec(
                key, str(raw["name"]), attributes, frozenset(a.tag for a in attributes)
            )
            self._modules[key] = spec
        return spec

    def iod_top_level_tags(self, iod: IODSpec) -> frozenset[int]:
        """Tags allowed at the top level by any module (M, C or U) of the IOD."""
        tags = self._iod_tags.get(iod.key)
        if tags is None:
            acc: set[int] = set()
            for usage in iod.modules:
                if usage.module in self._modules_raw:
                    acc |= self.module(usage.module).top_level_tags
            tags = frozenset(acc)
            self._iod_tags[iod.key] = tags
        return tags

    def has_module(self, key: str) -> bool:
        """True when the module is in the tables."""
        return key in self._modules_raw


def _build(rows: list[list[object]]) -> tuple[AttributeSpec, ...]:
    out = []
    for tag, kind, children in rows:
        assert isinstance(tag, int) and isinstance(kind, str)
        out.append(AttributeSpec(tag, kind, _build(children) if children else None))  # type: ignore[arg-type]
    return tuple(out)


@functools.lru_cache(maxsize=1)
def tables() -> StandardTables:
    """Load ``standard.json`` once and return the shared :class:`StandardTables`.

    Each module's attribute rows stay as JSON text until the module is first asked for: the
    ~100,000 rows as Python lists took ~18 MB in every worker process, and a validation only
    ever builds the few dozen modules of the IODs it sees."""
    with _TABLE.open("rb") as fh:
        return StandardTables(json.load(fh, object_hook=_rows_as_text))


def _rows_as_text(obj: dict[str, object]) -> dict[str, object]:
    """json's object hook: a module's ``attributes`` (a list of rows) turned back into compact
    JSON text as soon as it is parsed, so the lists are freed one module at a time."""
    rows = obj.get("attributes")
    if isinstance(rows, list):
        obj["attributes"] = json.dumps(rows, separators=(",", ":"))
    return obj
