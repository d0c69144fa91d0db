"""The HTTP application: health, a small JSON API, and (later) DICOMweb and the viewer."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from archivist.archive.archive import Archive
from archivist.web.errors import problem_response

# Feature modules mounted in this order; the viewer comes last because it serves "/".
_ROUTE_MODULES = ("codes", "api", "dicomweb", "wado_uri", "inventory_api", "archive_page",
                  "viewer")


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


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTP errors (a method a route does not allow: 405 with its Allow
    header) with the JSON body every other error of this server has."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return problem_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))


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

    async def healthz(request: Request) -> JSONResponse:
        body = {"status": "ok" if health.ok else ("stopping" if health.stopping else "starting")}
        return JSONResponse(body, status_code=200 if health.ok else 503)

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
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})
    app.state.archive = archive
    app.state.settings = archive.settings
    app.state.health = health
    app.state.background = background
    app.state.http_activity = health.http_activity or HttpActivity()
    app.add_middleware(_Activity, state=app.state)
    # Feature modules may start background work (for example the metadata warmer).
    for name in _ROUTE_MODULES:
        hook = getattr(importlib.import_module(f"archivist.web.{name}"), "on_startup", None)
        if hook is not None:
            hook(app)
    return app
