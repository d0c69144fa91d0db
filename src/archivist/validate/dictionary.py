"""Data dictionary and value encoding layer: PS3.5 Section 6 and 7, PS3.6 Section 6.

For every element of the dataset, at every sequence depth:

* the tag is known to the PS3.6 dictionary, not retired, and private elements have a creator
  (PS3.5 7.8.1);
* the explicit VR matches the dictionary (PS3.5 6.2, PS3.6 6);
* the number of values matches the dictionary VM (PS3.5 6.4);
* each value has a legal length and uses the characters its VR allows (PS3.5 Table 6.2-1), and
  text outside the default repertoire is declared by Specific Character Set (PS3.5 6.1.2.3);
* enumerated values and defined terms (PS3.3, see :mod:`.enumerations`).

Values read from a file are checked on their raw bytes without converting them, which keeps this
layer at a fraction of a millisecond for a typical image header.

A value pydicom deferred (read with ``defer_size``, as ingest reads objects) is checked as if it
had been read raw, without loading it where its length is all a check needs: binary and "other"
VRs (OB, OW... a 200 MB private OB or Encapsulated Document) cost nothing more than their
header. A deferred text value is read raw for its check and not kept in the dataset.
"""

from __future__ import annotations

import calendar
import functools
import os
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any

from pydicom import datadict
from pydicom.charset import TEXT_VR_DELIMS, convert_encodings, decode_bytes
from pydicom.datadict import get_entry, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from archivist.validate import paths
from archivist.validate.enumerations import ENUMERATIONS, Enumeration
from archivist.validate.findings import Collector, Severity

ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

# PS3.6 data dictionary: tag -> (VR, VM, name, retired, keyword).
DicomDictionary: dict[int, tuple[str, str, str, str, str]] = datadict.DicomDictionary  # type: ignore[attr-defined]

# PS3.5 Table 6.2-1: maximum length (in characters) of one value, for the string VRs.
MAX_LENGTH = {
    "AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "LT": 10240,
    "PN": 64, "SH": 16, "ST": 1024, "TM": 14, "UI": 64,
}
# String VRs whose values are separated by backslash (PS3.5 6.4).
MULTI_VALUED_TEXT = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UC", "UI"}
)
# String VRs that hold exactly one value, where a backslash is an ordinary character.
SINGLE_VALUED_TEXT = frozenset({"LT", "ST", "UT", "UR"})
TEXT_VRS = MULTI_VALUED_TEXT | SINGLE_VALUED_TEXT
# VRs affected by Specific Character Set (PS3.5 6.1.2.3).
CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "PN", "UC", "UT"})
# The value representations of PS3.5 Table 6.2-1: an explicit VR that is none of them is a
# corrupt element, whose value pydicom cannot decode.
VALID_VRS = frozenset({
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
    "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
    "UR", "US", "UT", "UV",
})
# Fixed size of one binary value (PS3.5 Table 6.2-1).
BINARY_SIZE = {"AT": 4, "FL": 4, "FD": 8, "SL": 4, "SS": 2, "UL": 4, "US": 2, "SV": 8, "UV": 8}
# Size of the unit of the "other" VRs; the value length is a multiple of it.
OTHER_SIZE = {"OB": 1, "OD": 8, "OF": 4, "OL": 4, "OV": 8, "OW": 2, "UN": 1}

_CS = re.compile(r"[A-Z0-9 _]*")
_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,6})?)?)?")
_DT = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,6})?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?"
)
_DS = re.compile(r" *[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)? *")
_IS = re.compile(r" *[+-]?\d+ *")
_UI = re.compile(r"(?:0|[1-9]\d*)(?:\.(?:0|[1-9]\d*))*")
_AS = re.compile(r"\d{3}[DWMY]")
# RFC 3986 2.1-2.3: the characters a URI may hold (unreserved, reserved, '%' of an escape).
_UR = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_UR_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_PROBLEM = "control characters are not allowed"
_TEXT_CONTROL_PROBLEM = "control characters other than LF, FF, CR, TAB and ESC"
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")  # LF FF CR TAB ESC allowed
_KNOWN_CHARSETS = frozenset(
    {
        "ISO_IR 6", "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 144",
        "ISO_IR 127", "ISO_IR 126", "ISO_IR 138", "ISO_IR 148", "ISO_IR 203", "ISO_IR 13",
        "ISO_IR 166", "ISO 2022 IR 6", "ISO 2022 IR 100", "ISO 2022 IR 101", "ISO 2022 IR 109",
        "ISO 2022 IR 110", "ISO 2022 IR 144", "ISO 2022 IR 127", "ISO 2022 IR 126",
        "ISO 2022 IR 138", "ISO 2022 IR 148", "ISO 2022 IR 203", "ISO 2022 IR 13",
        "ISO 2022 IR 166", "ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149",
        "ISO 2022 IR 58", "ISO_IR 192", "GB18030", "GBK",
    }
)
_SINGLE_BYTE_CHARSETS = frozenset(c for c in _KNOWN_CHARSETS if "IR 87" not in c) - {
    "ISO_IR 192", "GB18030", "GBK", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58",
}
# The terms that declare the default repertoire and nothing else (PS3.3 Table C.12-2, C.12-3).
_DEFAULT_CHARSETS = frozenset({"ISO_IR 6", "ISO 2022 IR 6"})
# Terms of character sets that have no code extensions (PS3.3 Table C.12-5): the only value.
_NO_CODE_EXTENSIONS = frozenset({"ISO_IR 192", "GB18030", "GBK"})
_ABSENT = "Specific Character Set (0008,0005) is absent"

