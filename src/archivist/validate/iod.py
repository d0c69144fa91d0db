"""IOD and module layer: PS3.3 Annex A (IODs) and Annex C (modules), PS3.5 7.4 (types).

For the IOD of the object's SOP Class:

* every Mandatory module is checked; a Conditional module when its registered condition holds
  (:mod:`.conditions`) or when one of its own attributes is present; a User Optional module when
  one of its own attributes is present. A module's own attributes are those that no other module
  of the IOD defines: Rows or Columns, which the Image Pixel and both Floating Point Image Pixel
  Modules define, say nothing about which of them the object uses (only a module that has no
  such attribute falls back to those that no Mandatory module defines);
* an attribute whose type another module of the IOD overrides (``conditions.TYPE_OVERRIDES``,
  e.g. Modality in Secondary Capture) is checked with the overriding type only;
* Type 1 attributes are present with a value, Type 2 present (possibly empty), Type 1C/2C
  present when their registered condition holds, and a present Type 1C has a value;
* a Type 1 sequence has at least one item (PS3.5 7.5.3), and the attributes of each item are
  checked against the sequence's item table, at every depth; the items of the SR content tree
  (Content Sequence, PS3.3 C.17.3) are checked against the content item table at every depth
  of the tree, down to :data:`MAX_CONTENT_DEPTH` levels;
* a present 1C/2C attribute whose description says it shall not be present otherwise
  (``conditions.NOT_PRESENT_OTHERWISE``) is an error when its condition does not hold;
* a sequence that PS3.3 allows a single Item in (:mod:`.item_counts`) has no more, and the
  Per-frame Functional Groups Sequence has one item per frame (PS3.3 C.7.6.16);
* top-level attributes that no module of the IOD defines are reported once, as dciodvfy's
  "Standard Extended SOP Class" warning (PS3.4 B.1.3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import RepeatersDictionary
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from archivist.validate import paths
from archivist.validate.conditions import (
    Condition,
    attribute_condition,
    forbidden_otherwise,
    functional_group_condition,
    inclusion_condition,
    module_condition,
    overridden_types,
)
from archivist.validate.dictionary import deferred_chunks, is_deferred
from archivist.validate.findings import Collector, Severity
from archivist.validate.item_counts import single_item_reference
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
_FRAME_CONTENT = 0x00209111
# The elements of group 6000 the dictionary knows, as written for the first overlay group.
_OVERLAY_TAGS = frozenset(
    int(key.replace("xx", "00"), 16) for key in RepeatersDictionary if key.startswith("60xx")
)
# IODs whose functional group table makes the Frame Content Macro User optional (PS3.3
# Table A.32.8-2, A.90.2.5-1): a TILED_FULL slide or pyramid omits the Per-frame Functional
# Groups Sequence altogether.
_FRAME_CONTENT_OPTIONAL = frozenset(
    {"vl-whole-slide-microscopy-image", "confocal-microscopy-tiled-pyramidal-image"}
)
# The repeating groups of the Overlay Plane Module (60xx, PS3.5 7.6): the tables leave their
# elements out (PS3.6 lists them as 60xx), so they are allowed wherever an overlay module is.
_OVERLAY_MODULES = frozenset({"overlay-plane", "multi-frame-overlay", "overlay-activation"})


def _in_functional_groups(prefix: str) -> bool:
    last = prefix.rsplit("/", 1)[-1]
    return any(step in last for step in _FG_STEPS)


def _overlay_element(tag: int) -> bool:
    """Whether `tag` is an element of an overlay repeating group (60xx, xx even, PS3.5 7.6)
    that the data dictionary knows (Overlay Rows (60xx,0010), Overlay Data (60xx,3000)...)."""
    group = tag >> 16
    if not 0x6000 <= group <= 0x601E or group & 1:
        return False
    return (0x6000 << 16 | tag & 0xFFFF) in _OVERLAY_TAGS


def _functional_group_anywhere(root: Dataset, tag: int) -> bool:
    for seq_tag in (_SHARED_FG, _PER_FRAME_FG):
        if seq_tag in root:
            seq = root[seq_tag].value or []
            if any(tag in item for item in seq):
                return True
    return False


# Modules with conditionally included macros (see conditions.INCLUDED_IF).
_MACRO_MODULES = frozenset({"sr-document-content"})
# The SR content tree (PS3.3 C.17.3): the tables expand the Content Sequence (0040,A730) one
# level, as the root's items; an item's own Content Sequence holds items of the same table
# (the Document Content Macro applies to every content item), so that sequence is checked
# with its items' table again at every depth, down to MAX_CONTENT_DEPTH levels of the tree.
_CONTENT_SEQUENCE = 0x0040A730
_CONTENT_MODULE = "sr-document-content"
MAX_CONTENT_DEPTH = 100
_NUMBER_OF_FRAMES = 0x00280008


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


def _deferred_empty(item: Dataset, tag: int, elem: Any) -> bool | None:
    """:func:`_empty` of a deferred value, as if read raw, read a step at a time and only as
    far as its first byte that is not a space or NUL (a text VR; any other value of some
    length is not empty). None when it cannot be read here (then it is read as pydicom does)."""
    if elem.VR not in _TEXT_VRS:
        return False
    try:
        return all(not piece.strip(b" \x00") for piece in deferred_chunks(item, elem))
    except Exception:  # noqa: BLE001 - pydicom's deferred read says what is wrong
        return None


@dataclass(frozen=True, slots=True)
class _Rule:
    """One attribute of a module, with everything the check needs worked out once.

    Only attributes whose check can say something are kept: Type 1, 2, 1C and 2C, and sequences
    (their items are checked). A Type 3 attribute that is not a sequence is never reported.
    """

    tag: int
    kind: str
    step: str
    keyword: str  # paths.keyword_of(tag): the 1C/2C messages
    step_keyword: str  # the keyword of the path step: the 1/2 messages
    condition: Condition | None  # 1C/2C: when the attribute is required
    included: Condition | None  # macro modules: when the attribute applies at all
    children: tuple[_Rule, ...] | None
    # Whether its absence can be reported: Type 1 or 2, or 1C/2C with a registered condition.
    absence_matters: bool
    # 1C/2C that "shall not be present otherwise": the PS3.3 reference, else None.
    forbidden: str | None = None
    # A sequence that PS3.3 allows a single Item in: the PS3.3 reference, else None.
    single_item: str | None = None
    # The SR Content Sequence: its items hold this sequence again (checked with this rule).
    nested: bool = False


@dataclass(frozen=True, slots=True)
class _ModulePlan:
    """A module's row of an IOD, ready to check."""

    spec: ModuleSpec
    usage: str
    # Its top-level tags that show the module is in use: those no other module of the IOD has
    # (else those no Mandatory module has).
    own: frozenset[int]
    condition: Condition | None  # of a Conditional module
    reference: str
    rules: tuple[_Rule, ...]


