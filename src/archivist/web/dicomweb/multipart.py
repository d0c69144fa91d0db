"""multipart/related (RFC 2387) for DICOMweb: a streaming writer and a streaming parser.

The parser never holds a whole part in memory: each part's body goes to a file as it arrives,
so a 2 GB STOW-RS request costs a small buffer, not 2 GB.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_PART_HEADER = 16 * 1024


def new_boundary() -> str:
    return f"archivist-{secrets.token_hex(12)}"


def part_header(boundary: str, content_type: str, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    for k, v in (extra or {}).items():
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")


def multipart_stream(boundary: str, parts: Iterator[tuple[str, Iterator[bytes]]],
                     ) -> Iterator[bytes]:
    """Yield a multipart body from ``(content_type, chunks)`` parts, lazily."""
    for content_type, chunks in parts:
        yield part_header(boundary, content_type)
        yield from chunks
        yield b"\r\n"
    yield closing(boundary)


class MultipartError(ValueError):
    """A request body that is not well-formed multipart/related."""


_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("([^"]*)"|[^;]*)')


def content_type_params(header: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type header into its lower-cased media type and parameters."""
    mtype = header.split(";", 1)[0].strip().lower()
    params: dict[str, str] = {}
    for m in _PARAM.finditer(header):
        params[m.group(1).lower()] = (m.group(3) if m.group(3) is not None
                                      else m.group(2)).strip()
    return mtype, params


@dataclass
class Part:
    """One received part: its headers and its body, held in memory (`data`) while it is small,
    else in the file it was written to (`path`)."""

    headers: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    data: bytes | None = None
    size: int = 0
    complete: bool = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class StreamingParser:
    """Feed body chunks; completed parts are handed to `on_part` as soon as they end.

    Parameters
    ----------
    boundary
        The boundary parameter of the request's Content-Type.
    new_file
        Returns a fresh path to write one part's body to, once it outgrows `spill` bytes (a
        smaller part stays in memory).
    """

    def __init__(self, boundary: str, new_file: Callable[[], Path], *,
                 spill: int = 1 << 20) -> None:
        if not boundary or len(boundary) > 200:
            raise MultipartError("missing or invalid multipart boundary")
        self.delimiter = b"\r\n--" + boundary.encode("latin-1")
        self.first = b"--" + boundary.encode("latin-1")
        self.new_file = new_file
        self.buffer = b""
        self.state = "preamble"
        self.part: Part | None = None
        self.fh: object | None = None
        self.held = bytearray()  # the body of the current part while it is under `spill`
        self.spill = spill
        self.finished = False

    def _open_part(self) -> None:
        self.part = Part()
        self.held = bytearray()

    def _close_part(self, complete: bool) -> Part | None:
        part = self.part
        if self.fh is not None:
            self.fh.close()  # type: ignore[attr-defined]
            self.fh = None
        elif part is not None:
            part.data = bytes(self.held)
        self.held = bytearray()
        self.part = None
        if part is not None:
            part.complete = complete
        return part

    def feed(self, chunk: bytes) -> list[Part]:
        """Consume a chunk; return the parts completed by it."""
        done: list[Part] = []
        if self.finished:
            return done
        self.buffer += chunk
        while True:
            if self.state == "preamble":
                # The first delimiter may come without the leading CRLF.
                idx = self.buffer.find(self.first)
                if idx < 0:
                    if len(self.buffer) > MAX_PART_HEADER:
                        raise MultipartError("no multipart boundary found in the body")
                    return done
                after = idx + len(self.first)
                if len(self.buffer) < after + 2:
                    return done
                tail = self.buffer[after:after + 2]
                if tail == b"--":
                    self.finished = True
                    return done
                self.buffer = self.buffer[after:]
                self.state = "boundary-line"
            if self.state == "boundary-line":
                eol = self.buffer.find(b"\r\n")
                if eol < 0:
                    if len(self.buffer) > 1024:
                        raise MultipartError("malformed boundary line")
                    return done
                self.buffer = self.buffer[eol + 2:]
                self.state = "headers"
                self._open_part()
            if self.state == "headers":
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0 and self.buffer.startswith(b"\r\n"):
                    end = -2  # a part with no headers at all
                if end == -1:
                    if len(self.buffer) > MAX_PART_HEADER:
                        raise MultipartError("part headers too long")
                    return done
                raw = self.buffer[:max(end, 0)].decode("latin-1")
                assert self.part is not None
                for line in raw.split("\r\n"):
                    if ":" in line:
                        k, v = line.split(":", 1)
                        self.part.headers[k.strip().lower()] = v.strip()
                self.buffer = self.buffer[end + 4:]
                self.state = "body"
            if self.state == "body":
                idx = self.buffer.find(self.delimiter)
                if idx < 0:
                    keep = len(self.delimiter) + 2
                    if len(self.buffer) > keep:
                        self._write(self.buffer[:-keep])
                        self.buffer = self.buffer[-keep:]
                    return done
                self._write(self.buffer[:idx])
                rest = self.buffer[idx + len(self.delimiter):]
                if len(rest) < 2:
                    # Wait for the two bytes that tell a next part from the end.
                    self._write_back(idx)
                    return done
                part = self._close_part(True)
                if part is not None:
                    done.append(part)
                if rest[:2] == b"--":
                    self.finished = True
                    self.buffer = b""
                    return done
                self.buffer = rest
                self.state = "boundary-line"

    def _write_back(self, idx: int) -> None:
        # Everything before idx was written; keep the delimiter in the buffer.
        self.buffer = self.buffer[idx:]

    def _write(self, data: bytes) -> None:
        if not data or self.part is None:
            return
        self.part.size += len(data)
        if self.fh is None:
            if self.part.size <= self.spill:
                self.held += data
                return
            path = self.new_file()
            self.part.path = path
            self.fh = open(path, "wb")  # noqa: SIM115 - closed in _close_part
            self.fh.write(self.held)  # type: ignore[attr-defined]
            self.held = bytearray()
        self.fh.write(data)  # type: ignore[attr-defined]

    def close(self) -> Part | None:
        """End of input: an unfinished part is returned incomplete (its file is kept)."""
        if self.part is not None:
            if self.state == "body" and self.buffer:
                self._write(self.buffer)
                self.buffer = b""
            return self._close_part(False)
        return None


def remove_quietly(path: Path | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except OSError:
        pass