PS35_VR = "PS3.5 6.2"
PS35_VM = "PS3.5 6.4"

_ENUM_BY_TAG: dict[int, tuple[Enumeration, ...]] = {}
for _kw, _enums in ENUMERATIONS.items():
    _tag = tag_for_keyword(_kw)
    if _tag is not None:
        _ENUM_BY_TAG[_tag] = _enums


@functools.lru_cache(maxsize=64)
def parse_vm(vm: str) -> tuple[int, float, int]:
    """Parse a PS3.6 VM (``1``, ``1-3``, ``1-n``, ``2-2n``) into (minimum, maximum, step)."""
    vm = vm.split(" or ")[0].strip()
    if "-" not in vm:
        n = int(vm)
        return n, n, 1
    low, high = vm.split("-", 1)
    lo = int(low)
    if high == "n":
        return lo, float("inf"), 1
    if high.endswith("n"):
        return lo, float("inf"), int(high[:-1] or 1)
    return lo, int(high), 1


def _entry(tag: int) -> tuple[str, str, str, str, str] | None:
    entry = DicomDictionary.get(tag)
    if entry is not None:
        return entry
    if tag >> 16 in (0x0000, 0x0002, 0x0004):
        return None
    try:
        return get_entry(tag)  # repeating groups such as (60xx,eeee)
    except KeyError:
        return None


# What a check found, without where: (severity, rule id, message, reference).
_Result = tuple[Severity, str, str, str]


class _Action(Enum):
    """What follows the dictionary checks of an element."""

    NONE = 0  # nothing: not in the dictionary, VR mismatch, or a VR the value cannot settle
    VALUE = 1  # check the value (VM, length, characters, enumerations)
    ITEMS = 2  # walk the sequence's items


# The dictionary checks of a public element depend only on its tag and the VR it came with:
# findings (severity, rule id, message, reference), what follows, VR, VM and name to check by.
_ElementPlan = tuple[tuple[_Result, ...], _Action, str, str, str]
_ELEMENT_PLANS: dict[tuple[int, str | None], _ElementPlan] = {}
_ELEMENT_PLANS_MAX = 16384


def _element_plan(tag: int, wire: str | None) -> _ElementPlan:
    """Dictionary checks of a public element: known, retired, VR against PS3.6 (PS3.5 6.2)."""
    group = tag >> 16
    entry = _entry(tag)
    if entry is None:
        if group != 0x0002 and tag & 0xFFFF != 0:
            return ((
                WARNING, "dict.unknown-tag",
                (f"Attribute {tag >> 16:04X},{tag & 0xFFFF:04X} is not in the PS3.6 data "
                 "dictionary."),
                "PS3.6 6",
            ),), _Action.NONE, "", "", ""
        if tag & 0xFFFF == 0 and group != 0x0002:
            return ((
                WARNING, "dict.group-length",
                "Group Length elements are retired outside the File Meta Information.",
                "PS3.5 7.2",
            ),), _Action.NONE, "", "", ""
        return (), _Action.NONE, "", "", ""
    results: list[_Result] = []
    dict_vr, dict_vm, name, retired, _keyword = entry
    if retired:
        results.append(
            (WARNING, "dict.retired", f"{name} is retired and should not be sent.", "PS3.6 6")
        )
    wire_vr = wire if wire and " or " not in wire else None
    vr = wire_vr or dict_vr
    if wire_vr == "UN" and dict_vr != "UN":
        results.append((
            WARNING, "dict.vr-un",
            f"{name} is encoded with VR UN; the dictionary gives {dict_vr}.",
            "PS3.5 6.2.2",
        ))
        vr = dict_vr  # the value is still checked against the dictionary VR
    elif wire_vr and " or " not in dict_vr and wire_vr != dict_vr:
        if not (dict_vr in ("OB", "OW") and wire_vr in ("OB", "OW")):
            results.append((
                ERROR, "dict.vr-mismatch",
                f"{name} has VR {wire_vr}; the dictionary gives {dict_vr}.", PS35_VR,
            ))
            return tuple(results), _Action.NONE, vr, dict_vm, name
    elif wire_vr and " or " in dict_vr and wire_vr not in dict_vr.split(" or ") and (
        wire_vr != "UN"
    ):
        results.append((
            ERROR, "dict.vr-mismatch",
            f"{name} has VR {wire_vr}; the dictionary gives {dict_vr}.", PS35_VR,
        ))
        return tuple(results), _Action.NONE, vr, dict_vm, name
    if vr == "SQ":
        action = _Action.ITEMS
    elif " or " in vr:
        action = _Action.NONE
    else:
        action = _Action.VALUE
    return tuple(results), action, vr, dict_vm, name