@dataclass(frozen=True, slots=True)
class _IODPlan:
    """Everything :class:`ModuleChecker` needs for one IOD, built once per process."""

    modules: tuple[_ModulePlan, ...]
    module_of: dict[int, str]
    allowed: frozenset[int]
    overlays: bool  # an overlay module is in the IOD: its 60xx elements are allowed


def _rules(
    module: ModuleSpec, specs: Iterable[AttributeSpec], parent: str = ""
) -> tuple[_Rule, ...]:
    out = []
    for spec in specs:
        if spec.type not in ("1", "2", "1C", "2C") and not spec.children:
            continue  # Type 3, not a sequence: nothing to check
        keyword = paths.keyword_of(spec.tag)
        step = paths.step(spec.tag)
        condition = (
            attribute_condition(module.key, keyword) if spec.type in ("1C", "2C") else None
        )
        children = _rules(module, spec.children, keyword) if spec.children else None
        nested = (
            module.key == _CONTENT_MODULE and spec.tag == _CONTENT_SEQUENCE and not parent
            and children is not None and all(r.tag != _CONTENT_SEQUENCE for r in children)
        )
        out.append(_Rule(
            spec.tag, spec.type, step, keyword, step.rsplit("/", 1)[-1].split("(")[0],
            condition,
            inclusion_condition(module.key, keyword) if module.key in _MACRO_MODULES else None,
            children,
            spec.type in ("1", "2") or condition is not None,
            forbidden_otherwise(module.key, keyword) if condition is not None else None,
            single_item_reference(module.key, parent, keyword) if spec.children else None,
            nested,
        ))
    return tuple(out)


