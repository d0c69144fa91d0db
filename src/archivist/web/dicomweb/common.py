"""What every DICOMweb route shares: media types, Accept parsing, UID lookups, URLs and CORS."""

from __future__ import annotations

import re
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from archivist.archive.archive import Archive
from archivist.archive.retrieve import InstanceRef
from archivist.archive.transcode import (  # noqa: F401 - the syntaxes, for the web modules
    DEFLATED_LE,
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    NATIVE_SYNTAXES,
)
from archivist.core.levels import QueryLevel
from archivist.core.uids import is_valid_uid
from archivist.web.errors import HTTPProblem

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET = "application/octet-stream"

#: Media type of a frame (or bulk pixel data) in each encapsulated transfer syntax (PS3.18 8.7.3).
FRAME_MEDIA_TYPE: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}
#: Older or alternative spellings clients send.
MEDIA_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header, e.g. ``multipart/related; type="application/dicom"``."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def multipart(self) -> bool:
        return self.type == "multipart/related"

    @property
    def part_type(self) -> str:
        """The media type of each part (``type`` parameter), or the type itself."""
        if self.multipart:
            t = self.params.get("type", "")
            return MEDIA_ALIASES.get(t, t)
        return MEDIA_ALIASES.get(self.type, self.type)

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("([^"]*)"|[^;,]*)')


def parse_accept(header: str | None) -> list[MediaRange]:
    """Parse an Accept header (quoted parameters included); best first, by q then order."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[tuple[float, int, MediaRange]] = []
    # Split on commas that are not inside quotes.
    parts: list[str] = []
    depth = False
    cur: list[str] = []
    for ch in header:
        if ch == '"':
            depth = not depth
        if ch == "," and not depth:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    for order, part in enumerate(parts):
        part = part.strip()
        if not part:
            continue
        mtype = part.split(";", 1)[0].strip().lower()
        params: dict[str, str] = {}
        for m in _PARAM.finditer(part):
            key = m.group(1).lower()
            value = m.group(3) if m.group(3) is not None else m.group(2).strip()
            params[key] = value.strip()
        q = 1.0
        if "q" in params:
            try:
                q = float(params.pop("q"))
            except ValueError:
                q = 1.0
        if q <= 0:
            continue
        # A type parameter may itself carry a transfer-syntax (type="image/jp2;transfer-syntax=")
        inner = params.get("type", "")
        if ";" in inner:
            head, _, rest = inner.partition(";")
            params["type"] = head.strip().lower()
            for m in _PARAM.finditer(";" + rest):
                params.setdefault(m.group(1).lower(), (m.group(3) or m.group(2)).strip())
        elif inner:
            params["type"] = inner.strip().lower()
        ranges.append((q, order, MediaRange(mtype, params, q)))
    ranges.sort(key=lambda t: (-t[0], t[1]))
    return [r for _, _, r in ranges]


#: A space between two characters of a token: a "+" the query string decoded as a space.
_PLUS_AS_SPACE = re.compile(r"(?<=[\w.\-]) (?=[\w.\-])")


def accept_of(request: Request) -> list[MediaRange]:
    """Accept header, or the ``accept`` query parameter PS3.18 8.3.3.1 allows in its place."""
    query_accept = request.query_params.get("accept")
    if query_accept:
        # A "+" left unescaped in the URL (accept=application/dicom+json) arrives as a
        # space; no media type has a space between two of its characters.
        return parse_accept(_PLUS_AS_SPACE.sub("+", query_accept))
    return parse_accept(request.headers.get("accept"))


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header accepts gzip (RFC 9110 12.5.3): ``gzip`` (or
    ``x-gzip``), else ``*``, with a q-value above 0 (``gzip;q=0`` refuses it); coding names
    are case-insensitive."""
    star = False
    for item in (header or "").split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 1.0
        if coding in ("gzip", "x-gzip"):
            return q > 0
        if coding == "*":
            star = q > 0
    return star


#: The Accept media ranges that take an application/dicom+json answer.
JSON_RANGES = (DICOM_JSON, "application/json", "*/*", "application/*")


def require_json(request: Request, what: str) -> None:
    """406 unless the client accepts application/dicom+json (or JSON, or anything)."""
    for r in accept_of(request):
        if r.type in JSON_RANGES:
            return
    raise HTTPProblem(406, f"{what} is served as application/dicom+json only")