class ElementChecker:
    """Walks one dataset and reports dictionary-level findings into a :class:`Collector`.

    Parameters
    ----------
    out : Collector
        Where findings go.
    module_of : callable
        Maps a top-level tag to the name of the module that defines it ("" when none).
    """

    def __init__(self, out: Collector, module_of: Callable[[int], str]) -> None:
        self.out = out
        self.module_of = module_of
        # Why only the default repertoire may be used ("" when a character set declares more):
        # Specific Character Set absent, or declaring ISO 2022 IR 6 alone (PS3.5 6.1.2.3).
        self.default_repertoire = _ABSENT
        self.single_byte = True
        # Python codecs of a multi-byte Specific Character Set, to count a raw value's
        # characters (PS3.5 Table 6.2-1 limits lengths in characters, not bytes).
        self.encodings: list[str] = []

    def check_meta(self, meta: Dataset) -> None:
        """Check the File Meta Information elements like any others (PS3.10 7.1)."""
        self._walk(meta, "", "File Meta Information")

    def check(self, ds: Dataset) -> None:
        """Check every element of *ds*, recursively (PS3.5 6, 7; PS3.6 6)."""
        try:
            charset = ds.get("SpecificCharacterSet")
        except Exception:  # noqa: BLE001 - a corrupt element: reported where it is walked
            charset = None
        values = _as_list(charset) if charset else []
        declared = [v for v in values if v]
        if not declared:
            self.default_repertoire = (
                "Specific Character Set (0008,0005) is empty" if 0x00080005 in ds._dict
                else _ABSENT)
        elif all(v in _DEFAULT_CHARSETS for v in declared):
            terms = " and ".join(sorted(set(declared)))
            self.default_repertoire = f"Specific Character Set (0008,0005) declares only {terms}"
        else:
            self.default_repertoire = ""
        self.single_byte = all(v in _SINGLE_BYTE_CHARSETS or v == "" for v in values)
        self.encodings = [] if self.single_byte else _python_encodings(values)
        for value in values:
            if value and value not in _KNOWN_CHARSETS:
                self.out.add(
                    ERROR, "dict.charset-unknown", paths.step(0x00080005), "SOP Common",
                    f"Specific Character Set value {_quoted(value)} is not a defined term.",
                    "PS3.3 C.12.1.1.2",
                )
        combination = _combination_message(values) if len(values) > 1 else ""
        if combination:  # a term defined, but not for a value of several (one finding a path)
            self.out.add(ERROR, "dict.charset-unknown", paths.step(0x00080005),
                         "SOP Common", combination, "PS3.3 C.12.1.1.2")
        self._walk(ds, "", None)

    def _deferred_private(self, ds: Dataset, tag: int, elem: Any) -> Any:
        """The element to walk the items of, for a private element whose value was deferred,
        or None when it is no sequence: checked as if it had been read raw, the value is
        needed only when its VR is SQ, or unknown (implicit VR) with an item at its start."""
        if elem.VR == "SQ":
            return ds.get_item(tag)
        if elem.VR is not None:
            return None  # explicit VR, not SQ (UN included): a raw one is not walked either
        try:
            head = deferred_prefix(ds, elem, 4)
        except Exception:  # noqa: BLE001 - unreadable here: pydicom's way says why
            return ds.get_item(tag)
        if head not in (_ITEM_LE, _ITEM_BE):
            return None
        return elem

    def _walk(self, ds: Dataset, prefix: str, module: str | None) -> None:
        module_of = self.module_of
        step = paths.step
        tags: frozenset[int] | None = None  # of this dataset, for the private creator checks
        # The elements as they are now (the dict, not get_item: no Tag is built per element).
        for key, elem in list(ds._dict.items()):
            tag = int(key)
            mod = module if module is not None else module_of(tag)
            path = prefix + step(tag)
            if type(elem) is RawDataElement and elem.VR is not None and (
                    elem.VR not in VALID_VRS and " or " not in elem.VR):
                self._invalid_vr(tag, elem.VR, path, mod)
                continue  # pydicom cannot decode its value: nothing more to check
            deferred = is_deferred(elem)
            if type(elem) is RawDataElement and elem.value is None and not deferred:
                elem = ds.get_item(tag)  # undefined length deferred: read, as get_item does
            group = tag >> 16
            if group & 1:
                if tags is None:
                    tags = frozenset(map(int, ds._dict))
                self._private(tags, tag, path, mod)
                if deferred:
                    elem = self._deferred_private(ds, tag, elem)
                    if elem is None:
                        continue
                if getattr(elem, "VR", None) == "SQ" or (
                    elem.VR is None and _is_sequence_value(ds, tag)
                ):
                    self._items(ds, tag, path, mod)
                continue
            wire = elem.VR
            plan = _ELEMENT_PLANS.get((tag, wire))
            if plan is None:
                plan = _element_plan(tag, wire)
                if len(_ELEMENT_PLANS) >= _ELEMENT_PLANS_MAX:
                    _ELEMENT_PLANS.clear()
                _ELEMENT_PLANS[(tag, wire)] = plan
            results, action, vr, dict_vm, name = plan
            for severity, rule_id, message, reference in results:
                self.out.add(severity, rule_id, path, mod, message, reference)
            if action is _Action.VALUE:
                if deferred and vr not in BINARY_SIZE and vr not in OTHER_SIZE:
                    if getattr(elem, "length", 0) > _WHOLE_TEXT_MAX and self._large_text(
                            ds, elem, vr, dict_vm, name, path, mod):
                        continue
                    # Characters to check: the raw bytes, read here and not kept.
                    elem = _read_raw(ds, tag, elem)
                    deferred = type(elem) is RawDataElement and elem.value is None
                self._value(tag, elem, vr, dict_vm, name, path, mod, deferred)
            elif action is _Action.ITEMS:
                self._items(ds, tag, path, mod)

    def _invalid_vr(self, tag: int, wire: str, path: str, module: str) -> None:
        entry = _entry(tag) if not (tag >> 16) & 1 else None
        if entry is not None:
            what, known = entry[2], f"; the dictionary gives {entry[0]}"
        else:
            what, known = f"Attribute ({tag >> 16:04X},{tag & 0xFFFF:04X})", ""
        self.out.add(
            ERROR, "dict.vr-mismatch", path, module,
            f"{what} has VR {wire!r}, which is not a value representation of PS3.5{known}; "
            "its value cannot be read.", PS35_VR,
        )

    def _items(self, ds: Dataset, tag: int, path: str, module: str) -> None:
        try:
            seq = ds[tag].value
        except Exception as exc:  # noqa: BLE001 - a broken sequence is a finding, not a crash
            self.out.add(
                ERROR, "encoding.sequence", path, module,
                f"The sequence cannot be decoded: {exc}", "PS3.5 7.5",
            )
            return
        if not isinstance(seq, list) and type(seq).__name__ != "Sequence":
            return
        for index, item in enumerate(seq):
            if isinstance(item, Dataset):
                self._walk(item, paths.item(path, index), module)

    def _private(self, tags: frozenset[int], tag: int, path: str, module: str) -> None:
        group, elem = tag >> 16, tag & 0xFFFF
        if group in (0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF):
            self.out.add(
                ERROR, "dict.illegal-group", path, module,
                f"Group {group:04X} may not be used for private data elements.", "PS3.5 7.8.1",
            )
            return
        if 0x0010 <= elem <= 0x00FF or elem == 0:
            return
        if elem < 0x1000:
            self.out.add(
                ERROR, "dict.private-reserved", path, module,
                "Private elements (gggg,0001-000F) and (gggg,0100-0FFF) are reserved.",
                "PS3.5 7.8.1",
            )
            return
        creator = (group << 16) | (elem >> 8)
        if creator not in tags:
            self.out.add(
                ERROR, "dict.private-creator-missing", path, module,
                f"Private element has no Private Creator ({group:04X},{elem >> 8:04X}).",
                "PS3.5 7.8.1",
            )

    def _large_text(self, ds: Dataset, elem: Any, vr: str, dict_vm: str, name: str, path: str,
                    module: str) -> bool:
        """Check a deferred text value over :data:`_WHOLE_TEXT_MAX` bytes a chunk at a time,
        never holding it whole (a 200 MB UT): its length against the VR's maximum (then no
        more is read), its number of values, control characters and the default repertoire.
        False when it cannot be read here (the caller reads it pydicom's way)."""
        length = elem.length
        if length % 2:
            self.out.add(
                ERROR, "encoding.odd-length", path, module,
                f"{name} has an odd value length ({length}).", "PS3.5 7.1.1",
            )
        limit = MAX_LENGTH.get(vr)
        multi = vr in MULTI_VALUED_TEXT
        if limit and vr != "PN" and not multi and (self.single_byte or vr not in CHARSET_VRS):
            self.out.add(
                ERROR, "dict.value-invalid", path, module,
                f"Value 1 of {name} ({vr}), {length} bytes: length {length} exceeds the "
                f"maximum of {limit}.", "PS3.5 Table 6.2-1",
            )
            return True
        control = _TEXT_CONTROL if vr in ("ST", "LT", "UT") else (
            _CONTROL if vr in ("SH", "LO", "AE", "UC") else None)
        values, problem, non_ascii = 1, "", False
        try:
            for chunk in deferred_chunks(ds, elem):
                text = bytes(chunk).decode("latin-1")
                if multi:
                    values += text.count("\\")
                if control is not None and not problem and control.search(
                        text if control is _TEXT_CONTROL else text.replace("\x1b", "")):
                    problem = (_TEXT_CONTROL_PROBLEM if control is _TEXT_CONTROL
                               else _CONTROL_PROBLEM)
                non_ascii = non_ascii or not text.isascii()
        except Exception:  # noqa: BLE001 - pydicom's way says what is wrong
            return False
        message = _vm_problem(values, dict_vm, name)
        if message:
            self.out.add(ERROR, "dict.vm", path, module, message, PS35_VM)
        if problem:
            self.out.add(
                ERROR, "dict.value-invalid", path, module,
                f"A value of {name} ({vr}), {length} bytes in all: {problem}.",
                "PS3.5 Table 6.2-1",
            )
        if vr in CHARSET_VRS and self.default_repertoire and non_ascii:
            self.out.add(ERROR, "dict.character-repertoire", path, module,
                         _repertoire_message(name, self.default_repertoire), "PS3.5 6.1.2.3")
        return True

    def _value(
        self, tag: int, elem: Any, vr: str, dict_vm: str, name: str, path: str, module: str,
        deferred: bool = False,
    ) -> None:
        """Check one value; `deferred`: a raw element whose value was not read (binary and
        "other" VRs), checked by its length alone, as its raw bytes would be."""
        raw = elem.value
        length: int | None
        if deferred:
            is_raw, length = True, elem.length
        elif type(elem) is RawDataElement:
            is_raw = elem.is_raw and isinstance(raw, (bytes, bytearray))
            length = elem.length
        else:
            is_raw = isinstance(raw, (bytes, bytearray)) and getattr(elem, "is_raw", False)
            length = getattr(elem, "length", None) if is_raw else None
        if is_raw and length is not None and length != 0xFFFFFFFF and length % 2:
            self.out.add(
                ERROR, "encoding.odd-length", path, module,
                f"{name} has an odd value length ({length}).", "PS3.5 7.1.1",
            )
        if vr in BINARY_SIZE:
            size = BINARY_SIZE[vr]
            if is_raw:
                nbytes: int = elem.length if deferred else len(raw)
                if nbytes % size:
                    self.out.add(
                        ERROR, "dict.value-length", path, module,
                        f"{name} has a length of {nbytes} bytes, not a multiple of {size} "
                        f"for VR {vr}.",
                        "PS3.5 Table 6.2-1",
                    )
                    return
                count = nbytes // size
            elif raw is None or raw == "" or raw == b"":
                count = 0
            elif isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue":
                count = len(raw)
            else:
                count = 1
            self._vm(count, dict_vm, name, path, module)
            enums = _ENUM_BY_TAG.get(tag)
            if enums and count and not deferred:
                numbers = _binary_numbers(elem, raw, vr, is_raw)
                if numbers:
                    found: list[_Result] = []
                    _enumerations(enums, [str(n) for n in numbers], name, found)
                    for severity, rule_id, message, reference in found:
                        self.out.add(severity, rule_id, path, module, message, reference)
            return
        if vr in OTHER_SIZE:
            return
        if vr not in TEXT_VRS:
            return
        # Whether len() of the text counts characters: a raw value of a VR that Specific
        # Character Set affects is read byte for byte, unless decoded in a multi-byte set.
        in_characters = True
        if is_raw:
            decoded = None
            if vr in CHARSET_VRS and not self.single_byte:
                decoded = _characters(bytes(raw), self.encodings)
            if decoded is not None:
                text = decoded.rstrip(" ")
            else:
                text = bytes(raw).decode("latin-1")
                text = text.rstrip("\x00 ") if vr == "UI" else text.rstrip(" ")
                if vr == "UI":
                    text = text.rstrip("\x00")
                    if bytes(raw).rstrip(b"\x00").endswith(b" "):
                        self._uid_space(name, path, module)
                in_characters = self.single_byte or vr not in CHARSET_VRS
        elif raw is None:
            text = ""
        elif isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue":
            text = "\\".join(_str(v) for v in raw)
        else:
            text = _str(raw)
        if text == "":
            return
        cacheable = vr not in _UNCACHED_VRS and len(text) <= _CACHED_TEXT_MAX
        key = (tag, vr, text, in_characters, self.default_repertoire)
        results = _TEXT_RESULTS.get(key) if cacheable else None
        if results is None:
            results = _text_results(
                tag, vr, dict_vm, name, text, in_characters, self.default_repertoire
            )
            if cacheable:
                if len(_TEXT_RESULTS) >= _TEXT_RESULTS_MAX:
                    _TEXT_RESULTS.clear()
                _TEXT_RESULTS[key] = results
        for severity, rule_id, message, reference in results:
            self.out.add(severity, rule_id, path, module, message, reference)

    def _uid_space(self, name: str, path: str, module: str) -> None:
        """A UID padded with a space (PS3.5 6.2: UI is padded with a single NUL, and the
        space is not in its repertoire). A warning, not an error: it is common in the field,
        every reader strips it, and an error would refuse such objects under
        ``validation_policy=reject``."""
        self.out.add(
            WARNING, "dict.uid-space-padding", path, module,
            f"{name} (UI) is padded with a trailing space; a UID is padded to an even length "
            "with a single NUL (00H), and a space is not in the UI character repertoire.",
            "PS3.5 6.2, 9.1",
        )

    def _vm(self, count: int, dict_vm: str, name: str, path: str, module: str) -> None:
        message = _vm_problem(count, dict_vm, name)
        if message:
            self.out.add(ERROR, "dict.vm", path, module, message, PS35_VM)


