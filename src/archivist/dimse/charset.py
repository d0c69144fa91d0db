"""Specific Character Set of C-FIND responses (PS3.5 6.1, PS3.4 C.4.1.1.3.2).

A response is answered in the character set of the query when every text value of the response
can be written in it, the way pydicom writes it (its JIS X 0201 / 0208 / 0212 encoders for the
Japanese sets, escape sequences for ISO 2022 code extensions, PS3.5 6.1.2.5); otherwise in UTF-8,
which PS3.4 C.4.1.1.3.2 allows ("The SCP may return responses with a different Specific Character
Set"). Never with replacement characters: a value is never answered as ``?``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pydicom.charset import custom_encoders, python_encoding
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from archivist.index.extract import use_gb2312_escape_sequences

#: The VRs whose values Specific Character Set applies to (PS3.5 6.1.2.3).
_TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}
UTF8 = "ISO_IR 192"
use_gb2312_escape_sequences()  # GB 2312 values written with their escape sequence


def _texts(ds: Dataset) -> Iterator[str]:
    """Every text value of `ds`, sequence items included (they inherit its character set)."""
    for elem in ds:
        value = elem.value
        if elem.VR == "SQ":
            for item in value or []:
                yield from _texts(item)
        elif elem.VR in _TEXT_VRS and value not in (None, ""):
            if isinstance(value, (MultiValue, list, tuple)):
                yield from (str(v) for v in value if v not in (None, ""))
            else:
                yield str(value)


def _codecs(terms: list[str]) -> list[str] | None:
    """The Python codecs pydicom writes with for these defined terms (the default repertoire as
    ``ascii``), or None when they are not a character set pydicom can write.

    PS3.3 C.12.1.1.2: a single value replaces the default repertoire; several values are ISO 2022
    code extensions: ``ISO 2022`` terms, the first of which may be empty (the default); UTF-8,
    GB18030 and GBK cannot be one of them.
    """
    terms = [t.strip() for t in terms] or [""]
    codecs = []
    for n, term in enumerate(terms):
        if term in ("", "ISO_IR 6", "ISO 2022 IR 6") and n == 0:
            codecs.append("ascii")
            continue
        codec = python_encoding.get(term)
        if codec is None or (len(terms) > 1 and not term.startswith("ISO 2022 ")):
            return None
        codecs.append(codec)
    return codecs


def _encoder(codec: str) -> Callable[[str], object]:
    custom = custom_encoders.get(codec)
    if custom is not None:
        return lambda text: custom(text, errors="strict")
    return lambda text: text.encode(codec)


def _encodes(encode: Callable[[str], object], text: str) -> bool:
    try:
        encode(text)
    except (UnicodeError, ValueError):
        return False
    return True


def _writable(text: str, codecs: list[str]) -> bool:
    """Whether pydicom writes `text` with `codecs` without a replacement character: in one of
    them, or each character in one of them (it switches between them per run of characters)."""
    if text.isascii() and codecs[0] == "ascii":
        return True
    encoders = [_encoder(c) for c in codecs]
    if any(_encodes(encode, text) for encode in encoders):
        return True
    return len(encoders) > 1 and all(any(_encodes(encode, char) for encode in encoders)
                                     for char in set(text))


def choose_charset(ds: Dataset, requested: str | list[str] | None) -> str | list[str]:
    """The Specific Character Set to answer in: the query's when it can carry every value, else
    UTF-8; ``""`` for the default repertoire (no Specific Character Set in the response).

    Parameters
    ----------
    ds
        The response identifier with Unicode values.
    requested
        The Specific Character Set of the query identifier (``""`` or None for the default
        repertoire; a list for ISO 2022 code extensions, such as ``["", "ISO 2022 IR 87"]``).

    Returns
    -------
    str or list of str
        The value for the response's Specific Character Set (0008,0005).
    """
    if isinstance(requested, str):
        terms = [requested]
    else:
        terms = [str(t) for t in (requested or [])]
    codecs = _codecs(terms)
    texts = list(_texts(ds))
    if codecs is not None and all(_writable(t, codecs) for t in texts):
        if codecs == ["ascii"]:
            return ""
        return terms[0] if len(terms) == 1 else terms
    return UTF8
