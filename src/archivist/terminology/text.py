"""Text folding for terminology search and meaning comparison.

Code Meaning (0008,0104) is display text (PS3.3 Section 8.3): the same concept may be written with
different case, spacing, punctuation or accents. Everything that compares or searches meanings
goes through :func:`fold` and :func:`tokens`, and the generator (``tools/generate_terminology.py``)
stores meanings already folded with the same functions, so that the index and the queries agree.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["STOP_WORDS", "damerau_distance", "fold", "tokens"]

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
