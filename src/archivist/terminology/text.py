"""Text folding for terminology search and meaning comparison.

Code Meaning (0008,0104) is display text (PS3.3 Section 8.3): the same concept may be written with
different case, spacing, punctuation or accents. Everything that compares or searches meanings
goes through :func:`fold` and :func:`tokens`, and the generator (``tools/generate_terminology.py``)
stores meanings already folded with the same functions, so that the index and the queries agree.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "STOP_WORDS",
    "american_spelling",
    "damerau_distance",
    "fold",
    "inflections",
    "spelling_variants",
    "strip_semantic_tag",
    "tokens",
]

#: Words that carry no meaning on their own in PS3.16 code meanings. A query made only of stop
#: words still searches them.
STOP_WORDS = frozenset(
    {"a", "an", "and", "as", "at", "by", "for", "from", "in", "into", "of", "on", "or", "the",
     "to", "with", "without"}
)

_WORD = re.compile(r"[^\W_]+")


def fold(text: str) -> str:
    """Fold text for comparison: accents removed, case folded, punctuation and runs of spaces
    collapsed to one space.

    Parameters
    ----------
    text : str
        A code meaning, a keyword or a user's query.

    Returns
    -------
    str
        The words of `text`, lower case without diacritics, joined by single spaces
        (``"Hémorrhage, (finding)"`` -> ``"hemorrhage finding"``).
    """
    if text.isascii():
        return " ".join(_WORD.findall(text.lower()))
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_WORD.findall(stripped.casefold()))


#: The semantic tag that ends a SNOMED CT Fully Specified Name: ``(disorder)``, ``(body
#: structure)``, ``(qualifier value)``, ``(morphologic abnormality)``...
_SEMANTIC_TAG = re.compile(r"\s*\((?:[a-z]+(?: [a-z]+){0,3}|[a-z]+/[a-z]+)\)\s*$")


def strip_semantic_tag(text: str) -> str:
    """`text` without a trailing SNOMED CT semantic tag: ``Pneumothorax (disorder)`` ->
    ``Pneumothorax``; other text unchanged (a tag is lower-case words in parentheses)."""
    return _SEMANTIC_TAG.sub("", text) if text.endswith(")") else text


def tokens(text: str) -> list[str]:
    """The folded words of `text`, in order (see :func:`fold`)."""
    return fold(text).split()


def damerau_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment edit distance between `a` and `b`, giving up above `limit`.

    Insertions, deletions, substitutions and transpositions of two adjacent characters each
    cost 1; the usual model of typing errors.

    Parameters
    ----------
    a, b : str
        The two words.
    limit : int
        The largest distance of interest.

    Returns
    -------
    int
        The distance, or ``limit + 1`` when it is larger than `limit`.
    """
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        row_min = i
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                value = min(value, previous2[j - 2] + 1)
            current[j] = value
            row_min = min(row_min, value)
        if row_min > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[len(b)] if previous[len(b)] <= limit else limit + 1


#: Irregular plurals met in anatomy and clinical text (both directions are tried).
_IRREGULAR_PLURALS = {
    "feet": "foot", "teeth": "tooth", "men": "man", "women": "woman", "children": "child",
    "mice": "mouse", "lice": "louse", "geese": "goose", "oxen": "ox",
}
_IRREGULAR_SINGULARS = {single: plural for plural, single in _IRREGULAR_PLURALS.items()}

#: British spellings -> the American ones PS3.16 uses, as (pattern, replacement) on a folded
#: word: ``tumour``, ``haemorrhage``, ``oedema``, ``centre``, ``localisation``, ``catalogue``.
_SPELLINGS = (
    (re.compile(r"(?<=..)our(?=s?$|ed$|ing$|al$|ous$)"), "or"),
    (re.compile(r"ae(?!$)"), "e"),
    (re.compile(r"oe(?=.)"), "e"),
    (re.compile(r"(?<=[bt])re(?=s?$)"), "er"),
    (re.compile(r"(?<=.)is(?=e$|es$|ed$|ing$|ation$|ations$)"), "iz"),
    (re.compile(r"(?<=.)ys(?=e$|es$|ed$|ing$)"), "yz"),
    (re.compile(r"ogue(?=s?$)"), "og"),
    (re.compile(r"(?<=[aeiou])ll(?=ed$|ing$)"), "l"),
    (re.compile(r"gramme(?=s?$)"), "gram"),
)


def american_spelling(word: str) -> str:
    """A (folded) word with every British-to-American rule applied: ``haemorrhages`` ->
    ``hemorrhages``, ``oesophageal`` -> ``esophageal``, ``centre`` -> ``center``."""
    for pattern, replacement in _SPELLINGS:
        word = pattern.sub(replacement, word)
    return word


def spelling_variants(word: str) -> set[str]:
    """American spellings of a (folded) British-spelt word: ``haemorrhage`` -> ``hemorrhage``,
    ``tumours`` -> ``tumors``; each rule alone and all together. Empty when none applies."""
    found = {pattern.sub(replacement, word) for pattern, replacement in _SPELLINGS}
    found.add(american_spelling(word))
    found.discard(word)
    return found


def inflections(word: str) -> set[str]:
    """The singular and plural forms an English (or Latin) anatomical word may take: ``lungs``
    -> ``lung``, ``ovaries`` -> ``ovary``, ``vertebrae`` -> ``vertebra``, ``bronchi`` ->
    ``bronchus``, ``apices`` -> ``apex``, ``metastases`` -> ``metastasis``, and the other way
    round. Candidates only: the caller keeps those that are real words of its vocabulary."""
    out: set[str] = set()
    if word in _IRREGULAR_PLURALS:
        out.add(_IRREGULAR_PLURALS[word])
    if word in _IRREGULAR_SINGULARS:
        out.add(_IRREGULAR_SINGULARS[word])
    if len(word) < 3 or not word.isalpha():
        return out
    # Singular forms of a plural.
    if len(word) >= 4:
        if word.endswith("ies"):
            out.add(word[:-3] + "y")
        if word.endswith("ices"):
            out.update((word[:-4] + "ex", word[:-4] + "ix"))
        if word.endswith("ves"):
            out.update((word[:-3] + "f", word[:-3] + "fe"))
        if word.endswith("es"):
            out.update((word[:-2], word[:-2] + "is"))
        if word.endswith("s") and not word.endswith(("ss", "us", "is")):
            out.add(word[:-1])
        if word.endswith("ae"):
            out.add(word[:-1])
        if word.endswith("i") and len(word) >= 5:
            out.add(word[:-1] + "us")
        if word.endswith("a"):
            out.update((word[:-1] + "um", word[:-1] + "on"))
    # Plural forms of a singular.
    out.update((word + "s", word + "es"))
    if word.endswith("y"):
        out.add(word[:-1] + "ies")
    if word.endswith("a"):
        out.add(word + "e")
    if word.endswith("us"):
        out.add(word[:-2] + "i")
    if word.endswith(("um", "on")):
        out.add(word[:-2] + "a")
    if word.endswith(("ex", "ix")):
        out.add(word[:-2] + "ices")
    if word.endswith("is"):
        out.add(word[:-2] + "es")
    if word.endswith("f"):
        out.add(word[:-1] + "ves")
    if word.endswith("fe"):
        out.add(word[:-2] + "ves")
    out.discard(word)
    return out
