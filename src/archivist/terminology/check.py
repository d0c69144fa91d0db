"""Check the coded items of a DICOM object (PS3.3 Section 8.8 Code Sequence Macro; PS3.16).

Every sequence item that carries Code Sequence Macro attributes, at any depth, is checked for:

- structure (PS3.3 Section 8.8, Table 8.8-1): exactly one of Code Value (0008,0100), Long Code
  Value (0008,0119) and URN Code Value (0008,0120); a Code Value of at most 16 characters that is
  not a URN or URL; a Coding Scheme Designator (0008,0102) with Code Value and Long Code Value;
  a Code Meaning (0008,0104) of at most 64 characters;
- the designator (PS3.16 Section 8): known from the tables, registered (PS3.16 Table 8-1), local
  (``99...``) or declared in the Coding Scheme Identification Sequence (0008,0110); the retired
  SNOMED designators SRT, SNM3 and 99SDM are flagged with the SCT code to use (PS3.16 Section 8.3,
  Annex O);
- the code: unknown in a scheme whose codes the tables hold;
- the meaning: different from every known form of the standard meaning (a warning only: Code
  Meaning is display text, PS3.3 Section 8.3);
- context group membership, for the attributes whose baseline CID we know (:data:`EXPECTED_CID`),
  and the UCUM designator for Measurement Units Code Sequence;
- a UCUM code that PS3.16 does not list: whether it is a valid UCUM expression
  (:mod:`archivist.terminology.ucum`).

This module imports pydicom; the rest of the package does not.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

from archivist.core.truncation import cut_short
from archivist.errors import ArchivistError
from archivist.terminology.catalogue import Terminology, cid_title
from archivist.terminology.findings import Finding, FindingKind, Severity
from archivist.terminology.schemes import MISSPELLINGS, REGISTERED, RETIRED_SNOMED, is_local
from archivist.terminology.text import american_spelling, fold, strip_semantic_tag
from archivist.terminology.ucum import ucum_error

__all__ = ["EXPECTED_CID", "CheckError", "check_dataset", "check_file", "iter_coded_items"]

PS3_3_CODE_MACRO = "PS3.3 Section 8.8 (Table 8.8-1)"
PS3_16_SCHEMES = "PS3.16 Section 8 (Table 8-1)"
PS3_16_RETIRED = "PS3.16 Section 8.3 and Annex O"

_CODE_VALUE = "CodeValue"
_LONG_CODE_VALUE = "LongCodeValue"
_URN_CODE_VALUE = "URNCodeValue"
_DESIGNATOR = "CodingSchemeDesignator"
_MEANING = "CodeMeaning"
_CODE_ATTRIBUTES = (_CODE_VALUE, _LONG_CODE_VALUE, _URN_CODE_VALUE, _DESIGNATOR, _MEANING)
#: Items of these sequences carry a designator but are not coded concepts.
_NOT_CODES = frozenset({"CodingSchemeIdentificationSequence"})


@dataclass(frozen=True)
class ExpectedCid:
    """The context group an attribute's codes come from, and where the standard says so."""

    cid: int
    reference: str


#: Sequence keyword -> its baseline context group. All of these are baseline, extensible groups
#: (as far as the tables tell: pydicom does not ship the extensibility flag), so a code outside
#: the group is reported as information, not as an error.
EXPECTED_CID: dict[str, ExpectedCid] = {
    "AnatomicRegionSequence": ExpectedCid(4, "PS3.3 Section 10.5 (General Anatomy Macros)"),
    "AnatomicRegionModifierSequence": ExpectedCid(2, "PS3.3 Section 10.5"),
    "PrimaryAnatomicStructureModifierSequence": ExpectedCid(2, "PS3.3 Section 10.5"),
    "PatientOrientationCodeSequence": ExpectedCid(19, "PS3.3 C.8.4.6 / C.8.11.5"),
    "PatientOrientationModifierCodeSequence": ExpectedCid(20, "PS3.3 C.8.4.6 / C.8.11.5"),
    "PatientGantryRelationshipCodeSequence": ExpectedCid(21, "PS3.3 C.8.4.6 / C.8.11.5"),
    "SegmentedPropertyCategoryCodeSequence": ExpectedCid(7150, "PS3.3 C.8.20.2"),
    "SegmentedPropertyTypeCodeSequence": ExpectedCid(7151, "PS3.3 C.8.20.2"),
}

