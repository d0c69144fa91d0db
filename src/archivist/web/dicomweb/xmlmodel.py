"""The Native DICOM Model (PS3.19 A.1) of a data set given in the DICOM JSON Model (PS3.18
F.2): ``application/dicom+xml``, the response a STOW-RS client such as dcm4che's ``stowrs``
asks for by default (PS3.18 10.5.3)."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pydicom.datadict import keyword_for_tag

DICOM_XML = "application/dicom+xml"

#: The components of a person name group, in order (PS3.19 Table A.1.5-2).
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
         '<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM" '
         'xml:space="preserve">')


def native_xml(dataset: dict[str, Any]) -> bytes:
    """`dataset` (DICOM JSON: tag -> {"vr", "Value" | "InlineBinary" | "BulkDataURI"}) as a
    ``NativeDicomModel`` document, UTF-8."""
    out = [_HEAD]
    _attributes(dataset, out)
    out.append("</NativeDicomModel>\n")
    return "".join(out).encode("utf-8")


def _attributes(dataset: dict[str, Any], out: list[str]) -> None:
    for tag in sorted(dataset):
        element = dataset[tag]
        vr = str(element.get("vr", "UN"))
        head = f"<DicomAttribute tag={quoteattr(tag)} vr={quoteattr(vr)}"
        try:
            keyword = keyword_for_tag(int(tag, 16))
        except ValueError:
            keyword = ""
        if keyword:
            head += f" keyword={quoteattr(keyword)}"
        out.append(head + ">")
        if "BulkDataURI" in element:
            out.append(f"<BulkData uri={quoteattr(str(element['BulkDataURI']))}/>")
        elif "InlineBinary" in element:
            out.append(f"<InlineBinary>{escape(str(element['InlineBinary']))}</InlineBinary>")
        for number, value in enumerate(element.get("Value") or [], 1):
            if vr == "SQ":
                out.append(f'<Item number="{number}">')
                _attributes(value or {}, out)
                out.append("</Item>")
            elif vr == "PN":
                out.append(_person_name(number, value or {}))
            elif value is not None:  # an empty value among several is an absent Value element
                out.append(f'<Value number="{number}">{escape(str(value))}</Value>')
        out.append("</DicomAttribute>")


def _person_name(number: int, value: dict[str, str]) -> str:
    groups = []
    for group in _PN_GROUPS:
        if not value.get(group):
            continue
        parts = value[group].split("^")
        components = "".join(f"<{name}>{escape(part)}</{name}>"
                             for name, part in zip(_PN_COMPONENTS, parts) if part)
        groups.append(f"<{group}>{components}</{group}>")
    return f'<PersonName number="{number}">{"".join(groups)}</PersonName>'
