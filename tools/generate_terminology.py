"""Generate ``src/archivist/terminology/_data/`` from the tables pydicom and highdicom ship.

Usage::

    uv run --frozen --no-sync python tools/generate_terminology.py

Sources (both installed as ordinary dependencies, nothing is downloaded):

- pydicom ``pydicom/sr/_concepts_dict.py`` (PS3.16 Annex D codes and the CID members,
  ``concepts[scheme][keyword] = {value: (meaning, [cid, ...])}``), ``_cid_dict.py``
  (``name_for_cid``, ``cid_concepts``) and ``_snomed_dict.py`` (the PS3.16 Annex O map between
  retired SNOMED-RT style ``SRT`` values and ``SCT`` concept ids).
- highdicom ``_standard/anatomic_regions.json``: Body Part Examined (0018,0015) defined terms
  (PS3.16 Annex L, Table L-1) with an SCT code each.

Output: ``terminology.json.gz`` (gzip'd JSON, written with a fixed timestamp so that the same inputs
give the same bytes) and ``README.md`` with the source versions and the counts.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.resources
import json
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "src" / "archivist" / "terminology" / "_data"
DATA_FILE = "terminology.json.gz"
FORMAT = 3
#: Joins the items of a column: a character no code value, meaning or keyword contains, and that
#: JSON does not escape, so that the column loads as one plain string.
SEP = "|"

sys.path.insert(0, str(ROOT / "src"))
from archivist.terminology.text import STOP_WORDS, fold


def _value_key(value: str) -> tuple[int, int, str]:
    """Numeric code values in numeric order, the others after them alphabetically."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _clean(meaning: str) -> str:
    """A meaning without the invisible format characters pydicom's tables carry over from the
    standard's HTML (a zero-width space in DCM 111233 "Individual Impression/Recommendation")."""
    return "".join(ch for ch in meaning if unicodedata.category(ch) != "Cf")


#: The lower-case words of PS3.16 titles that pydicom glues to the word before them when it writes
#: a title without its spaces ("Reason for Removal from Operational Use" ->
#: ``ReasonforRemovalfromOperationalUse``). "a" and "an" are left out: they end too many words and
#: acronyms ("Aorta", "OCTA").
CONNECTORS = tuple(sorted(STOP_WORDS - {"a", "an"}, key=lambda w: (-len(w), w)))

#: A name's pieces: letters (an upper-case run, then any lower-case run), a number, or one other
#: character.
_PIECE = re.compile(r"[A-Z]*[a-z]+|[A-Z]+|\d+(?:\.\d+)?|.")


#: Words of PS3.16 titles that are in no code meaning nor data element name, for the connector
#: that pydicom glues to them (``Designationof``, ``Atriaand``, ``Prescribingand``,
#: ``Annulateand``).
TITLE_WORDS = frozenset({"annulate", "atria", "designation", "prescribing"})


def _is_word(word: str, known: set[str]) -> bool:
    """Whether lower-case `word`, or the singular of a regular plural, is in `known`."""
    return word in known or any(
        word.endswith(plural) and word[: -len(plural)] + singular in known
        for plural, singular in (("ies", "y"), ("es", ""), ("s", ""))
    )


def _unglue(word: str, known: set[str]) -> list[str] | None:
    """`word` as a known word followed by glued connectors (``Nearorin`` -> Near, or, in), or
    None when it does not end in a connector after a known word."""
    for connector in CONNECTORS:
        head = word[: -len(connector)]
        if word.endswith(connector) and len(head) > 1:
            split = [head] if _is_word(head.lower(), known) else _unglue(head, known)
            if split is not None:
                return [*split, connector]
    return None


def _words(piece: str, following: str, words: set[str], known: set[str]) -> list[str]:
    """Split one run of letters (``Reasonfor``, ``MRand``, ``DXView``'s ``XV``...) into words."""
    lower = piece.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    upper = piece[: len(piece) - len(lower)]
    if not lower or len(upper) < 2:
        if len(upper) == 1 and piece.lower() not in words:
            return _unglue(piece, known) or [piece]
        return [piece]
    if (lower in CONNECTORS and (upper[-1] + lower).lower() not in words) or (
        lower == "v" and following[:1].isdigit()
    ):
        return [upper, lower]  # CT,MRandPET; PIRADSv2.1
    return [upper[:-1], *_words(upper[-1] + lower, following, words, known)]


