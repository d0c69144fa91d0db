"""The HTTP application: health, a small JSON API, and (later) DICOMweb and the viewer."""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from archivist.archive.archive import Archive
from archivist.config import Settings, is_loopback
from archivist.errors import IndexError_
from archivist.web.auth import BasicAuth
from archivist.web.errors import problem_response

log = logging.getLogger("archivist.web")

# Feature modules mounted in this order; the viewer comes last because it serves "/".
_ROUTE_MODULES = ("codes", "api", "download", "dicomweb", "wado_uri", "inventory_api",
                  "mpps_api", "archive_page", "viewer")


class HttpActivity:
    """HTTP traffic of the whole server, for background work that must stay out of its way.

    Each worker writes two cells of an array shared by the worker processes (one writer per
    cell: the worker's event loop): when it last began or finished a request
    (``time.monotonic()``, one clock for every process), and how many it is answering. The
    metadata warmer runs in one worker while requests may land in another. Without a shared
    array the cells are this process's own.
    """

    def __init__(self, cells: Any = None, index: int = 0, workers: int = 1) -> None:
        if cells is None:
            cells, index, workers = [0.0, 0.0], 0, 1
        self._cells = cells
        self._stamp = index
        self._open = workers + index
        self._workers = workers

    def begin(self) -> None:
        self._cells[self._open] += 1
        self._cells[self._stamp] = time.monotonic()

    def end(self) -> None:
        self._cells[self._open] = max(0.0, self._cells[self._open] - 1)
        self._cells[self._stamp] = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds since the last HTTP request anywhere in the server ended; 0 while one is
        being answered."""
        cells = self._cells[:2 * self._workers]
        if any(c > 0 for c in cells[self._workers:]):
            return 0.0
        return max(0.0, time.monotonic() - max(cells[:self._workers]))


class _Activity:
    """Keeps the server's :class:`HttpActivity` (``state.http_activity``), so background work
    (the metadata warmer) can stay out of the way of requests being answered, in this worker
    or another."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        activity: HttpActivity = self.state.http_activity
        activity.begin()
        try:
            await self.app(scope, receive, send)
        finally:
            activity.end()


def _headers_named(scope: Any, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == name]


async def _refuse(scope: Any, receive: Any, send: Any, status: int, message: str) -> None:
    """Answer `status` with the JSON body of every error of this server, before the body of
    the request is read (nothing of it is acted on)."""
    await problem_response(status, message, {"X-Content-Type-Options": "nosniff"})(
        scope, receive, send)


#: A Host header's name part: an IPv6 literal in brackets, or anything up to the port.
_HOST = re.compile(r"^(?:\[(?P<v6>[^\]]*)\]|(?P<name>[^:]*))(?::\d*)?$")
#: Names of digits and dots are IPv4 addresses in some spelling (``127.1``); no DNS name is.
_DOTTED_DIGITS = re.compile(r"^[0-9.]+$")


def host_cannot_rebind(value: str) -> bool:
    """Whether the Host header `value` names this server in a way no public DNS answer
    controls: an IP address, ``localhost`` and its subdomains (which browsers resolve to
    loopback themselves), or a name without a dot (this machine's short name, resolved by the
    hosts file or the local network; a web page's re-binding name is a public domain)."""
    m = _HOST.match(value.strip().lower())
    if m is None:
        return False
    if m.group("v6") is not None:
        try:
            ipaddress.IPv6Address(m.group("v6").split("%", 1)[0])
        except ValueError:
            return False
        return True
    name = m.group("name").rstrip(".")
    return "." not in name or name.endswith(".localhost") or bool(_DOTTED_DIGITS.match(name))