def check_uid(uid: str, what: str) -> str:
    if not is_valid_uid(uid):
        raise HTTPProblem(400, f"{what} {uid[:70]!r} is not a valid UID")
    return uid


def archive_of(request: Request) -> Archive:
    return request.app.state.archive  # type: ignore[no-any-return]


def base_url(request: Request) -> str:
    """The DICOMweb root as the client reached it (for RetrieveURL and BulkDataURI)."""
    root = str(request.base_url).rstrip("/")
    host = request.headers.get("host", "")
    server = request.scope.get("server")
    if host and ":" not in host.rsplit("]", 1)[-1] and server and server[1] not in (80, 443):
        # Some clients (dicomweb-client) send Host without the port; when they reached us
        # directly (not through a proxy with a name of its own), the URLs need our port.
        name = host.strip("[]")
        if name in (server[0], "localhost", "127.0.0.1", "::1"):
            root = root.replace(f"://{host}", f"://{host}:{server[1]}", 1)
    return f"{root}/dicomweb"


def find_instances(archive: Archive, study: str | None = None, series: str | None = None,
                   sop: str | None = None) -> list[InstanceRef]:
    """The stored instances under the given UIDs; 404 when there are none."""
    if sop:
        # One instance: looked up by its unique key, then checked to be under the study and
        # series the path names (a frame request's index work was a general search's).
        study = check_uid(study, "Study Instance UID") if study else study
        series = check_uid(series, "Series Instance UID") if series else series
        sop = check_uid(sop, "SOP Instance UID")
        ref = archive.retrieve.instance(sop)
        if ref is None or (study and ref.study_instance_uid != study) or (
                series and ref.series_instance_uid != series):
            raise HTTPProblem(404, "no such instance in this archive")
        return [ref]
    pairs: list[tuple[str, str]] = []
    if study:
        pairs.append(("StudyInstanceUID", check_uid(study, "Study Instance UID")))
    if series:
        pairs.append(("SeriesInstanceUID", check_uid(series, "Series Instance UID")))
    if sop:
        pairs.append(("SOPInstanceUID", check_uid(sop, "SOP Instance UID")))
    query = archive.search.query_from_pairs(QueryLevel.IMAGE, pairs)
    refs = list(archive.retrieve.instances(query))
    if not refs:
        what = "instance" if sop else ("series" if series else "study")
        raise HTTPProblem(404, f"no such {what} in this archive")
    return refs


class Cors:
    """CORS for the DICOMweb and WADO-URI routes, with origins from the settings.

    Reads are allowed from the configured origins (default ``*``); the preflight answers every
    method and header a DICOMweb client sends.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        settings = scope["app"].state.settings
        allowed: tuple[str, ...] = tuple(getattr(settings, "cors_origins", ("*",)))
        allow_value = None
        if origin is not None:
            if "*" in allowed:
                allow_value = "*"
            elif origin in allowed:
                allow_value = origin
        if scope["method"] == "OPTIONS" and origin is not None \
                and "access-control-request-method" in headers:
            if allow_value is None:
                await _plain(send, 403, b'{"status": 403, "error": "origin not allowed"}')
                return
            out = [
                (b"access-control-allow-origin", allow_value.encode()),
                (b"access-control-allow-methods",
                 b"GET, HEAD, POST, PUT, DELETE, OPTIONS" if "/workitems/" in scope["path"]
                 else b"GET, HEAD, POST, OPTIONS"),
                (b"access-control-allow-headers", headers.get(
                    "access-control-request-headers",
                    "Accept, Authorization, Content-Type, Range, If-None-Match").encode()),
                (b"access-control-max-age", b"600"),
                (b"content-length", b"0"),
                (b"vary", b"Origin"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": out})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and allow_value is not None:
                hdrs = list(message.get("headers", []))
                hdrs.append((b"access-control-allow-origin", allow_value.encode()))
                hdrs.append((b"access-control-expose-headers",
                             (b"Content-Type, Content-Length, ETag, Warning, Content-Range, "
                              b"Content-Location, Location")))
                hdrs.append((b"vary", b"Origin"))
                message = dict(message, headers=hdrs)
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def iterate_file(fh: Any, chunk: int = 1 << 20) -> Iterator[bytes]:
    try:
        while True:
            data = fh.read(chunk)
            if not data:
                return
            yield data
    finally:
        fh.close()

