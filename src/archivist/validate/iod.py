"""IOD and module layer: PS3.3 Annex A (IODs) and Annex C (modules), PS3.5 7.4 (types).

For the IOD of the object's SOP Class:

* every Mandatory module is checked; a Conditional module when its registered condition holds
  (:mod:`.conditions`) or when one of its own attributes is present; a User Optional module when
  one of its own attributes is present;
* Type 1 attributes are present with a value, Type 2 present (possibly empty), Type 1C/2C
  present when their registered condition holds, and a present Type 1C has a value;
* a Type 1 sequence has at least one item (PS3.5 7.5.3), and the attributes of each item are
  checked against the sequence's item table, at every depth;
* top-level attributes that no module of the IOD defines are reported once, as dciodvfy's
  "Standard Extended SOP Class" warning (PS3.4 B.1.3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pydicom.dataset import Dataset

from archivist.validate import paths
from archivist.validate.conditions import (
    attribute_condition,
    inclusion_condition,
    module_condition,
)
from archivist.validate.findings import Collector, Severity
from archivist.validate.references import iod_reference, module_reference
from archivist.validate.standard import AttributeSpec, IODSpec, ModuleSpec, StandardTables

ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

# Attributes of the File Meta Information and the command set are not part of any IOD.
_IGNORED_GROUPS = frozenset({0x0000, 0x0002, 0xFFFC, 0xFFFE})
# Tags that appear in storage objects without belonging to a particular IOD module.
_ALWAYS_ALLOWED = frozenset(
    {
        0x00080005,  # Specific Character Set (SOP Common, listed anyway)
        0xFFFAFFFA,  # Digital Signatures Sequence
        0x7FE00001, 0x7FE00002,  # Extended Offset Table, lengths
        0x00280303,  # Longitudinal Temporal Information Modified
    }
)

_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
     "UR", "UT"}
)
# Functional groups (PS3.3 C.7.6.16) may sit in the Shared or in the Per-frame Functional Groups
# Sequence, and the tables flatten every functional group macro of an IOD as Type 1 whatever its
# usage (M, C or U) in the IOD's functional group table. Missing macros are reported only for
# these, which are Mandatory in every enhanced IOD that uses them, and only when they are in
# neither sequence.
_SHARED_FG = 0x52009229
_PER_FRAME_FG = 0x52009230
_FG_STEPS = ("(5200,9229)[", "(5200,9230)[")
_MANDATORY_GROUPS = frozenset(
    {
        0x00209111,  # Frame Content Sequence
        0x0062000A,  # Segment Identification Sequence (Segmentation)
    }
)


def _in_functional_groups(prefix: str) -> bool:
    last = prefix.rsplit("/", 1)[-1]
    return any(step in last for step in _FG_STEPS)


def _functional_group_anywhere(root: Dataset, tag: int) -> bool:
    for seq_tag in (_SHARED_FG, _PER_FRAME_FG):
        if seq_tag in root:
            seq = root[seq_tag].value or []
            if any(tag in item for item in seq):
                return True
    return False


# Modules with conditionally included macros (see conditions.INCLUDED_IF).
_MACRO_MODULES = frozenset({"sr-document-content"})


def _empty(elem: object) -> bool:
    value = getattr(elem, "value", None)
    if value is None:
        return True
    if isinstance(value, (bytes, bytearray)):
        if getattr(elem, "VR", None) in _TEXT_VRS:
            return len(bytes(value).rstrip(b" \x00")) == 0
        return len(value) == 0
    if isinstance(value, str):
        return value.strip(" \x00") == ""
    try:
        return len(value) == 0
    except TypeError:
        return False


class ModuleChecker:
    """Checks a dataset against the modules of one IOD.

    Parameters
    ----------
    tables : StandardTables
        The loaded PS3.3 tables.
    iod : IODSpec
        The IOD of the object's SOP Class.
    out : Collector
        Where findings go.
    """

    def __init__(self, tables: StandardTables, iod: IODSpec, out: Collector) -> None:
        self.tables = tables
        self.iod = iod
        self.out = out
        self.root: Dataset = Dataset()
        self._module_of: dict[int, str] | None = None
        self.report_extended = True

    def module_of(self, tag: int) -> str:
        """Name of the first module of the IOD that defines a top-level tag ("" if none)."""
        if self._module_of is None:
            found: dict[int, str] = {}
            for usage in self.iod.modules:
                if self.tables.has_module(usage.module):
                    spec = self.tables.module(usage.module)
                    for t in spec.top_level_tags:
                        found.setdefault(t, spec.name)
            self._module_of = found
        return self._module_of.get(tag, "")

    def check(self, ds: Dataset) -> None:
        """Check *ds* against every applicable module of the IOD (PS3.3 Annex A)."""
        self.root = ds
        mandatory_tags: set[int] = set()
        for usage in self.iod.modules:
            if usage.usage == "M" and self.tables.has_module(usage.module):
                mandatory_tags |= self.tables.module(usage.module).top_level_tags
        present = frozenset(int(t) for t in ds.keys())  # noqa: SIM118
        for usage in self.iod.modules:
            if not self.tables.has_module(usage.module):
                continue
            module = self.tables.module(usage.module)
            if usage.usage == "M":
                self._attributes(ds, module.attributes, "", module)
                continue
            own = module.top_level_tags - mandatory_tags
            in_use = bool(own & present)
            condition = module_condition(self.iod.key, usage.module) if usage.usage == "C" else None
            required = condition is not None and condition(ds, ds)
            if required and not in_use:
                self.out.add(
                    ERROR, "iod.module-missing", "", module.name,
                    f"The {module.name} Module is required because {condition.text}"  # type: ignore[union-attr]
                    " but none of its attributes is present.",
                    iod_reference(self.iod.key, self.iod.name),
                )
            if required or in_use:
                self._attributes(ds, module.attributes, "", module)
        if self.report_extended:
            self._extended(ds, present)

    def _attributes(
        self, item: Dataset, specs: Iterable[AttributeSpec], prefix: str, module: ModuleSpec
    ) -> None:
        ref = module_reference(module.key, module.name)
        for spec in specs:
            tag = spec.tag
            kind = spec.type
            if module.key in _MACRO_MODULES:
                included = inclusion_condition(module.key, paths.keyword_of(tag))
                if included is not None and not included(item, self.root):
                    continue
            if tag not in item:
                if prefix and tag not in _MANDATORY_GROUPS and _in_functional_groups(prefix):
                    continue  # functional group macro usage is not in the tables
                if prefix and tag in _MANDATORY_GROUPS and _functional_group_anywhere(
                    self.root, tag
                ):
                    continue  # present in the shared or in the per-frame groups
                if kind == "1" or kind == "2":
                    self._missing(kind, prefix + paths.step(tag), module, ref)
                elif kind in ("1C", "2C"):
                    keyword = paths.keyword_of(tag)
                    condition = attribute_condition(module.key, keyword)
                    if condition is not None and condition(item, self.root):
                        self.out.add(
                            ERROR, f"iod.type{kind.lower()}-missing", prefix + paths.step(tag),
                            module.name,
                            f"Type {kind} attribute {keyword} is missing; it is required because "
                            f"{condition.text} ({module.name} Module).",
                            ref,
                        )
                continue
            elem = item.get_item(tag)
            empty = _empty(elem)
            if empty and kind in ("1", "1C"):
                path = prefix + paths.step(tag)
                keyword = paths.keyword_of(tag)
                self.out.add(
                    ERROR, f"iod.type{kind.lower()}-empty", path, module.name,
                    f"Type {kind} attribute {keyword} is present but has no value"
                    + (" (a Type 1 sequence needs at least one item)" if spec.children else "")
                    + f" ({module.name} Module).",
                    ref if kind == "1" else "PS3.5 7.4.4",
                )
                continue
            if spec.children and not empty:
                try:
                    seq = item[tag].value
                except Exception:  # noqa: BLE001, S112 - reported by the dictionary layer
                    continue
                if not isinstance(seq, list) and type(seq).__name__ != "Sequence":
                    continue
                path = prefix + paths.step(tag)
                for index, sub in enumerate(seq):
                    if isinstance(sub, Dataset):
                        self._attributes(sub, spec.children, paths.item(path, index), module)

    def _missing(self, kind: str, path: str, module: ModuleSpec, ref: str) -> None:
        keyword = path.rsplit("/", 1)[-1].split("(")[0]
        self.out.add(
            ERROR, f"iod.type{kind}-missing", path, module.name,
            f"Type {kind} attribute {keyword} is missing ({module.name} Module"
            + (", it may be empty but must be present)." if kind == "2" else ")."),
            ref,
        )

    def _extended(self, ds: Dataset, present: frozenset[int]) -> None:
        allowed = self.tables.iod_top_level_tags(self.iod)
        extra = [
            t for t in present
            if t not in allowed and not (t >> 16) & 1 and (t >> 16) not in _IGNORED_GROUPS
            and t not in _ALWAYS_ALLOWED and t & 0xFFFF != 0
        ]
        for tag in sorted(extra):
            self.out.add(
                WARNING, "iod.not-in-iod", paths.step(tag), "",
                f"{paths.keyword_of(tag)} is not defined by any module of the {self.iod.name} "
                "IOD (Standard Extended SOP Class).",
                "PS3.4 B.1.3",
            )


def checker_for(
    tables: StandardTables, sop_class_uid: str, out: Collector
) -> tuple[ModuleChecker | None, Callable[[int], str]]:
    """Return the module checker for a SOP Class (None when unknown) and its tag -> module map."""
    iod = tables.iod_for_sop_class(sop_class_uid)
    if iod is None:
        return None, lambda tag: ""
    checker = ModuleChecker(tables, iod, out)
    return checker, checker.module_of