def cid_title(name: str, words: set[str], known: set[str]) -> str:
    """The title of a context group from pydicom's name for it: the PS3.16 title with its spaces
    (and hyphens) removed, ``ReasonforRemovalfromOperationalUse``.

    Words start at the capitals, as in :func:`archivist.terminology.catalogue.cid_title`, and a
    lower-case connector glued to the word before it (``Reasonfor``) is split off only when what
    precedes it is a known word and the whole is not a word of the code meanings:
    ``Reason for Removal from Operational Use``, while ``Vendor``, ``Command``, ``Brain`` and
    ``Sector`` stay whole. An acronym keeps a connector that follows it (``CT, MR and PET
    Anatomy Imaged``) unless its last letter starts a word (``IVUS Non Morphological Finding``).
    Punctuation is spaced as in the standard's titles (``Organ Part (Lateralized)``,
    ``Department/Unit/Service``).

    Parameters
    ----------
    name : str
        pydicom's name of the context group (``pydicom.sr._cid_dict.name_for_cid``).
    words : set of str
        Lower-case words (of the code meanings, the data element names...): a whole word found
        here is never split.
    known : set of str
        `words` and every lower-case word of the CID names: what may precede a connector.

    Returns
    -------
    str
        The title, for example ``Reason for Removal from Operational Use``.
    """
    pieces: list[str] = []
    for match in _PIECE.finditer(name):
        piece = match.group()
        if piece[:1].isalpha():
            pieces.extend(_words(piece, name[match.end():], words, known))
        else:
            pieces.append(piece)
    out: list[str] = []
    for i, piece in enumerate(pieces):
        before = pieces[i - 1] if i else ""
        glued = (
            not before
            or piece in (",", ")", "/", "®", "™")
            or before in ("(", "/")
            or (piece[0].isdigit() and len(before) == 1 and before.isalpha())
            or (before.islower() and before not in CONNECTORS and piece.isupper())
            or (before[-1].isdigit() and piece.isupper())
        )
        out.append(piece if glued else " " + piece)
    return "".join(out)


def cid_titles(names: dict[int, str], words: set[str]) -> dict[int, str]:
    """The title of every context group (see :func:`cid_title`).

    Parameters
    ----------
    names : dict
        CID number -> pydicom's name.
    words : set of str
        Lower-case words never to split: those of the code meanings, the data element names
        and :data:`TITLE_WORDS`.
    """
    known = set(words)
    for name in names.values():
        known.update(
            word.lower() for word in re.findall(r"[A-Z][a-z]+", name)
            if _unglue(word, words) is None
        )
    return {cid: cid_title(name, words, known) for cid, name in sorted(names.items())}