#: A deferred text value longer than this is checked a chunk at a time (``_large_text``),
#: never read whole: no standard text attribute comes near it but UT, UR and UC.
_WHOLE_TEXT_MAX = 1 << 20
#: Of a value quoted in a finding, at most this many characters (a finding quoting a 500 KB
#: value would be stored and shown whole).
_QUOTED_MAX = 256


def _quoted(value: str) -> str:
    if len(value) <= _QUOTED_MAX:
        return repr(value)
    return f"{value[:_QUOTED_MAX]!r}... ({len(value)} characters)"


# The results of recent text values (the same dates, codes and names recur from object to
# object), keyed by (tag, VR, text, single-byte character set, default repertoire).
_TEXT_RESULTS: dict[tuple[int, str, str, bool, str], tuple[_Result, ...]] = {}
_TEXT_RESULTS_MAX = 8192
# Free text (names, IDs, descriptions: the VRs of Specific Character Set) is never kept, so
# no patient's name or ID stays in memory after the object; nor is a long value.
_UNCACHED_VRS = CHARSET_VRS
_CACHED_TEXT_MAX = 128


def _text_results(
    tag: int, vr: str, dict_vm: str, name: str, text: str, in_characters: bool,
    default_repertoire: str,
) -> tuple[_Result, ...]:
    """Check the text of a string element: VM, each value, repertoire, enumerations;
    `in_characters`: the text's length is its number of characters (not raw bytes of a
    multi-byte character set); `default_repertoire`: why only the default repertoire may be
    used, "" when not."""
    out: list[_Result] = []
    values = text.split("\\") if vr in MULTI_VALUED_TEXT else [text]
    message = _vm_problem(len(values), dict_vm, name)
    if message:
        out.append((ERROR, "dict.vm", message, PS35_VM))
    for number, value in enumerate(values, 1):
        problem = _check_string(vr, value, in_characters)
        if problem:
            out.append((
                ERROR, "dict.value-invalid",
                f"Value {number} of {name} ({vr}) = {_quoted(value)}: {problem}.",
                "PS3.5 Table 6.2-1",
            ))
    if vr in CHARSET_VRS and default_repertoire and not text.isascii():
        out.append((ERROR, "dict.character-repertoire",
                    _repertoire_message(name, default_repertoire), "PS3.5 6.1.2.3"))
    enums = _ENUM_BY_TAG.get(tag)
    if enums:
        _enumerations(enums, values, name, out)
    return tuple(out)