class _HostCheck:
    """DNS rebinding: a page whose host name an attacker re-points at this server (its DNS
    answer changed to 127.0.0.1 after the page loaded) is same-origin with it, so the browser
    lets the page read and write everything; only the Host header tells. A server on loopback
    therefore answers Host names that cannot be re-bound (IP addresses, ``localhost``, names
    without a dot: :func:`host_cannot_rebind`) and those in ``http_hosts`` (a reverse proxy
    that passes on its own name: add it there), and 403 to the rest; ``http_hosts = ["*"]`` turns the check off. On another address the names
    are checked when ``http_hosts`` is set. ``/healthz`` is answered whatever the name. Two
    Host headers are a 400 (RFC 9112 3.2)."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        names = settings.http_hosts
        self.names = frozenset(names)
        self.enforced = "*" not in names and (bool(names) or is_loopback(settings.host))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):  # UPS-RS events: a WebSocket
            await self.app(scope, receive, send)
            return
        hosts = _headers_named(scope, b"host")
        if len(hosts) > 1:
            await _refuse(scope, receive, send, 400,
                          "a request must have one Host header (RFC 9112 3.2)")
            return
        if (self.enforced and hosts and scope.get("path") != "/healthz"
                and not host_cannot_rebind(hosts[0])):
            m = _HOST.match(hosts[0].strip().lower())
            name = (m.group("name") or "").rstrip(".") if m else ""
            if name not in self.names:
                await _refuse(scope, receive, send, 403,
                              "this server does not answer the host name "
                              f"{hosts[0][:100]!r}: use its address or localhost, or add the "
                              "name to the http_hosts setting (ARCHIVIST_HTTP_HOSTS)")
                return
        await self.app(scope, receive, send)


#: What a preflight may grant any origin of ``cors_origins`` (``*`` included): reads.
_PREFLIGHT_READS = frozenset({"GET", "HEAD"})
#: The methods besides POST that UPS-RS writes with (a listed origin's preflight may ask).
_UPS_RS_WRITES = frozenset({"PUT", "DELETE"})


class _CrossOriginWrites:
    """Cross-site request forgery: a web page on another origin may make the browser send a
    POST (``text/plain``, ``multipart/form-data``: no preflight) or, after a preflight, any
    request to this server, which has no login to tell the page from the user. Writes (any
    method but GET, HEAD and OPTIONS) coming from another origin are refused with 403 unless
    ``cors_origins`` names that origin: ``*`` there opens reads, not writes. A browser says
    where a request comes from with ``Sec-Fetch-Site``, else with ``Origin`` (compared with
    the Host header); a client that sends neither is not a browser page and is answered.

    Preflights follow: one asking for POST is passed on (to the CORS layer of DICOMweb) only
    for an origin named in ``cors_origins``, and so is one asking for PUT or DELETE on a UPS-RS
    workitem (``/dicomweb/workitems/...``); one asking for another method is refused. A
    WebSocket (the UPS-RS event channel) is a write: refused from another origin unless
    ``cors_origins`` names it."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.listed = frozenset(o for o in settings.cors_origins if o != "*")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        origins = _headers_named(scope, b"origin")
        origin = origins[0] if origins else None
        if scope["type"] == "websocket":
            # A page may open a WebSocket to any server (no CORS); the UPS-RS event channel
            # takes events from the outbox, so it is guarded as a write.
            if self._foreign(scope, origin) and origin not in self.listed:
                await _refuse(scope, receive, send, 403,
                              f"a WebSocket from another origin ({(origin or '?')[:100]!r}) "
                              "is refused: it needs the origin named in cors_origins")
                return
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "OPTIONS":
            wanted = (_headers_named(scope, b"access-control-request-method") or [""])[0]
            wanted = wanted.strip().upper()
            if (origin is not None and wanted and wanted not in _PREFLIGHT_READS
                    and not (origin in self.listed and (wanted == "POST" or (
                        wanted in _UPS_RS_WRITES
                        and scope.get("path", "").startswith("/dicomweb/workitems/"))))):
                await _refuse(scope, receive, send, 403,
                              f"{wanted} from origin {origin[:100]!r} is not allowed: "
                              "cross-origin writes need the origin named in cors_origins")
                return
        elif method not in _PREFLIGHT_READS and self._foreign(scope, origin) \
                and origin not in self.listed:
            await _refuse(scope, receive, send, 403,
                          f"{method} from another origin ({(origin or '?')[:100]!r}) "
                          "is refused: cross-origin writes need the origin named in "
                          "cors_origins")
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _foreign(scope: Any, origin: str | None) -> bool:
        site = _headers_named(scope, b"sec-fetch-site")
        if site:
            return site[0].strip().lower() not in ("same-origin", "none")
        if origin is None:
            return False
        hosts = _headers_named(scope, b"host")
        _scheme, sep, netloc = origin.strip().lower().partition("://")
        return not sep or not hosts or netloc.rstrip("/") != hosts[0].strip().lower()


