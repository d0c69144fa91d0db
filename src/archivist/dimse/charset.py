"""Specific Character Set of C-FIND responses (PS3.5 6.1, PS3.4 C.4.1.1.3.1)."""

from __future__ import annotations

from pydicom.charset import python_encoding
from pydicom.dataset import Dataset

_TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}


def _codec(term: str) -> str | None:
    term = term.strip()
    if not term or term == "ISO_IR 6":
        return "ascii"
    return python_encoding.get(term)


def _texts(ds: Dataset) -> list[str]:
    out = []
    for elem in ds:
        if elem.VR in _TEXT_VRS and elem.value not in (None, ""):
            out.append(str(elem.value))
    return out


def choose_charset(ds: Dataset, requested: str | list[str] | None) -> str:
    """The character set to answer in: the query's when it can carry every value, else UTF-8.

    Parameters
    ----------
    ds
        The response identifier with Unicode values.
    requested
        The Specific Character Set of the query identifier ('' for the default repertoire).
    """
    terms = [requested] if isinstance(requested, str) else list(requested or [])
    term = terms[0] if len(terms) == 1 else ""
    texts = _texts(ds)
    if len(terms) <= 1:
        codec = _codec(term or "")
        if codec is not None:
            try:
                for t in texts:
                    t.encode(codec)
                return term if term and term != "ISO_IR 6" else ("" if codec == "ascii" else term)
            except UnicodeEncodeError:
                pass
    if all(t.isascii() for t in texts) and not terms:
        return ""
    return "ISO_IR 192"