def _repertoire_message(name: str, why: str) -> str:
    return f"{name} uses characters outside the default repertoire but {why}."


def _combination_message(values: list[str]) -> str:
    """Why a Specific Character Set of several `values` is wrong, "" when it is not: with more
    than one value, code extensions are in use and every value is an ISO 2022 defined term
    (PS3.3 C.12.1.1.2, Tables C.12-3 and C.12-4), so a term of Table C.12-2 or C.12-5 is not
    a defined term there; an unknown term is reported on its own."""
    wrong = []
    for number, value in enumerate(values, 1):
        if not value or value not in _KNOWN_CHARSETS or value.startswith("ISO 2022 "):
            continue
        if value in _NO_CODE_EXTENSIONS:
            wrong.append(f"value {number} {value!r} is not (it can only be the single value)")
        else:
            wrong.append(f"value {number} {value!r} is not (use {'ISO 2022 ' + value[4:]!r})")
    if not wrong:
        return ""
    return (f"Specific Character Set has {len(values)} values, so code extensions are in use "
            "and every value must be an ISO 2022 defined term: " + "; ".join(wrong) + ".")


def _python_encodings(values: list[str]) -> list[str]:
    """The Python codecs of Specific Character Set `values`, [] when one is unknown."""
    if any(v and v not in _KNOWN_CHARSETS for v in values):
        return []
    try:
        return convert_encodings(list(values))
    except (LookupError, ValueError):
        return []


