"""UID syntax (PS3.5 9.1) and checks applied to every UID that arrives over the network."""

from __future__ import annotations

import re

# PS3.5 9.1: components of digits separated by '.', at most 64 characters, each component
# either "0" or without a leading zero. Real-world objects often break the leading-zero rule,
# so it is checked separately (strict=True) and only a warning elsewhere.
_LOOSE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_STRICT_COMPONENT = re.compile(r"^(0|[1-9][0-9]*)$")


def is_valid_uid(value: object, *, strict: bool = False) -> bool:
    """True when `value` is a syntactically valid UID string (PS3.5 9.1).

    Parameters
    ----------
    value
        The candidate, usually a ``str``.
    strict
        Also refuse components with a leading zero (``1.02.3``).
    """
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not _LOOSE.fullmatch(value):
        return False
    if strict:
        return all(_STRICT_COMPONENT.fullmatch(c) for c in value.split("."))
    return True


def clean_uid(value: object) -> str:
    """Strip the padding a UID may carry (trailing NUL or spaces) and return it as ``str``."""
    if value is None:
        return ""
    return str(value).rstrip("\x00 ").strip()
