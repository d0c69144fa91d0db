"""Dataset -> typed index row values (no database access here).

Values are decoded by pydicom with the object's Specific Character Set and kept as Unicode, so a
query in any character set compares against the same text.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import IS, DSfloat, PersonName

from archivist.core.levels import KEYS, MatchKind, QueryLevel
from archivist.core.matching import normalise_date, normalise_pn, normalise_time
from archivist.errors import InvalidObject
from archivist.index.schema import COLUMN_OF


def use_gb2312_escape_sequences() -> None:
    """Make pydicom read and write ISO 2022 IR 58 (GB 2312) with its escape sequence.

    PS3.5 6.1.2.5.3 and Table 6.1-4 (PS3.3 C.12-4): GB 2312 is a G1 code element designated by
    ``ESC $ ) A`` before its characters, as KS X 1001 (ISO 2022 IR 149) is by ``ESC $ ) C``.
    pydicom 3 counts its codec among those whose escape sequences Python handles, which is not
    so for GB 2312: it left ``ESC $ ) A`` in every decoded value (``Wang^Wu=\\x1b$)A王^...``, then
    indexed, matched and answered as such) and wrote GB 2312 bytes without it. Treated as the
    Korean set is, both directions are right. Idempotent; applied on import of this module,
    which every process that decodes stored objects imports.
    """
    from pydicom import charset

    if "iso_ir_58" in charset.handled_encodings:
        handled = tuple(e for e in charset.handled_encodings if e != "iso_ir_58")
        setattr(charset, "handled_encodings", handled)  # noqa: B010 - a shorter tuple type


use_gb2312_escape_sequences()

_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"}
_MAX_ATTR_LEN = 256
#: The sequences the query models name as keys (PS3.4 C.6.1.1 and C.6.2.1: Referenced Patient,
#: Other Patient IDs, Issuer of Patient ID Qualifiers, Issuer of Accession Number, Referenced
#: Study, Request Attribute at SERIES level; Content Template for SR at IMAGE level), kept in the
#: index as DICOM JSON when short, so a query asking for them gets the stored items. The Code
#: Sequences of query by code are answered from their own table.
_KEPT_SEQUENCES = frozenset(BaseTag(t) for t in (
    0x00081120, 0x00101002, 0x00100024, 0x00080051, 0x00081110, 0x00400275, 0x0040A504,
))
#: The longest DICOM JSON of a kept sequence, in characters; a longer one is left out.
_MAX_SEQUENCE_JSON = 4096
_EXCLUDED_FROM_ATTRS = {0x7FE00010}
# VRs whose single text value is its own DICOM JSON value (PN, DS, IS and AT are converted).
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
_INT_VRS = {"US", "UL", "SS", "SL", "UV", "SV"}


@dataclass(frozen=True)
class CodeRow:
    """One coded concept an instance carries, for query by code (table ``instance_code``).

    ``scheme`` and ``value`` are the normalised key (retired SNOMED mapped to SCT); the original
    designator and value are kept as the object has them. ``attribute`` is the Code Sequence a
    query names; ``origin`` the attribute the code came from (``BodyPartExamined`` for a defined
    term mapped to its Anatomic Region code, otherwise ``attribute`` itself).
    """

    attribute: str
    origin: str
    scheme: str
    value: str
    original_scheme: str
    original_value: str
    meaning: str | None = None


@dataclass(frozen=True)
class FindingRow:
    """One validation finding as the index keeps it (table ``validation_finding``)."""

    severity: str
    rule_id: str
    path: str
    module: str
    iod: str
    message: str
    reference: str


@dataclass(frozen=True)
class ValidationRecord:
    """The outcome of the validation on ingest: counts, and the findings (possibly capped)."""

    errors: int
    warnings: int
    findings: tuple[FindingRow, ...] = ()


@dataclass
class ExtractedRows:
    """What one instance contributes to each level of the index."""

    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]
    attrs_json: str
    codes: list[CodeRow] = field(default_factory=list)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        parts = [str(v) for v in value]  # type: ignore[attr-defined]
        text = "\\".join(parts)
    else:
        text = str(value)
    text = text.strip("\x00 ")
    return text or None


def _int(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        if type(value).__name__ == "MultiValue":
            value = value[0]  # type: ignore[index]
        return int(float(str(value)))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # no value (an empty list), or not a finite number


#: The longest value an index column takes, in characters (or bytes, before decoding). No
#: indexed attribute comes near it (LO holds 64 characters, PN 64 per component group); an
#: object with a longer one is refused, rather than the value copied into the index and into
#: every answer that returns it.
MAX_INDEXED_LENGTH = 64 * 1024


def _too_long(keyword: str, length: int) -> InvalidObject:
    return InvalidObject(f"{keyword} is {length} bytes long: an indexed attribute may have at "
                         f"most {MAX_INDEXED_LENGTH}")


def column_value(keyword: str, value: object) -> Any:
    """Convert a pydicom value to what the column of `keyword` stores.

    Raises
    ------
    InvalidObject
        The value is longer than :data:`MAX_INDEXED_LENGTH`.
    """
    kind = KEYS[keyword].kind
    if isinstance(value, (Sequence, bytes, bytearray)):
        # Not a value of the attribute's own VR (an object that encodes it as SQ or OB, or
        # as UN too long for its VR): nothing to match, and the text of a sequence would
        # decode its items. An over-long one is still refused.
        if isinstance(value, (bytes, bytearray)) and len(value) > MAX_INDEXED_LENGTH:
            raise _too_long(keyword, len(value))
        return None
    if kind is MatchKind.INT:
        return _int(value)
    text = _text(value)
    if text is None:
        return None
    if len(text) > MAX_INDEXED_LENGTH:
        raise _too_long(keyword, len(text.encode("utf-8", "replace")))
    if kind is MatchKind.DATE:
        return normalise_date(text)[:8]
    if kind is MatchKind.TIME:
        return normalise_time(text)[:16]
    return text


def small_attributes(ds: Dataset) -> dict[str, Any]:
    """DICOM JSON of the top-level, non-binary, non-private elements with short values.

    Kept in the index so that any requested return key that the objects carry can be answered
    without opening files. The same JSON as pydicom's ``Dataset.to_json_dict`` of those
    elements, built directly for the common value shapes (text, numbers, single-group person
    names) and by pydicom for the rest: ingest runs this for every object.
    """
    out: dict[str, Any] = {}
    elements = ds._dict
    for tag in sorted(elements):
        if tag & 0x10000 or tag in _EXCLUDED_FROM_ATTRS or tag < 0x00030000 \
                or not tag & 0xFFFF:
            continue  # private (odd group), Pixel Data, File Meta, group lengths
        elem = elements[tag]
        if not isinstance(elem, DataElement):
            if elem.value is None and elem.length:
                # A value ingest left unread (read with defer_size=1024: bytes, numbers,
                # text over 1 MiB), never a short one: not read here either (it may be huge).
                continue
            try:
                elem = ds[tag]  # still raw: pydicom decodes it
            except Exception:  # noqa: BLE001, S112 - a value pydicom cannot decode is left out
                continue
        vr = elem.VR
        if vr in _BINARY_VRS:
            continue  # binary or a sequence
        try:
            value = elem.value
        except Exception:  # noqa: BLE001, S112 - a value pydicom cannot decode is left out
            continue
        if isinstance(value, str):
            if len(value) > _MAX_ATTR_LEN:
                continue
        else:
            try:
                size = len(str(value))
            except Exception:  # noqa: BLE001, S112 - a value without a text form is left out
                continue
            if size > _MAX_ATTR_LEN:
                continue
        json_value = _json_value(vr, value)
        if json_value is not None:
            if vr not in _FLOAT_VRS or _finite(json_value):
                out[f"{tag:08X}"] = {"vr": vr, "Value": json_value} if json_value else {"vr": vr}
            continue
        try:
            item = elem.to_json_dict(None, _MAX_ATTR_LEN * 4)
        except Exception:  # noqa: BLE001 - pydicom writes no empty value among several
            fallback = json_with_empty_values(elem, _MAX_ATTR_LEN * 4)
            if fallback is None:
                continue  # left out, like a value that cannot be decoded
            item = fallback
        if _finite(item.get("Value", ())):
            out[f"{tag:08X}"] = item
    return out


#: The VRs whose DICOM JSON values may be floats (:func:`_finite` checks those only).
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})


def _finite(values: Any) -> bool:
    """Whether a DICOM JSON "Value" list holds no NaN or infinite number: JSON (RFC 8259) has
    none, and Python's ``json`` would write ``NaN``/``Infinity``, which JSON parsers refuse
    (a DS "NaN", an FD holding a NaN). Such an element is left out, like a value that cannot
    be decoded."""
    return all(not isinstance(v, float) or math.isfinite(v) for v in values)


def kept_sequences(ds: Dataset) -> dict[str, Any]:
    """DICOM JSON of the sequences of :data:`_KEPT_SEQUENCES` that `ds` carries, each when it
    can be converted and is at most :data:`_MAX_SEQUENCE_JSON` characters long (kept in the
    index beside :func:`small_attributes`)."""
    out: dict[str, Any] = {}
    elements = ds._dict  # as small_attributes
    for tag in _KEPT_SEQUENCES:
        raw = elements.get(tag)
        if raw is None or (not isinstance(raw, DataElement) and raw.value is None
                           and raw.length):
            continue  # absent, or left unread at ingest (long): not read here either
        item = _sequence_json(ds, tag)
        if item is not None:
            out[f"{tag:08X}"] = item
    return out


def _sequence_json(ds: Dataset, tag: int) -> dict[str, Any] | None:
    """One kept sequence as DICOM JSON; None when it is not a sequence, cannot be converted
    (left out, like a value that cannot be decoded) or is too long."""
    try:
        elem = ds[tag]
        if elem.VR != "SQ":
            return None
        item: dict[str, Any] = elem.to_json_dict(None, _MAX_ATTR_LEN)
        # allow_nan=False: a NaN or infinite number (no JSON for it) leaves the sequence out.
        size = len(json.dumps(item, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
    except Exception:  # noqa: BLE001 - any failure of pydicom's conversion
        return None
    return item if size <= _MAX_SEQUENCE_JSON else None


def _json_value(vr: str, value: Any) -> list[Any] | None:
    """The DICOM JSON "Value" list of the usual shapes of a value (an empty list: no value);
    None for anything else, which pydicom converts."""
    if isinstance(value, str):
        if vr in _TEXT_VRS:
            return [str(value)] if value else []
        return None
    kind = type(value)
    if kind is int and vr in _INT_VRS:
        return [value]
    if kind is DSfloat and vr == "DS":
        return [float(value)]
    if kind is IS and vr == "IS":
        return [int(value)]
    if kind is PersonName and vr == "PN":
        if not value:
            return []
        comps = value.components
        name = {"Alphabetic": comps[0]}
        if len(comps) > 1:
            name["Ideographic"] = comps[1]
        if len(comps) > 2:
            name["Phonetic"] = comps[2]
        return [name]
    if kind is MultiValue and value:
        if vr in _TEXT_VRS and all(type(v) is str for v in value):
            # An empty value among several is null (PS3.18 F.2.5), as in WADO-RS metadata.
            return [v if v else None for v in value]
        if vr == "DS" and all(type(v) is DSfloat for v in value):
            return [float(v) for v in value]
        if vr in _INT_VRS and all(type(v) is int for v in value):
            return list(value)
    return None


def json_with_empty_values(elem: DataElement, inline_up_to: int) -> dict[str, Any] | None:
    """The JSON of a multi-valued DS, IS or PN with an empty value among its values (``40\\``),
    which pydicom cannot write: each empty value null (PS3.18 F.2.5), the others as pydicom
    writes one value. None when that does not help either."""
    values = elem.value
    if elem.VR not in ("DS", "IS", "PN") or not isinstance(values, (list, tuple, MultiValue)) \
            or not any(str(v) == "" for v in values):
        return None
    out: list[Any] = []
    try:
        for value in values:
            if str(value) == "":
                out.append(None)
                continue
            one = DataElement(elem.tag, elem.VR, value).to_json_dict(None, inline_up_to)
            out.append(one["Value"][0])
    except Exception:  # noqa: BLE001 - another value pydicom cannot write: give up
        return None
    return {"vr": elem.VR, "Value": out}


@functools.cache
def _extracted() -> list[tuple[str, QueryLevel, str, BaseTag]]:
    """(keyword, level, column, tag) of every key that has a column of its own."""
    out = []
    for keyword, key in KEYS.items():
        if key.kind in (MatchKind.COUNT, MatchKind.MULTI) or keyword == "TransferSyntaxUID":
            continue
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        out.append((keyword, key.level, COLUMN_OF[keyword][1], BaseTag(tag)))
    return out


def extract(ds: Dataset) -> ExtractedRows:
    """Split a dataset's indexed values into per-level row dictionaries.

    Parameters
    ----------
    ds
        The dataset (pixel data need not be loaded).

    Raises
    ------
    InvalidObject
        An indexed value is longer than :data:`MAX_INDEXED_LENGTH`.
    """
    rows: dict[QueryLevel, dict[str, Any]] = {level: {} for level in QueryLevel}
    elements = ds._dict
    for keyword, level, column, tag in _extracted():
        elem = elements.get(tag)
        if elem is not None and not isinstance(elem, DataElement):
            if elem.value is None and MAX_INDEXED_LENGTH < elem.length < 0xFFFFFFFF:
                raise _too_long(keyword, elem.length)  # left unread at ingest: not read here
            elem = ds.get(tag)  # still raw: pydicom decodes it
        rows[level][column] = column_value(keyword, elem.value if elem is not None else None)
    patient = rows[QueryLevel.PATIENT]
    patient["patient_id"] = patient.get("patient_id") or ""
    patient["issuer_of_patient_id"] = patient.get("issuer_of_patient_id") or ""
    if patient.get("patient_name"):
        patient["patient_name_norm"] = normalise_pn(patient["patient_name"])
    study = rows[QueryLevel.STUDY]
    if study.get("referring_physician_name"):
        study["referring_physician_name_norm"] = normalise_pn(study["referring_physician_name"])
    attrs = small_attributes(ds)
    attrs.update(kept_sequences(ds))
    return ExtractedRows(
        patient=patient,
        study=study,
        series=rows[QueryLevel.SERIES],
        instance=rows[QueryLevel.IMAGE],
        attrs_json=json.dumps(attrs, separators=(",", ":"), ensure_ascii=False),
    )