#: Sequences whose codes are units, which PS3.16 takes from UCUM (CID 82, PS3.16 Section 8.1).
UNITS_SEQUENCES = frozenset({"MeasurementUnitsCodeSequence"})


#: Values longer than this are read only when checked (the pixel data never is).
_DEFER_SIZE = 1 << 16
#: Float Pixel Data (7FE0,0008), the first of the pixel data elements: it and what follows are
#: left out, as ``stop_before_pixels`` would.
_PIXEL_DATA_FIRST = 0x7FE00008


class CheckError(ArchivistError):
    """A file that cannot be read as DICOM."""


def check_file(path: str | Path, terminology: Terminology, **options: Any) -> list[Finding]:
    """Read a DICOM file (pixel data skipped) and check its coded items.

    Raises
    ------
    CheckError
        When the file cannot be read as DICOM, or is cut short (what its elements declare does
        not fit in the file, as ingest finds it: :func:`archivist.core.truncation.cut_short`).
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            # Large values (the pixel data) are skipped by seeking, not loaded, so that their
            # declared lengths can still be compared with the file's size.
            dataset = dcmread(fh, defer_size=_DEFER_SIZE)
            read_to = fh.tell()
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise CheckError(f"{path}: {exc}") from exc
    except Exception as exc:
        # Any other parser failure is the file's too (struct.error, pydicom's
        # BytesLengthException: a File Meta cut short, for instance).
        raise CheckError(f"{path}: cannot parse the file ({_first_line(exc)})") from exc
    if not dataset._dict:
        # PS3.10 7.1: the File Meta Information is followed by the data set (here, a file cut
        # in its File Meta, or one that ends with it).
        raise CheckError(f"{path}: no data set after the File Meta Information (cut short?)")
    syntax = getattr(dataset.file_meta, "TransferSyntaxUID", None)
    if not (isinstance(syntax, UID) and syntax.is_transfer_syntax and syntax.is_deflated):
        # (Deflated: the positions are those of the inflated data set, not of the file.)
        reason = cut_short(dataset, read_to, size, Path(path))
        if reason is not None:
            raise CheckError(f"{path}: truncated: {reason}")
    for tag in [t for t in dataset._dict if t >= _PIXEL_DATA_FIRST]:
        del dataset._dict[tag]  # as stop_before_pixels: never loaded
    try:
        return check_dataset(dataset, terminology, **options)
    except (NotImplementedError, ValueError, TypeError, struct.error, UnicodeError,
            BytesLengthException) as exc:
        # pydicom decodes each element when it is first used: here, one it cannot decode
        # (an unknown VR, a value of the wrong length...), which the file's header declares.
        raise CheckError(f"{path}: cannot decode an element ({_first_line(exc)})") from exc


def _first_line(exc: Exception) -> str:
    """The exception's type and the first line of its message, capped."""
    first = (str(exc).splitlines() or [""])[0][:120]
    return f"{type(exc).__name__}: {first}"


def iter_coded_items(dataset: Dataset, prefix: str = "") -> Iterator[tuple[str, str, Dataset]]:
    """Every coded item in `dataset`, at any depth, as (path, sequence keyword, item).

    The path names each sequence by keyword (or tag, for private and unknown ones) and each item
    by its number from 0: ``ContentSequence[2].ConceptNameCodeSequence[0]``.
    """
    for element in dataset:
        if element.VR != "SQ" or not element.value:
            continue
        name = element.keyword or _tag_text(element)
        for number, item in enumerate(element.value):
            path = f"{prefix}{name}[{number}]"
            if name not in _NOT_CODES and (
                any(kw in item for kw in _CODE_ATTRIBUTES) or _is_code_sequence(name)
            ):
                yield path, name, item
            yield from iter_coded_items(item, path + ".")


