"""The coded concepts of an object that the index keeps for query by code (issue 6).

At ingest, the items of the Code Sequences in :data:`archivist.core.levels.CODE_SEQUENCES`
(Procedure Code, Anatomic Region, Requested Procedure Code, and the Concept Name Code of an SR
document's root) become :class:`~archivist.index.extract.CodeRow` values keyed on their
normalised (scheme, value): retired SNOMED designators (SRT, SNM3, 99SDM) map to SCT through
PS3.16 Annex O (:func:`archivist.terminology.normalise_code`). Body Part Examined (0018,0015) is
indexed as the Anatomic Region code PS3.16 Annex L pairs it with. The object itself is never
changed.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset

from archivist.core.levels import CODE_SEQUENCES
from archivist.index.extract import CodeRow
from archivist.terminology import body_part_to_code, normalise_code

#: At most this many codes per instance are indexed (an object cannot flood the index).
MAX_CODES_PER_INSTANCE = 64
_MAX_VALUE_LEN = 256

#: Sequences whose items may carry Code Sequences of the request or of each frame.
_CONTAINERS = {
    "RequestAttributesSequence": ("RequestedProcedureCodeSequence",),
    "ReferencedRequestSequence": ("RequestedProcedureCodeSequence",),
    "SharedFunctionalGroupsSequence": (),  # its FrameAnatomySequence, below
}


def _text(value: object) -> str:
    return "" if value is None else str(value).strip(" \x00")


def _code_of(item: Dataset) -> tuple[str, str, str | None] | None:
    """(designator, value, meaning) of one Code Sequence Macro item (PS3.3 8.8), or None."""
    value = ""
    for keyword in ("CodeValue", "LongCodeValue", "URNCodeValue"):
        value = _text(item.get(keyword))
        if value:
            break
    if not value or len(value) > _MAX_VALUE_LEN:
        return None
    scheme = _text(item.get("CodingSchemeDesignator"))
    meaning = _text(item.get("CodeMeaning")) or None
    return scheme, value, meaning


def _sequence_items(ds: Dataset, keyword: str) -> Iterator[Dataset]:
    try:
        seq = ds.get(keyword)
    except Exception:  # noqa: BLE001 - an undecodable element is simply not indexed
        return
    if seq is None:
        return
    try:
        yield from (item for item in seq if isinstance(item, Dataset))
    except TypeError:
        return


def _coded_items(ds: Dataset) -> Iterator[tuple[str, Dataset]]:
    """(Code Sequence keyword, item) for every indexed code of the object."""
    for keyword in CODE_SEQUENCES:
        for item in _sequence_items(ds, keyword):
            yield keyword, item
    for container, inner in _CONTAINERS.items():
        for outer in _sequence_items(ds, container):
            for keyword in inner:
                for item in _sequence_items(outer, keyword):
                    yield keyword, item
            if container == "SharedFunctionalGroupsSequence":
                for anatomy in _sequence_items(outer, "FrameAnatomySequence"):
                    for item in _sequence_items(anatomy, "AnatomicRegionSequence"):
                        yield "AnatomicRegionSequence", item


def extract_codes(ds: Dataset) -> list[CodeRow]:
    """The coded concepts of `ds` to index, normalised, without duplicates.

    Parameters
    ----------
    ds
        The dataset as ingest read it (pixel data need not be loaded).

    Returns
    -------
    list of CodeRow
        At most :data:`MAX_CODES_PER_INSTANCE` codes.
    """
    rows: dict[tuple[str, str, str, str], CodeRow] = {}
    for keyword, item in _coded_items(ds):
        code = _code_of(item)
        if code is None:
            continue
        scheme, value, meaning = code
        norm_scheme, norm_value = normalise_code(scheme, value)
        key = (keyword, keyword, norm_scheme, norm_value)
        if key not in rows:
            rows[key] = CodeRow(keyword, keyword, norm_scheme, norm_value, scheme, value, meaning)
        if len(rows) >= MAX_CODES_PER_INSTANCE:
            return list(rows.values())
    body_part = _text(ds.get("BodyPartExamined"))
    if body_part:
        mapped = body_part_to_code(body_part)
        if mapped is not None:
            scheme, value = mapped
            key = ("AnatomicRegionSequence", "BodyPartExamined", scheme, value)
            rows.setdefault(key, CodeRow("AnatomicRegionSequence", "BodyPartExamined", scheme,
                                         value, scheme, value, body_part))
    return list(rows.values())


__all__ = ["MAX_CODES_PER_INSTANCE", "extract_codes"]
