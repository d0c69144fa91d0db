"""DICOM terminology: PS3.16 codes and context groups, search, and checks of coded items.

The public surface of the package::

    search("pneumothorax", scheme=None, cid=None, limit=20) -> list[SearchHit]
    lookup("SCT", "36118008") -> Concept             (UnknownCode when not known)
    get_concept("SRT", "T-62000") -> Concept | None  (retired codes find their SCT concept)
    context_group(4) -> ContextGroup                 (UnknownContextGroup when not defined)
    schemes() -> list[CodingScheme]
    normalise_code("SRT", "T-62000") -> ("SCT", "10200004")
    body_part_to_code("CHEST") -> ("SCT", "816094009")
    body_part_code("CHEST") -> ("SCT", "816094009", "Chest")
    check_file(path) / check_dataset(ds) -> list[Finding]   (these two import pydicom)

The tables come from pydicom's ``pydicom.sr`` dictionaries and highdicom's Annex L map, generated
into ``_data/`` by ``tools/generate_terminology.py``; loading them does not import pydicom.
Every function takes an optional ``terminology`` argument (a :class:`Terminology`); by default
the packaged tables, loaded once per process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archivist.terminology.catalogue import (
    BodyPart,
    CodingScheme,
    Concept,
    ContextGroup,
    Terminology,
    UnknownCode,
    UnknownContextGroup,
    default_terminology,
    parse_code,
)
from archivist.terminology.findings import Finding, Severity
from archivist.terminology.search import SearchHit, SearchIndex

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = [
    "BodyPart",
    "CodingScheme",
    "Concept",
    "ContextGroup",
    "Finding",
    "SearchHit",
    "SearchIndex",
    "Severity",
    "Terminology",
    "UnknownCode",
    "UnknownContextGroup",
    "body_part_code",
    "body_part_to_code",
    "check_dataset",
    "check_file",
    "context_group",
    "default_terminology",
    "get_concept",
    "lookup",
    "normalise_code",
    "parse_code",
    "schemes",
    "search",
    "search_index",
]


def search_index(terminology: Terminology | None = None) -> SearchIndex:
    """The search index of `terminology` (default: the packaged tables), built once."""
    return _index_of(terminology or default_terminology())


@lru_cache(maxsize=4)
def _index_of(terminology: Terminology) -> SearchIndex:
    return SearchIndex(terminology)


def search(
    query: str,
    *,
    scheme: str | None = None,
    cid: int | None = None,
    limit: int = 20,
    terminology: Terminology | None = None,
) -> list[SearchHit]:
    """Ranked search by meaning, keyword or code value (see :mod:`.search` for the ranking).

    Parameters
    ----------
    query : str
        Words of a Code Meaning in any order, case or accents, word prefixes, small typos, a
        Code Value (``36118008``, retired ``T-62000``), ``SCHEME:VALUE`` or a pydicom keyword.
    scheme : str, optional
        Only this Coding Scheme Designator (PS3.16 Section 8).
    cid : int, optional
        Only members of this context group (PS3.16 Annex B).
    limit : int
        At most this many results; 0 for all.

    Returns
    -------
    list of SearchHit
        Best match first.
    """
    return search_index(terminology).search(query, scheme=scheme, cid=cid, limit=limit)


def lookup(scheme: str, value: str, terminology: Terminology | None = None) -> Concept:
    """The concept (scheme, value); retired SNOMED codes (SRT, SNM3, 99SDM) find their SCT one.

    Raises
    ------
    UnknownCode
        When the code is not in the PS3.16 tables.
    """
    return (terminology or default_terminology()).lookup(scheme, value)


def get_concept(
    scheme: str, value: str, terminology: Terminology | None = None
) -> Concept | None:
    """Like :func:`lookup`, but None for an unknown code."""
    return (terminology or default_terminology()).get(scheme, value)


def context_group(cid: int, terminology: Terminology | None = None) -> ContextGroup:
    """The context group CID `cid` and its members (PS3.16 Annex B).

    Raises
    ------
    UnknownContextGroup
        When the CID is not defined.
    """
    return (terminology or default_terminology()).context_group(cid)


def schemes(terminology: Terminology | None = None) -> list[CodingScheme]:
    """The coding schemes with codes in the tables (with counts), then the retired SNOMED ones."""
    return (terminology or default_terminology()).schemes()


def normalise_code(
    scheme: str, value: str, terminology: Terminology | None = None
) -> tuple[str, str]:
    """The key under which to index and match a coded value.

    A retired SNOMED code (designator ``SRT``, ``SNM3`` or ``99SDM``, PS3.16 Section 8.3) whose
    value is in the PS3.16 Annex O map becomes ``("SCT", concept id)``; any other code is passed
    through, with surrounding spaces (DICOM value padding) removed. Use it on both sides of a
    query by code (C-FIND, QIDO-RS) so that a query with SCT finds objects stored with SRT.

    Parameters
    ----------
    scheme : str
        Coding Scheme Designator (0008,0102).
    value : str
        Code Value (0008,0100), Long Code Value (0008,0119) or URN Code Value (0008,0120).

    Returns
    -------
    tuple of (str, str)
        (scheme, value), for example ``("SCT", "10200004")`` for ``("SRT", "T-62000")``.
    """
    return (terminology or default_terminology()).normalise(scheme, value)


def body_part_to_code(
    body_part_examined: str, terminology: Terminology | None = None
) -> tuple[str, str] | None:
    """The (scheme, value) of a Body Part Examined (0018,0015) defined term, or None.

    Uses highdicom's pairing of the PS3.16 Annex L terms with SCT codes (case-insensitive, spaces
    trimmed): ``"CHEST"`` -> ``("SCT", "816094009")``.
    """
    part = (terminology or default_terminology()).body_part(body_part_examined)
    return None if part is None else (part.scheme, part.value)


def body_part_code(
    body_part_examined: str, terminology: Terminology | None = None
) -> tuple[str, str, str] | None:
    """The (scheme, value, meaning) of the code of a Body Part Examined (0018,0015) defined term,
    or None.

    The meaning is the Code Meaning PS3.16 Annex L (Table L-1) gives the code, as a Code Sequence
    item would carry it, not the defined term: ``"HEAD"`` -> ``("SCT", "69536005", "Head")``,
    ``"CHEST"`` -> ``("SCT", "816094009", "Chest")``.
    """
    part = (terminology or default_terminology()).body_part(body_part_examined)
    return None if part is None else (part.scheme, part.value, part.meaning)


def check_dataset(
    dataset: Dataset, terminology: Terminology | None = None, **options: Any
) -> list[Finding]:
    """Check every coded item of a pydicom dataset, at any depth (see :mod:`.check`)."""
    from archivist.terminology.check import check_dataset as _check

    return _check(dataset, terminology or default_terminology(), **options)


def check_file(
    path: str | Path, terminology: Terminology | None = None, **options: Any
) -> list[Finding]:
    """Read a DICOM file and check every coded item in it (see :mod:`.check`)."""
    from archivist.terminology.check import check_file as _check

    return _check(path, terminology or default_terminology(), **options)