def build() -> dict[str, Any]:
    """Collect the tables into the document that ``archivist.terminology`` loads."""
    from pydicom._dicom_dict import DicomDictionary
    from pydicom.sr._cid_dict import cid_concepts, name_for_cid
    from pydicom.sr._concepts_dict import concepts
    from pydicom.sr._snomed_dict import mapping

    # (scheme, value) -> [(meaning, keyword, cids)], one entry per pydicom keyword.
    variants: dict[tuple[str, str], list[tuple[str, str, list[int]]]] = {}
    for scheme, by_keyword in concepts.items():
        for keyword, by_value in by_keyword.items():
            for value, (meaning, cids) in by_value.items():
                variants.setdefault((scheme, value), []).append(
                    (_clean(meaning), keyword, sorted(cids))
                )

    # Cross-check CID membership both ways: cid_concepts lists keywords, concepts lists CIDs.
    from_concepts = {
        (cid, scheme, keyword)
        for (scheme, _), entries in variants.items()
        for _, keyword, cids in entries
        for cid in cids
    }
    from_cids = {
        (cid, scheme, keyword)
        for cid, by_scheme in cid_concepts.items()
        for scheme, keywords in by_scheme.items()
        for keyword in keywords
    }
    if from_concepts != from_cids:
        raise SystemExit("pydicom's cid_concepts and concepts disagree; check the pydicom version")

    srt_to_sct = dict(sorted(mapping["SRT"].items()))
    for srt, sct in srt_to_sct.items():
        if mapping["SCT"].get(sct) != srt:
            raise SystemExit(f"SRT {srt} -> SCT {sct} is not mirrored in mapping['SCT']")
        if ("SCT", sct) not in variants:
            raise SystemExit(f"SRT {srt} maps to SCT {sct}, which pydicom does not define")

    scheme_order = list(concepts)
    keys = sorted(variants, key=lambda k: (scheme_order.index(k[0]), _value_key(k[1])))
    # The preferred meaning is the one used by the most context groups (the others are older or
    # longer forms, often only in Annex D or the SNOMED fully specified name). Preferred
    # variants come first, one per concept in concept order; the other variants follow.
    preferred: list[tuple[str, str, list[int]]] = []
    extra: list[tuple[int, tuple[str, str, list[int]]]] = []
    for index, key in enumerate(keys):
        ordered = sorted(enumerate(variants[key]), key=lambda e: (-len(e[1][2]), e[0]))
        preferred.append(ordered[0][1])
        extra.extend((index, variant) for _, variant in ordered[1:])
    all_variants = preferred + [variant for _, variant in extra]
    for text in [*(v for _, v in keys), *(m for m, _, _ in all_variants),
                 *(k for _, k, _ in all_variants), *srt_to_sct]:
        if SEP in text:
            raise SystemExit(f"the separator {SEP!r} occurs in {text!r}; choose another")

    schemes: list[list[Any]] = []
    for index, (scheme, _) in enumerate(keys):
        if schemes and schemes[-1][0] == scheme:
            schemes[-1][2] = index + 1
        else:
            schemes.append([scheme, index, index + 1])

    folded = [fold(meaning) for meaning, _, _ in all_variants]
    words: dict[str, list[int]] = {}
    for entry, text in enumerate(folded):
        for word in dict.fromkeys(text.split()):
            words.setdefault(word, []).append(entry)
    vocabulary = sorted(words)
    element_words = {
        word.lower() for entry in DicomDictionary.values() for word in re.findall("[A-Za-z]+", entry[2])
    }
    titles = cid_titles(name_for_cid, set(vocabulary) | element_words | TITLE_WORDS)

    anatomic = json.loads(
        importlib.resources.files("highdicom").joinpath("_standard/anatomic_regions.json")
        .read_text(encoding="utf-8")
    )
    body_parts = {
        term: [scheme, value, meaning, bool(laterality)]
        for term, (scheme, value, meaning, laterality) in sorted(anatomic.items())
    }

    return {
        "format": FORMAT,
        "source": {
            "pydicom": importlib.metadata.version("pydicom"),
            "highdicom": importlib.metadata.version("highdicom"),
            "generator": "tools/generate_terminology.py",
        },
        "separator": SEP,
        "schemes": schemes,
        "values": SEP.join(value for _, value in keys),
        "meanings": SEP.join(m for m, _, _ in all_variants),
        "folded": SEP.join(folded),
        "keywords": SEP.join(kw for _, kw, _ in all_variants),
        "cids": SEP.join(" ".join(map(str, cids)) for _, _, cids in all_variants),
        "extra_of": [index for index, _ in extra],
        "cid_names": {str(cid): name for cid, name in sorted(name_for_cid.items())},
        "cid_titles": {str(cid): title for cid, title in sorted(titles.items())},
        "srt": SEP.join(srt_to_sct),
        "srt_sct": SEP.join(srt_to_sct.values()),
        "words": SEP.join(vocabulary),
        "postings": SEP.join(" ".join(map(str, words[w])) for w in vocabulary),
        "body_parts": body_parts,
    }