def _plan(tables: StandardTables, iod: IODSpec) -> _IODPlan:
    """The plan of an IOD, built on first use and kept with the tables.

    The registered conditions (:mod:`.conditions`) are looked up here, once: they are constants.
    """
    key = ("iod-plan", iod.key)
    found = tables.derived.get(key)
    if isinstance(found, _IODPlan):
        return found
    usages = [u for u in iod.modules if tables.has_module(u.module)]
    module_of: dict[int, str] = {}
    mandatory: set[int] = set()
    defined_by: dict[int, int] = {}  # tag -> how many modules of the IOD define it
    for usage in usages:
        spec = tables.module(usage.module)
        for t in spec.top_level_tags:
            module_of.setdefault(t, spec.name)
            defined_by[t] = defined_by.get(t, 0) + 1
        if usage.usage == "M":
            mandatory |= spec.top_level_tags
    overrides = overridden_types({u.module for u in usages})
    rules: dict[str, tuple[_Rule, ...]] = {}
    modules = []
    for usage in usages:
        spec = tables.module(usage.module)
        if spec.key not in rules:
            rules[spec.key] = _rules(spec, spec.attributes)
        module_rules = rules[spec.key]
        if spec.key in overrides:
            dropped = {t for t in spec.top_level_tags
                       if paths.keyword_of(t) in overrides[spec.key]}
            module_rules = tuple(r for r in module_rules if r.tag not in dropped)
        own = spec.top_level_tags - mandatory
        distinct = frozenset(t for t in own if defined_by[t] == 1)
        modules.append(_ModulePlan(
            spec, usage.usage, distinct or own,
            module_condition(iod.key, usage.module) if usage.usage == "C" else None,
            module_reference(spec.key, spec.name), module_rules,
        ))
    plan = _IODPlan(tuple(modules), module_of, tables.iod_top_level_tags(iod),
                    any(u.module in _OVERLAY_MODULES for u in iod.modules))
    tables.derived[key] = plan
    return plan


def _integer(ds: Dataset, tag: int) -> int | None:
    """The first value of an integer (IS, US, ...) element, or None when absent or not a
    number (the data dictionary layer reports a bad value)."""
    if tag not in ds._dict:
        return None
    try:
        value = ds[tag].value
    except Exception:  # noqa: BLE001 - a value pydicom cannot decode: reported elsewhere
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None  # type: ignore[index,arg-type]
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").strip(" \x00")
    try:
        return int(str(value).strip()) if value not in (None, "") else None
    except ValueError:
        return None


def _elements(item: Dataset) -> dict[int, Any]:
    """The elements of a dataset keyed by plain int (no Tag is built to look one up)."""
    return {int(k): v for k, v in item._dict.items()}