def check_dataset(
    dataset: Dataset, terminology: Terminology, *, cids: bool = True
) -> list[Finding]:
    """Check every coded item of `dataset` (see the module documentation).

    Parameters
    ----------
    dataset : pydicom.Dataset
        The object, as read.
    terminology : Terminology
        The PS3.16 tables.
    cids : bool
        Also report codes outside the baseline context group of their attribute.

    Returns
    -------
    list of Finding
        In the order of the items in the object.
    """
    declared = _declared_schemes(dataset)
    findings: list[Finding] = []
    for path, sequence, item in iter_coded_items(dataset):
        findings.extend(_check_item(path, sequence, item, terminology, declared, cids))
    return findings


def _is_code_sequence(keyword: str) -> bool:
    """Whether every item of the sequence `keyword` is a Code Sequence Macro item, so that an
    item without any code attribute is an error rather than some other kind of item."""
    return keyword.endswith("CodeSequence") or keyword in EXPECTED_CID


def _check_item(
    path: str,
    sequence: str,
    item: Dataset,
    term: Terminology,
    declared: set[str],
    cids: bool,
) -> Iterator[Finding]:
    several = [kw for kw in _CODE_ATTRIBUTES if _multiplicity(item.get(kw)) > 1]
    values = {kw: _text(item.get(kw)) for kw in (_CODE_VALUE, _LONG_CODE_VALUE, _URN_CODE_VALUE)}
    present = [kw for kw, v in values.items() if v]
    designator = _text(item.get(_DESIGNATOR))
    meaning = _text(item.get(_MEANING))
    value = values[present[0]] if present else ""
    code = (designator, value) if value else None

    def finding(severity: Severity, kind: FindingKind, message: str, reference: str,
                suggestion: dict[str, Any] | None = None) -> Finding:
        return Finding(severity, kind, path, message, code, suggestion, reference)

    # Structure (PS3.3 Section 8.8).
    for keyword in several:
        yield finding(Severity.ERROR, FindingKind.VALUE_MULTIPLE,
                      f"{keyword} has {_multiplicity(item.get(keyword))} values; it takes "
                      "exactly one (VM 1)", PS3_3_CODE_MACRO)
    if not present:
        yield finding(Severity.ERROR, FindingKind.VALUE_MISSING,
                      "no Code Value, Long Code Value or URN Code Value", PS3_3_CODE_MACRO)
    elif len(present) > 1:
        yield finding(Severity.ERROR, FindingKind.VALUE_MULTIPLE,
                      f"more than one of {', '.join(present)}; exactly one is allowed",
                      PS3_3_CODE_MACRO)
    code_value = values[_CODE_VALUE]
    if code_value:
        if _looks_like_urn(code_value):
            yield finding(Severity.ERROR, FindingKind.VALUE_KIND,
                          f"Code Value {code_value!r} is a URN or URL; use URN Code Value",
                          PS3_3_CODE_MACRO)
        elif len(code_value) > 16:
            yield finding(Severity.ERROR, FindingKind.VALUE_LENGTH,
                          f"Code Value has {len(code_value)} characters (at most 16); use Long "
                          "Code Value", PS3_3_CODE_MACRO)
    long_value = values[_LONG_CODE_VALUE]
    if long_value and _looks_like_urn(long_value):
        yield finding(Severity.WARNING, FindingKind.VALUE_KIND,
                      "Long Code Value is a URN or URL; use URN Code Value", PS3_3_CODE_MACRO)
    elif long_value and len(long_value) <= 16:
        yield finding(Severity.WARNING, FindingKind.VALUE_KIND,
                      f"Long Code Value {long_value!r} has at most 16 characters; use Code Value",
                      PS3_3_CODE_MACRO)
    if not designator and (code_value or long_value):
        yield finding(Severity.ERROR, FindingKind.DESIGNATOR_MISSING,
                      "Coding Scheme Designator is missing", PS3_3_CODE_MACRO)
    if not meaning:
        yield finding(Severity.ERROR, FindingKind.MEANING_MISSING, "Code Meaning is missing",
                      PS3_3_CODE_MACRO)
    elif len(meaning) > 64:
        yield finding(Severity.ERROR, FindingKind.MEANING_LENGTH,
                      f"Code Meaning has {len(meaning)} characters (at most 64, VR LO)",
                      PS3_3_CODE_MACRO)
    if not designator:
        return

    # Designator (PS3.16 Section 8).
    scheme, key_value = designator, value
    if designator in RETIRED_SNOMED:
        scheme, key_value = term.normalise(designator, value)
        if scheme == "SCT":
            concept = term.get(scheme, key_value)
            target = concept.meaning if concept else ""
            yield finding(
                Severity.WARNING, FindingKind.DESIGNATOR_RETIRED,
                f"{designator} is retired; use SCT {key_value} ({target})", PS3_16_RETIRED,
                {"scheme": "SCT", "value": key_value, "meaning": target},
            )
        elif (same := term.get("SCT", value)) is not None:
            # An SCT concept id under a retired designator: only the designator is wrong.
            scheme = "SCT"
            yield finding(
                Severity.WARNING, FindingKind.DESIGNATOR_RETIRED,
                f"{designator} is retired, and {value} is already the SCT concept id of "
                f"{same.meaning!r}: use the designator SCT", PS3_16_RETIRED,
                {"scheme": "SCT", "value": value, "meaning": same.meaning},
            )
        else:
            yield finding(
                Severity.WARNING, FindingKind.DESIGNATOR_RETIRED,
                f"{designator} is retired and {value!r} has no SCT equivalent in PS3.16 Annex O",
                PS3_16_RETIRED,
            )
            return
    elif not (
        term.has_scheme(designator)
        or designator in REGISTERED
        or designator in declared
        or is_local(designator)
    ):
        hint = MISSPELLINGS.get(designator.upper())
        yield finding(
            Severity.WARNING, FindingKind.DESIGNATOR_UNKNOWN,
            f"unknown Coding Scheme Designator {designator!r}"
            + (f"; did you mean {hint}?" if hint else
               "; register it in the Coding Scheme Identification Sequence (0008,0110)"),
            PS3_16_SCHEMES,
        )

    if sequence in UNITS_SEQUENCES and scheme != "UCUM":
        yield finding(Severity.WARNING, FindingKind.UNITS_NOT_UCUM,
                      f"units are coded with {designator}, not UCUM",
                      "PS3.16 Section 8.1, CID 82")

    # The code and its meaning.
    if not term.has_scheme(scheme) or not key_value:
        return
    concept = term.get(scheme, key_value)
    if concept is None and scheme == "UCUM":
        yield from _check_ucum(key_value, finding)
        return
    if concept is None:
        severity = Severity.WARNING if scheme in ("SCT", "DCM") else Severity.INFO
        hint = term.other_schemes_hint(key_value)
        yield finding(severity, FindingKind.CODE_UNKNOWN,
                      f"{scheme}:{key_value} is not a PS3.16 code"
                      + ("" if scheme == "DCM" or hint else
                         " (the tables hold the codes DICOM uses)") + hint,
                      "PS3.16 Annex B and D")
        return
    if meaning and not _meaning_matches(meaning, concept.meanings, concept.keywords, key_value,
                                        scheme):
        yield finding(
            Severity.WARNING, FindingKind.MEANING_DIFFERS,
            f"Code Meaning {meaning!r} differs from the standard {concept.meaning!r}",
            "PS3.3 Section 8.3; PS3.16",
            {"scheme": concept.scheme, "value": concept.value, "meaning": concept.meaning},
        )
    expected = EXPECTED_CID.get(sequence)
    if cids and expected is not None and expected.cid not in concept.cids:
        name = term.cid_name(expected.cid) or ""
        yield finding(
            Severity.INFO, FindingKind.CID_NOT_MEMBER,
            f"{concept.key} ({concept.meaning}) is not in CID {expected.cid} {name}, the "
            "baseline group for this attribute", f"{expected.reference}; PS3.16 CID "
            f"{expected.cid}",
        )