def _characters(data: bytes, encodings: list[str]) -> str | None:
    """`data` decoded in a multi-byte character set (PS3.5 6.1.2.5: ISO 2022 escapes reset
    at value, component and line delimiters), or None when it does not decode cleanly."""
    if not encodings:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns, then replaces what does not decode
        try:
            return decode_bytes(data, encodings, {0x5C, 0x5E, 0x3D} | TEXT_VR_DELIMS)
        except (UserWarning, LookupError, ValueError):
            return None


def _vm_problem(count: int, dict_vm: str, name: str) -> str:
    """The message when *count* values do not fit the dictionary VM, or ""."""
    if count == 0:
        return ""
    low, high, step = parse_vm(dict_vm)
    if count < low or count > high or (step > 1 and count % step):
        return f"{name} has {count} value(s); the dictionary requires VM {dict_vm}."
    return ""


def _check_string(vr: str, value: str, in_characters: bool) -> str:
    """Return what is wrong with one value of a string VR, or ""; `in_characters`: the
    value's length is its number of characters, which PS3.5 Table 6.2-1 limits."""
    limit = MAX_LENGTH.get(vr)
    if limit and vr != "PN" and len(value) > limit and (in_characters or vr not in CHARSET_VRS):
        return f"length {len(value)} exceeds the maximum of {limit}"
    if vr == "CS":
        return "" if _CS.fullmatch(value) else "only A-Z, 0-9, space and underscore are allowed"
    if vr == "UI":
        if not _UI.fullmatch(value):
            return "a UID is digits in components separated by '.', without leading zeros"
        if not value.strip("0."):
            return "a UID of nothing but zero components"
        return ""
    if vr == "DA":
        return _check_date(value.strip())
    if vr == "TM":
        return _check_time(value.strip())
    if vr == "DT":
        return _check_datetime(value.strip())
    if vr == "DS":
        return "" if _DS.fullmatch(value) else "not a decimal string"
    if vr == "IS":
        if not _IS.fullmatch(value):
            return "not an integer string"
        if not -(2**31) <= int(value) < 2**31:
            return "outside the range of a 32-bit signed integer"
        return ""
    if vr == "AS":
        return "" if _AS.fullmatch(value) else "an age string is nnnD, nnnW, nnnM or nnnY"
    if vr == "UR":
        return _check_uri(value)
    if vr in ("SH", "LO", "AE", "UC"):
        if _CONTROL.search(value.replace("\x1b", "")):
            return _CONTROL_PROBLEM
        if vr == "AE" and not value.isascii():
            return "characters outside the default repertoire are not allowed"
        return ""
    if vr in ("ST", "LT", "UT"):
        return _TEXT_CONTROL_PROBLEM if _TEXT_CONTROL.search(value) else ""
    if vr == "PN":
        groups = value.split("=")
        if len(groups) > 3:
            return "more than three component groups"
        for group in groups:
            if group.count("^") > 4:
                return "more than five components in a component group"
            if in_characters and len(group) > 64:
                return f"component group of {len(group)} characters exceeds 64"
        if _CONTROL.search(value.replace("\x1b", "")):
            return "control characters are not allowed"
    return ""