_NO_ROOT = Dataset()  # the root before check() (never read: building a Dataset costs ~20 us)


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
        self.root: Dataset = _NO_ROOT
        self._plan = _plan(tables, iod)
        self.report_extended = True

    def module_of(self, tag: int) -> str:
        """Name of the first module of the IOD that defines a top-level tag ("" if none)."""
        return self._plan.module_of.get(tag, "")

    def check(self, ds: Dataset) -> None:
        """Check *ds* against every applicable module of the IOD (PS3.3 Annex A)."""
        self.root = ds
        elements = _elements(ds)
        present = frozenset(elements)  # a set: isdisjoint walks the smaller side
        for module in self._plan.modules:
            if module.usage != "M":
                in_use = not module.own.isdisjoint(present)
                condition = module.condition
                required = condition is not None and condition(ds, ds)
                if required and module.spec.top_level_tags.isdisjoint(present):
                    # Not when attributes it shares with another module are there (the palette
                    # descriptors of the Image Pixel Module): its missing ones are reported.
                    self.out.add(
                        ERROR, "iod.module-missing", "", module.spec.name,
                        f"The {module.spec.name} Module is required because {condition.text}"  # type: ignore[union-attr]
                        " but none of its attributes is present.",
                        iod_reference(self.iod.key, self.iod.name),
                    )
                if not (required or in_use):
                    continue
            self._attributes(ds, elements, module.rules, "", module)
        if self.report_extended:
            self._extended(ds, present)

    def _attributes(
        self, item: Dataset, elements: dict[int, Any], rules: tuple[_Rule, ...], prefix: str,
        module: _ModulePlan, depth: int = 0,
    ) -> None:
        for rule in rules:
            tag = rule.tag
            kind = rule.kind
            if rule.included is not None and not rule.included(item, self.root):
                continue
            if tag not in elements:
                if rule.absence_matters:
                    self._absent(item, rule, prefix, module)
                continue
            elem = elements[tag]
            empty: bool | None = None
            if type(elem) is RawDataElement:
                # What the dataset holds now: a condition or a sequence check may have
                # converted it (the dataset keeps the key object: an identity lookup).
                elem = item._dict.get(elem.tag, elem)
                if is_deferred(elem):
                    # Not loaded (it may be a 200 MB document): as the raw value would be,
                    # empty when it is text of nothing but spaces and NULs.
                    empty = _deferred_empty(item, tag, elem)
                    if empty is None:
                        elem = item.get_item(tag)
                elif type(elem) is RawDataElement and elem.value is None:
                    try:
                        elem = item.get_item(tag)  # an undefined length: read, as get_item does
                    except Exception:  # noqa: BLE001 - a corrupt element (the dictionary layer
                        empty = elem.length == 0  # reports it): judged by its length
            if empty is None:
                empty = _empty(elem)
            if rule.forbidden is not None:
                self._forbidden(item, rule, prefix, module)
            if empty and (kind == "1" or kind == "1C"):
                path = prefix + rule.step
                self.out.add(
                    ERROR, f"iod.type{kind.lower()}-empty", path, module.spec.name,
                    f"Type {kind} attribute {rule.keyword} is present but has no value"
                    + (" (a Type 1 sequence needs at least one item)" if rule.children else "")
                    + f" ({module.spec.name} Module).",
                    module.reference if kind == "1" else "PS3.5 7.4.4",
                )
                continue
            if rule.children and not empty:
                try:
                    seq = item[tag].value
                except Exception:  # noqa: BLE001, S112 - reported by the dictionary layer
                    continue
                if not isinstance(seq, list) and type(seq).__name__ != "Sequence":
                    continue
                path = prefix + rule.step
                if rule.single_item is not None and len(seq) > 1:
                    self._item_count(rule, path, len(seq), "only a single Item shall be "
                                     "included", rule.single_item, module)
                if tag == _PER_FRAME_FG and not prefix:
                    self._per_frame_count(rule, path, len(seq), module)
                children = rule.children
                if rule.nested:
                    if depth >= MAX_CONTENT_DEPTH:
                        self._too_deep(path, module)
                        continue
                    children = children + (rule,)  # type: ignore[operator]
                for index, sub in enumerate(seq):
                    if isinstance(sub, Dataset):
                        self._attributes(
                            sub, _elements(sub), children, paths.item(path, index),  # type: ignore[arg-type]
                            module, depth + 1,
                        )

    def _forbidden(self, item: Dataset, rule: _Rule, prefix: str, module: _ModulePlan) -> None:
        """A present 1C/2C attribute that shall not be present unless its condition holds."""
        condition = rule.condition
        if condition is None or condition(item, self.root):
            return
        self.out.add(
            ERROR, "iod.not-allowed", prefix + rule.step, module.spec.name,
            f"Type {rule.kind} attribute {rule.keyword} is present but shall not be: it is "
            f"only allowed when {condition.text} ({module.spec.name} Module).",
            rule.forbidden or module.reference,
        )

    def _item_count(self, rule: _Rule, path: str, count: int, what: str, reference: str,
                    module: _ModulePlan) -> None:
        self.out.add(
            ERROR, "iod.item-count", path, module.spec.name,
            f"{rule.step_keyword} has {count} items; {what} ({module.spec.name} Module).",
            reference,
        )

    def _per_frame_count(self, rule: _Rule, path: str, count: int, module: _ModulePlan) -> None:
        """PS3.3 C.7.6.16: one Per-frame Functional Groups item per frame of this instance.

        Without Number of Frames (itself reported missing) the image has one frame, as the
        Pixel Data length check and dciodvfy take it; a value that is not a number is not
        compared (the data dictionary layer reports it)."""
        if _NUMBER_OF_FRAMES in self.root._dict:
            frames = _integer(self.root, _NUMBER_OF_FRAMES)
        else:
            frames = 1
        if frames is not None and frames >= 0 and count != frames:
            self._item_count(
                rule, path, count,
                f"the number of Items shall equal Number of Frames ({frames})",
                "PS3.3 C.7.6.16", module,
            )

    def _too_deep(self, path: str, module: _ModulePlan) -> None:
        self.out.add(
            INFO, "iod.content-depth", path, module.spec.name,
            f"The content tree is deeper than {MAX_CONTENT_DEPTH} levels; content items below "
            "that depth were not checked against the content item table.",
            "PS3.3 C.17.3",
        )

    def _absent(self, item: Dataset, rule: _Rule, prefix: str, module: _ModulePlan) -> None:
        tag = rule.tag
        kind = rule.kind
        if prefix and tag not in _MANDATORY_GROUPS and _in_functional_groups(prefix):
            return  # functional group macro usage is not in the tables
        if prefix and tag in _MANDATORY_GROUPS and _functional_group_anywhere(self.root, tag):
            return  # present in the shared or in the per-frame groups
        if prefix and tag == _FRAME_CONTENT and self.iod.key in _FRAME_CONTENT_OPTIONAL:
            return  # User optional in this IOD's functional group table
        if prefix and tag in _MANDATORY_GROUPS:
            required = functional_group_condition(self.iod.key, rule.keyword)
            if required is not None and not required(self.root, self.root):
                return  # Conditional in this IOD's functional group table, and not required
        if kind == "1" or kind == "2":
            self.out.add(
                ERROR, f"iod.type{kind}-missing", prefix + rule.step, module.spec.name,
                f"Type {kind} attribute {rule.step_keyword} is missing ({module.spec.name} Module"
                + (", it may be empty but must be present)." if kind == "2" else ")."),
                module.reference,
            )
        elif kind in ("1C", "2C"):
            condition = rule.condition
            if condition is not None and condition(item, self.root):
                self.out.add(
                    ERROR, f"iod.type{kind.lower()}-missing", prefix + rule.step,
                    module.spec.name,
                    f"Type {kind} attribute {rule.keyword} is missing; it is required because "
                    f"{condition.text} ({module.spec.name} Module).",
                    module.reference,
                )

    def _extended(self, ds: Dataset, present: frozenset[int]) -> None:
        allowed = self._plan.allowed
        extra = [
            t for t in present
            if t not in allowed and not (t >> 16) & 1 and (t >> 16) not in _IGNORED_GROUPS
            and t not in _ALWAYS_ALLOWED and t & 0xFFFF != 0
            and not (self._plan.overlays and _overlay_element(t))
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