def _check_ucum(value: str, finding: Any) -> Iterator[Finding]:
    """A UCUM code PS3.16 does not list: any valid UCUM expression is a unit (CID 82), so it is
    only information; one that is not valid UCUM is a warning, with the lower-case form when
    that one is valid (UCUM is case-sensitive: ``MM3`` is not ``mm3``)."""
    problem = ucum_error(value)
    if problem is None:
        yield finding(Severity.INFO, FindingKind.CODE_UNKNOWN,
                      f"UCUM:{value} is a valid UCUM unit that PS3.16 does not list",
                      "PS3.16 Section 8.1, CID 82")
        return
    lower = value.lower()
    hint = lower if lower != value and ucum_error(lower) is None else None
    yield finding(
        Severity.WARNING, FindingKind.UNITS_INVALID,
        f"{value!r} is not a valid UCUM unit: {problem}"
        + (f"; did you mean {hint!r} (UCUM is case-sensitive)?" if hint else ""),
        "PS3.16 Section 8.1; UCUM Section 2",
        {"scheme": "UCUM", "value": hint, "meaning": hint} if hint else None,
    )


def _meaning_matches(meaning: str, meanings: tuple[str, ...], keywords: tuple[str, ...],
                     value: str, scheme: str) -> bool:
    """Whether `meaning` is a known form of the concept's meaning, ignoring case, accents,
    punctuation, spacing, plural endings and British spellings (``millimetre``); the pydicom
    keyword (``Millimeter``) counts as a form, and for UCUM so does the unit itself (``mm``).
    For SNOMED CT, the Fully Specified Name's semantic tag is ignored too: ``Pneumothorax
    (disorder)`` is the same text as ``Pneumothorax``. A standard meaning longer than 64
    characters may be cut to fit."""
    known = {_comparable(m) for m in meanings} | {_comparable(cid_title(k)) for k in keywords}
    if _comparable(meaning) in known:
        return True
    if _is_truncation(meaning, meanings):
        return True
    if scheme == "SCT":
        untagged = strip_semantic_tag(meaning)
        if untagged != meaning and _comparable(untagged) in known | {
            _comparable(strip_semantic_tag(m)) for m in meanings
        }:
            return True
    return scheme == "UCUM" and meaning.strip() == value


