"""Password hashes for the HTTP users (``http_users``): scrypt (RFC 7914), salted, in one string
``scrypt$N$r$p$<salt>$<hash>`` (salt and hash in unpadded base64), so that a settings file holds
no password. ``archivist hash-password`` makes one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

__all__ = ["FORMAT", "hash_password", "verify_password"]

#: What a stored hash looks like (config.py checks settings against the same shape).
FORMAT = re.compile(r"^scrypt\$(\d{1,7})\$(\d{1,3})\$(\d{1,3})\$([A-Za-z0-9+/]{8,})\$"
                    r"([A-Za-z0-9+/]{16,})$")
_N, _R, _P = 1 << 14, 8, 1  # ~16 MiB and a few tens of milliseconds a check
_MAX_N = 1 << 20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, like: str | None = None) -> str:
    """A new salted hash of `password`, with the default costs or, given `like` (a stored
    hash), with its costs: checking a password against it takes as long."""
    n, r, p = _N, _R, _P
    m = FORMAT.match(like or "")
    if m is not None:
        n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32,
                            maxmem=256 * 1024 * 1024)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` was made from (False for a malformed hash)."""
    m = FORMAT.match(stored)
    if m is None:
        return False
    n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if n < 2 or n > _MAX_N or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        return False
    expected = _unb64(m.group(5))
    try:
        digest = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(m.group(4)), n=n, r=r,
                                p=p, dklen=len(expected), maxmem=256 * 1024 * 1024)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, expected)
