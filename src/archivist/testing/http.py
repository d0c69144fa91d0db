"""HTTP for the tests, with the standard library: a GET answered whatever its status, and a
STOW-RS of Part 10 objects in one multipart/related request."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any


def get(url: str, accept: str = "*/*", timeout: float = 20) -> tuple[int, bytes]:
    """``GET url``: (status, body), an HTTP error status included."""
    req = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def stow(base_url: str, objects: Iterable[bytes], timeout: float = 30) -> tuple[int, Any]:
    """STOW-RS of `objects` (Part 10 bytes, one part each) to ``base_url/dicomweb/studies``:
    (status, the DICOM JSON response, None when the body is empty)."""
    body = b"".join(b"--B\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
                    for data in objects) + b"--B--\r\n"
    req = urllib.request.Request(
        f"{base_url}/dicomweb/studies", data=body, method="POST",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=B',
                 "Accept": "application/dicom+json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, answer = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, answer = err.code, err.read()
    return status, json.loads(answer) if answer else None