class _NoSniff:
    """``X-Content-Type-Options: nosniff`` on every answer: a DICOM or JSON body holds values
    anybody could have stored (a patient name ``<script>...``) and must never be taken for
    HTML by a browser guessing its type."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-content-type-options" for k, _v in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                    message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, send_nosniff)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTP errors (a method a route does not allow: 405 with its Allow
    header) with the JSON body every other error of this server has."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return problem_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def _index_unavailable(request: Request, exc: Exception) -> Response:
    """The index (its database) failing under a route that does not say so itself: 503 with
    the reason's kind and Retry-After, as DICOMweb's routes answer, not a bare 500."""
    log.warning("%s %s: the index failed (%s)", request.method, request.url.path,
                type(exc).__name__)
    detail = str(exc) if isinstance(exc, IndexError_) else \
        f"index read failed: {type(exc).__name__}"
    return problem_response(503, detail, {"Retry-After": "5"})


class IndexProbe:
    """Whether the index answers a read, for ``/healthz``: at most one probe at a time (a
    database that hangs must not pile threads up, whatever the polling rate), its outcome
    reused for a second, and a probe not answered within :attr:`TIMEOUT` taken as a failure."""

    TIMEOUT = 3.0
    FRESH = 1.0

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._running: asyncio.Future[str] | None = None
        self._outcome: tuple[float, str] | None = None

    def _probe(self) -> str:
        try:
            self.archive.index.last_change()
        except Exception as exc:  # noqa: BLE001 - any failure of the database is the answer
            cause = getattr(exc, "orig", None) or exc
            log.warning("health check: the index failed (%s)", type(cause).__name__)
            return f"the index cannot be read ({type(cause).__name__})"
        return ""

    async def problem(self) -> str:
        """"" when the index answered, else why not."""
        now = time.monotonic()
        if self._outcome is not None and now - self._outcome[0] < self.FRESH:
            return self._outcome[1]
        if self._running is None or self._running.done():
            loop = asyncio.get_running_loop()
            self._running = asyncio.ensure_future(loop.run_in_executor(None, self._probe))
        try:
            problem = await asyncio.wait_for(asyncio.shield(self._running), self.TIMEOUT)
        except TimeoutError:
            problem = f"the index did not answer within {self.TIMEOUT:.0f} s"
        self._outcome = (time.monotonic(), problem)
        return problem


@dataclass
class Health:
    """Readiness flags flipped by the process that runs the listeners."""

    dimse_ready: bool = False
    http_ready: bool = False
    stopping: bool = False
    #: Seconds since the last DICOM association in the whole server (all workers) ended, 0
    #: while one is open, when known: background work waits for DIMSE quiet as for HTTP quiet.
    dimse_quiet_for: Callable[[], float] | None = None
    #: HTTP requests in the whole server (all workers), when shared; else this process's own.
    http_activity: HttpActivity | None = None

    @property
    def ok(self) -> bool:
        return self.dimse_ready and self.http_ready and not self.stopping


def create_app(archive: Archive, health: Health | None = None, *,
               background: bool = True) -> Starlette:
    """Build the Starlette application for one archive.

    `background` False: this process is one of several workers serving the same archive and
    another one runs the background work (feature modules read ``app.state.background``).
    """
    health = health or Health(dimse_ready=True, http_ready=True)

    index_probe = IndexProbe(archive)

    async def healthz(request: Request) -> JSONResponse:
        if not health.ok:
            body = {"status": "stopping" if health.stopping else "starting"}
            return JSONResponse(body, status_code=503)
        problem = await index_probe.problem()
        if problem:  # a load balancer takes this node out until its database answers again
            return JSONResponse({"status": "index unavailable", "detail": problem},
                                status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"status": "ok"})

    async def stats(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        counts = await run_in_threadpool(archive.index.counts)
        validation = await run_in_threadpool(archive.index.validation_counts)
        return JSONResponse({"counts": counts, "last_change": archive.index.last_change(),
                             "validation": validation})

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/api/stats", stats),
    ]
    # Each feature module owns its routes; its handlers reach the archive through
    # request.app.state.archive and the settings through request.app.state.settings.
    for name in _ROUTE_MODULES:
        module = importlib.import_module(f"archivist.web.{name}")
        routes.extend(module.routes())
    app = Starlette(routes=routes, exception_handlers={
        HTTPException: _http_exception, IndexError_: _index_unavailable,
        SQLAlchemyError: _index_unavailable})
    app.state.archive = archive
    app.state.settings = archive.settings
    app.state.health = health
    app.state.background = background
    app.state.http_activity = health.http_activity or HttpActivity()
    # Innermost first: each add_middleware wraps what is already there.
    app.add_middleware(_NoSniff)
    app.add_middleware(_CrossOriginWrites, settings=archive.settings)
    app.add_middleware(BasicAuth, settings=archive.settings)
    app.add_middleware(_HostCheck, settings=archive.settings)
    app.add_middleware(_Activity, state=app.state)
    # Feature modules may start background work (for example the metadata warmer).
    for name in _ROUTE_MODULES:
        hook = getattr(importlib.import_module(f"archivist.web.{name}"), "on_startup", None)
        if hook is not None:
            hook(app)
    return app