def _check_uri(value: str) -> str:
    """What is wrong with a UR value (its trailing spaces, padding, removed), or "".

    PS3.5 6.2: a Universal Resource Identifier or Locator as RFC 3986 defines it, with no
    leading spaces. Only the characters of RFC 3986 2.1-2.3 are allowed (no space, control or
    non-ASCII character: those are percent-encoded), and '%' starts an escape of two hexadecimal
    digits.
    """
    if value.startswith(" "):
        return "leading spaces are not allowed in a URI"
    if not _UR.fullmatch(value):
        bad = next(ch for ch in value if not _UR.fullmatch(ch))
        return f"{bad!r} is not allowed in a URI (RFC 3986: percent-encode it)"
    if _UR_ESCAPE.search(value):
        return "'%' not followed by two hexadecimal digits (RFC 3986 2.1)"
    return ""


def _enumerations(
    enums: tuple[Enumeration, ...], values: list[str], name: str, out: list[_Result]
) -> None:
    for enum in enums:
        indexed = (
            list(enumerate(values))
            if enum.index is None
            else ([(enum.index, values[enum.index])] if len(values) > enum.index else [])
        )
        for index, value in indexed:
            value = value.strip()
            if value == "" or value in enum.values:
                continue
            if enum.enumerated:
                out.append((
                    ERROR, "iod.enumerated-value",
                    (f"Value {index + 1} of {name} is {value!r}, not one of the enumerated "
                     f"values {', '.join(sorted(enum.values))}."),
                    enum.reference,
                ))
            else:
                out.append((
                    WARNING, "iod.defined-term",
                    f"Value {index + 1} of {name} is {value!r}, not a defined term.",
                    enum.reference,
                ))


# struct formats of the integer binary VRs (the enumerations of binary attributes are integers).
_INTEGER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q"}


def _binary_numbers(elem: Any, raw: Any, vr: str, is_raw: bool) -> list[int]:
    """The integers of a binary value, from its raw bytes in the element's byte order or as
    pydicom decoded them; [] when they are not integers or the byte order is unknown."""
    code = _INTEGER_FORMATS.get(vr)
    if code is None:
        return []
    if is_raw:
        little = getattr(elem, "is_little_endian", None)
        if little is None:
            return []
        data = bytes(raw)
        count = len(data) // struct.calcsize(code)
        return list(struct.unpack(("<" if little else ">") + code * count, data))
    values = raw if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" else [raw]
    return [v for v in values if isinstance(v, int)]


