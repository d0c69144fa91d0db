"""A Structured Report's content as text: its rendered form for WADO-RS and WADO-URI (PS3.18
Table 8.7.4-1: a text object, an SR, is rendered as ``text/html``, the default, or
``text/plain``).

The document's title, identifying attributes and flags, then its content tree (PS3.3 C.17.3)
one item a line, each child under its parent: the relationship, the concept name and the value
as its Value Type holds it (text, code, number with units, date and time, person name, UID,
references to images and other objects, spatial and temporal coordinates), and a reference to
another item of the tree by its position. Nothing is interpreted beyond what the items say.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from archivist.archive.part10 import read_stored

#: SOP Classes whose objects carry an SR Document Content tree: the SR Storage classes, Key
#: Object Selection and the other SR-based IODs (PS3.3 A.35), all under this root.
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."

#: Deepest nesting rendered; a deeper tree is cut with a note (no recursion without bound).
_MAX_DEPTH = 64
#: Items rendered at most; a larger tree is cut with a note.
_MAX_ITEMS = 20000

_RELATIONSHIPS = {
    "CONTAINS": "contains", "HAS PROPERTIES": "has properties",
    "HAS OBS CONTEXT": "has observation context", "HAS ACQ CONTEXT": "has acquisition context",
    "INFERRED FROM": "inferred from", "SELECTED FROM": "selected from",
    "HAS CONCEPT MOD": "has concept modifier",
}


def is_structured_report(sop_class_uid: str) -> bool:
    """Whether objects of this SOP Class hold an SR content tree (the SR Storage classes,
    Key Object Selection, and the other IODs of PS3.3 A.35)."""
    return sop_class_uid.startswith(_SR_PREFIX)


def render_report(path: Path, media_type: str) -> bytes:
    """The report stored at `path` as ``text/plain`` or ``text/html`` (UTF-8)."""
    with open(path, "rb") as fh:
        ds = read_stored(fh, stop_before_pixels=True)
    lines = list(_lines(ds))
    if media_type == "text/plain":
        # A value of several lines (TEXT) keeps its item's indent on each.
        return ("\n".join("  " * depth + text.replace("\n", "\n" + "  " * (depth + 1))
                          for depth, text, _ in lines) + "\n").encode()
    return _html(ds, lines).encode()


def _lines(ds: Dataset) -> Iterator[tuple[int, str, str]]:
    """(depth, text, css class) of each line: the header, then the content tree."""
    title = _concept(ds) or "Structured Report"
    yield 0, title, "title"
    for keyword, label in (("PatientName", "Patient"), ("PatientID", "Patient ID"),
                           ("StudyDate", "Study date"), ("AccessionNumber", "Accession"),
                           ("ContentDate", "Content date"), ("ContentTime", "Content time"),
                           ("CompletionFlag", "Completion"),
                           ("VerificationFlag", "Verification"),
                           ("PreliminaryFlag", "Preliminary")):
        value = _text(ds.get(keyword))
        if value:
            yield 0, f"{label}: {value}", "header"
    for item in ds.get("VerifyingObserverSequence") or []:
        who = _text(item.get("VerifyingObserverName"))
        org = _text(item.get("VerifyingOrganization"))
        when = _text(item.get("VerificationDateTime"))
        yield 0, "Verified by: " + ", ".join(v for v in (who, org, when) if v), "header"
    count = [0]
    yield from _items(ds.get("ContentSequence") or [], 1, "1", count)


def _items(items: Any, depth: int, position: str, count: list[int]
           ) -> Iterator[tuple[int, str, str]]:
    if depth > _MAX_DEPTH:
        yield depth, f"(nested deeper than {_MAX_DEPTH} levels: not shown)", "note"
        return
    for n, item in enumerate(items, start=1):
        count[0] += 1
        if count[0] > _MAX_ITEMS:
            yield depth, f"(more than {_MAX_ITEMS} content items: the rest not shown)", "note"
            return
        where = f"{position}.{n}"
        yield depth, _item_text(item), "item"
        yield from _items(item.get("ContentSequence") or [], depth + 1, where, count)


def _item_text(item: Dataset) -> str:
    relation = _RELATIONSHIPS.get(str(item.get("RelationshipType", "")), "")
    if "ReferencedContentItemIdentifier" in item:
        ref = item.ReferencedContentItemIdentifier
        target = ".".join(str(v) for v in (ref if isinstance(ref, (list, tuple)) or
                                           type(ref).__name__ == "MultiValue" else [ref]))
        return _join(relation, "", f"see content item {target}")
    kind = str(item.get("ValueType", ""))
    name = _concept(item)
    return _join(relation, name, _value(item, kind))


def _join(relation: str, name: str, value: str) -> str:
    head = " ".join(p for p in (f"[{relation}]" if relation else "", name) if p)
    if value and head:
        return f"{head}: {value}"
    return head or value


def _value(item: Dataset, kind: str) -> str:
    if kind == "CONTAINER":
        return ""
    if kind in ("TEXT", "DATETIME", "DATE", "TIME", "UIDREF", "PNAME"):
        keyword = {"TEXT": "TextValue", "DATETIME": "DateTime", "DATE": "Date", "TIME": "Time",
                   "UIDREF": "UID", "PNAME": "PersonName"}[kind]
        return _text(item.get(keyword))
    if kind == "CODE":
        codes = item.get("ConceptCodeSequence") or []
        return _code(codes[0]) if codes else ""
    if kind == "NUM":
        measured = item.get("MeasuredValueSequence") or []
        if not measured:
            qualifier = item.get("NumericValueQualifierCodeSequence") or []
            return f"(no value: {_code(qualifier[0])})" if qualifier else "(no value)"
        value = _text(measured[0].get("NumericValue"))
        units = measured[0].get("MeasurementUnitsCodeSequence") or []
        unit = str(units[0].get("CodeValue", "")) if units else ""
        return f"{value} {unit}".strip() if unit not in ("1", "") else value
    if kind in ("IMAGE", "COMPOSITE", "WAVEFORM"):
        refs = item.get("ReferencedSOPSequence") or []
        if not refs:
            return ""
        ref = refs[0]
        text = f"{kind.lower()} {_text(ref.get('ReferencedSOPInstanceUID'))}"
        frames = _text(ref.get("ReferencedFrameNumber")).replace("\\", ", ")
        return text + (f" (frames {frames})" if frames else "")
    if kind in ("SCOORD", "SCOORD3D"):
        shape = _text(item.get("GraphicType"))
        data = item.get("GraphicData")
        count = len(data) if isinstance(data, (list, tuple)) or \
            type(data).__name__ == "MultiValue" else (1 if data is not None else 0)
        return f"{shape} of {count} values"
    if kind == "TCOORD":
        return f"{_text(item.get('TemporalRangeType'))} temporal range"
    return _text(item.get("TextValue"))


def _concept(item: Dataset) -> str:
    codes = item.get("ConceptNameCodeSequence") or []
    return _code(codes[0], meaning_only=True) if codes else ""


def _code(code: Dataset, *, meaning_only: bool = False) -> str:
    meaning = _text(code.get("CodeMeaning"))
    value = _text(code.get("CodeValue") or code.get("LongCodeValue")
                  or code.get("URNCodeValue"))
    scheme = _text(code.get("CodingSchemeDesignator"))
    if meaning_only and meaning:
        return meaning
    coded = f"({scheme}, {value})" if scheme or value else ""
    return f"{meaning} {coded}".strip()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


_STYLE = ("<style>body{font-family:sans-serif;margin:1.5em}ul{margin:0;padding-left:1.4em}"
          "li{margin:.15em 0;white-space:pre-line}.header{margin:.1em 0}</style></head><body>")


def _html(ds: Dataset, lines: list[tuple[int, str, str]]) -> str:
    out = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(lines[0][1])}</title>",
           _STYLE,
           f"<h1>{html.escape(lines[0][1])}</h1>"]
    depth = 0  # lists open; each list's last item is left open for its children
    for level, text, kind in lines[1:]:
        if kind == "header":
            out.append(f'<p class="header">{html.escape(text)}</p>')
            continue
        if level > depth:
            out.append("<ul>" * (level - depth))
        else:
            out.append("</li>" + "</ul></li>" * (depth - level))
        depth = level
        out.append(f"<li>{html.escape(text)}")
    if depth:
        out.append("</li>" + "</ul></li>" * (depth - 1) + "</ul>")
    out.append("</body></html>\n")
    return "\n".join(out)


__all__ = ["is_structured_report", "render_report"]
