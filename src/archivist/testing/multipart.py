"""A multipart/related parser of the tests' own (not the server's), for WADO-RS responses."""

from __future__ import annotations

import re
from typing import Any


def parts_of(response: Any) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a ``requests`` response: (headers with lower-case names, payload).

    Asserts the body's framing: every part between CRLFs, the closing delimiter at the end.
    """
    ctype = response.headers["content-type"]
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    assert m, ctype
    delim = b"--" + m.group(1).encode()
    body = response.content
    assert body.rstrip().endswith(delim + b"--"), "multipart body not closed"
    out = []
    for chunk in body.split(delim)[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, payload = chunk[2:-2].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        out.append((headers, payload))
    return out