def counts(document: dict[str, Any]) -> dict[str, Any]:
    """The figures the README and the tests quote."""
    by_scheme = {scheme: stop - start for scheme, start, stop in document["schemes"]}
    by_scheme = dict(sorted(by_scheme.items(), key=lambda kv: -kv[1]))
    n_concepts = sum(by_scheme.values())
    keywords = dict.fromkeys(by_scheme, 0)
    for scheme, start, stop in document["schemes"]:
        keywords[scheme] += stop - start
    for index in document["extra_of"]:
        scheme = next(s for s, start, stop in document["schemes"] if start <= index < stop)
        keywords[scheme] += 1
    cids = [int(c) for c in document["cid_names"]]
    members = sum(len(line.split()) for line in document["cids"].split(SEP))
    return {
        "concepts": n_concepts,
        "keywords": n_concepts + len(document["extra_of"]),
        "by_scheme": by_scheme,
        "keywords_by_scheme": keywords,
        "cids": len(cids),
        "cid_range": [min(cids), max(cids)],
        "cid_members": members,
        "srt_to_sct": len(document["srt"].split(SEP)),
        "body_parts": len(document["body_parts"]),
        "words": len(document["words"].split(SEP)),
    }


def readme(document: dict[str, Any], figures: dict[str, Any]) -> str:
    source = document["source"]
    rows = "\n".join(
        f"| {scheme} | {n:,} | {figures['keywords_by_scheme'][scheme]:,} |"
        for scheme, n in figures["by_scheme"].items()
    )
    return f"""# Terminology tables (generated, do not edit)

Produced by `tools/generate_terminology.py` from:

- pydicom {source['pydicom']}: `pydicom/sr/_concepts_dict.py`, `_cid_dict.py`, `_snomed_dict.py`
  (generated by pydicom from the DICOM FHIR ValueSet release, PS3.16 Annex D and Annex O;
  pydicom does not record the DICOM edition).
- highdicom {source['highdicom']}: `highdicom/_standard/anatomic_regions.json` (PS3.16 Annex L
  Body Part Examined defined terms, with the SCT codes highdicom pairs them with).

Regenerate after upgrading either package, then run `pytest tests/terminology` (the counts below
are checked by `tests/terminology/test_data.py`).

## Format

`{DATA_FILE}`: gzip'd UTF-8 JSON, format {document['format']}:

Columns rather than records, and lists of strings joined with `|` (`separator`), so that loading
creates few Python objects (about 10 ms):

- `schemes`: `[designator, first, end]` ranges of concept numbers (concepts are sorted by scheme,
  then by value); `values`: the Code Value of each concept.
- Variants (one per pydicom keyword, i.e. per form of the meaning): `meanings`, `folded` (the
  meaning as `archivist.terminology.text.fold` writes it), `keywords`, `cids` (space-separated
  CID numbers). Variant *i* < number of concepts is the preferred meaning of concept *i* (the
  form in the most context groups); `extra_of[j]` is the concept of variant (number of concepts
  + *j*).
- `words` / `postings`: the search index; each folded word and the variants containing it.
- `cid_names`: CID number -> pydicom's CamelCase name of the context group.
- `cid_titles`: CID number -> that name split into words (`generate_terminology.cid_title`:
  a lower-case connector pydicom glued to the word before it is split off only after a known
  word, so the title reads as in PS3.16 less its hyphens).
- `srt` / `srt_sct`: retired SNOMED-RT style value (`SRT`) and the SNOMED CT concept id (`SCT`)
  that replaces it (PS3.16 Annex O).
- `body_parts`: Body Part Examined term -> `[scheme, value, meaning, laterality applies]`.

## Counts

- Concepts (scheme, value): {figures['concepts']:,}; keywords (meaning variants): {figures['keywords']:,}
- Context groups: {figures['cids']:,} (CID {figures['cid_range'][0]} to CID {figures['cid_range'][1]}), \
{figures['cid_members']:,} memberships
- SRT -> SCT pairs: {figures['srt_to_sct']:,}
- Body Part Examined terms: {figures['body_parts']:,}
- Distinct words in meanings (search index): {figures['words']:,}

| Scheme | Codes | Keywords |
| --- | --- | --- |
{rows}
"""


def main() -> None:
    document = build()
    figures = counts(document)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with (
        open(OUT_DIR / DATA_FILE, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
    ):
        gz.write(payload)
    (OUT_DIR / "README.md").write_text(readme(document, figures), encoding="utf-8")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