def _is_truncation(meaning: str, meanings: tuple[str, ...]) -> bool:
    """Whether `meaning` is a standard meaning longer than Code Meaning's 64 characters (VR LO),
    cut to fit (possibly ending in ``...``): the only way to encode those meanings validly."""
    given = fold(meaning)
    if len(given) < _SHORTEST_CUT:
        return False
    return any(len(m) > _MEANING_MAX and fold(m).startswith(given) for m in meanings)


#: Code Meaning (0008,0104) is LO: at most 64 characters.
_MEANING_MAX = 64
#: A cut standard meaning is recognised from this many (folded) characters on; a shorter text
#: is more likely another meaning than a cut one.
_SHORTEST_CUT = 40


def _comparable(text: str) -> str:
    """`text` folded, each word singular and in American spelling."""
    words = (american_spelling(word) for word in fold(text).split())
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words)


def _declared_schemes(dataset: Dataset) -> set[str]:
    """Designators declared in Coding Scheme Identification Sequence (PS3.3 C.12.1.1.2)."""
    declared: set[str] = set()
    for item in dataset.get("CodingSchemeIdentificationSequence") or []:
        designator = _text(item.get(_DESIGNATOR))
        if designator:
            declared.add(designator)
    return declared


def _multiplicity(value: Any) -> int:
    if isinstance(value, DataElement):
        value = value.value
    return len(value) if isinstance(value, (MultiValue, list, tuple)) else 1


def _text(value: Any) -> str:
    """The value as text; of a multi-valued element (a VM error, reported apart) the first."""
    if value is None:
        return ""
    if isinstance(value, DataElement):
        value = value.value
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else ""
    return str(value).strip() if value != "" else ""


def _looks_like_urn(value: str) -> bool:
    return value.lower().startswith("urn:") or "://" in value


def _tag_text(element: DataElement) -> str:
    return f"({element.tag.group:04X},{element.tag.element:04X})"