def _check_date(value: str) -> str:
    match = _DA.fullmatch(value)
    if not match:
        return "a date is YYYYMMDD"
    if not _real_date(int(match[1]), int(match[2]), int(match[3])):
        return "not a valid calendar date"
    return ""


def _real_date(year: int, month: int, day: int) -> bool:
    """Whether the day exists (PS3.5 Table 6.2-1, DA: a date of the Gregorian calendar)."""
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(max(year, 1), month)[1]


def _check_datetime(value: str) -> str:
    """What is wrong with a DT value YYYYMMDDHHMMSS.FFFFFF&ZZXX (PS3.5 Table 6.2-1), or ""."""
    match = _DT.fullmatch(value)
    if not match:
        return "not YYYYMMDDHHMMSS.FFFFFF&ZZXX"
    year, month, day, hour, minute, second, sign, zz, xx = match.groups()
    if month and not 1 <= int(month) <= 12:
        return "not a valid month"
    if day and not _real_date(int(year), int(month), int(day)):
        return "not a valid calendar date"
    if (hour and int(hour) > 23) or (minute and int(minute) > 59) or (
            second and int(second) > 60):
        return "not a valid time of day"
    if sign:
        offset = int(zz) * 60 + int(xx)
        if int(xx) > 59 or (sign == "+" and offset > 14 * 60) or (
                sign == "-" and offset > 12 * 60):
            return "the UTC offset &ZZXX is not between -1200 and +1400"
    return ""


def _check_time(value: str) -> str:
    match = _TM.fullmatch(value)
    if not match:
        return "a time is HHMMSS.FFFFFF"
    hh, mm, ss = match[1], match[2], match[3]
    if int(hh) > 23 or (mm and int(mm) > 59) or (ss and int(ss) > 60):
        return "not a valid time of day"
    return ""


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value.strip()]
    return [str(v).strip() for v in value]


def _str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    original = getattr(value, "original_string", None)
    if isinstance(original, str):
        return original
    return str(value)


_ITEM_LE = b"\xfe\xff\x00\xe0"  # (FFFE,E000) Item, little endian
_ITEM_BE = b"\xff\xfe\xe0\x00"  # and big endian
_UNDEFINED_LENGTH = 0xFFFFFFFF
_DEFERRED_STEP = 1 << 20


def is_deferred(elem: Any) -> bool:
    """Whether `elem` is a raw element whose value pydicom deferred (read with ``defer_size``):
    a defined length, nothing read yet."""
    return (type(elem) is RawDataElement and elem.value is None
            and elem.length not in (0, _UNDEFINED_LENGTH))


def deferred_chunks(ds: Dataset, elem: Any, limit: int | None = None,
                    step: int = _DEFERRED_STEP) -> Iterator[bytes]:
    """The raw bytes of the deferred value of `elem` (an element of `ds`), `step` at a time,
    from where pydicom's deferred read finds them (the dataset's open buffer, else its file),
    at most `limit` bytes. The buffer's position is left where it was.

    Raises
    ------
    OSError
        The dataset keeps no file or buffer to read from, or it is shorter than the value.
    """
    filename = getattr(ds, "filename", None)
    buffer = getattr(ds, "buffer", None)
    src: Any = filename or buffer
    if filename and buffer is not None and not getattr(buffer, "closed", False):
        src = buffer
    if src is None:
        raise OSError("the deferred value has no file to be read from")
    owned = isinstance(src, (str, os.PathLike))
    fh = getattr(ds, "fileobj_type", open)(src, "rb") if owned else src
    here = 0 if owned else fh.tell()
    try:
        fh.seek(elem.value_tell)
        left = elem.length if limit is None else min(limit, elem.length)
        while left > 0:
            piece = fh.read(min(step, left))
            if not piece:
                raise OSError("the file ends inside the deferred value")
            left -= len(piece)
            yield piece
    finally:
        if owned:
            fh.close()
        else:
            fh.seek(here)


def deferred_prefix(ds: Dataset, elem: Any, size: int) -> bytes:
    """The first `size` bytes (at most) of the deferred value of `elem`, see
    :func:`deferred_chunks`."""
    return b"".join(deferred_chunks(ds, elem, size))


def _read_raw(ds: Dataset, tag: int, elem: Any) -> Any:
    """`elem` with its deferred value read raw (bytes, as a file read without ``defer_size``
    holds it), not kept in `ds`; pydicom's own deferred read when it cannot be read here."""
    try:
        value = b"".join(deferred_chunks(ds, elem))
    except Exception:  # noqa: BLE001 - pydicom's way says what is wrong
        return ds.get_item(tag)
    return elem._replace(value=value)


def _is_sequence_value(ds: Dataset, tag: int) -> bool:
    try:
        return ds[tag].VR == "SQ"
    except Exception:  # noqa: BLE001 - undecodable private data is not a sequence
        return False
