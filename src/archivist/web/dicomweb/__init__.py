"""DICOMweb (PS3.18) at ``/dicomweb``: QIDO-RS, WADO-RS, STOW-RS and UPS-RS (the Worklist
Service, with its event WebSocket), over the one archive."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router, WebSocketRoute

from archivist.archive.transcode import quiet_codec_logs
from archivist.core.levels import QueryLevel
from archivist.errors import IndexError_, StorageError
from archivist.web.dicomweb import qido, stow, ups_events, ups_rs, wado
from archivist.web.dicomweb.common import Cors
from archivist.web.errors import HTTPProblem, problem_response, to_response

log = logging.getLogger("archivist.web")

Endpoint = Callable[..., Awaitable[Response]]


def guarded(fn: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """Call `fn` with the path parameters; any error becomes a readable JSON error."""

    @functools.wraps(fn)
    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request, **request.path_params)
        except HTTPProblem as exc:
            return to_response(exc)
        except FileNotFoundError:
            # A stored object deleted (or replaced) while this request read it: gone, not a
            # server failure.
            log.warning("DICOMweb %s %s: a stored object was deleted meanwhile",
                        request.method, request.url.path)
            return problem_response(404, "the stored object was deleted meanwhile")
        except (IndexError_, StorageError) as exc:
            # The index's database or the object store is down: 503 with the reason, and one
            # line in the log, not a traceback per request.
            log.warning("DICOMweb %s %s: %s", request.method, request.url.path, exc)
            return to_response(exc)
        except Exception as exc:
            log.exception("DICOMweb %s %s failed", request.method, request.url.path)
            return to_response(exc)

    return endpoint


def _qido(level: QueryLevel, *scope_keys: str) -> Endpoint:
    async def handler(request: Request, **path: Any) -> Response:
        keys = dict(zip(("StudyInstanceUID", "SeriesInstanceUID"), path.values()))
        return await qido.search(request, level, {k: v for k, v in keys.items() if k in scope_keys})
    return handler


async def _thumb(request: Request, **path: Any) -> Response:
    return await wado.rendered(request, **path, thumbnail=True)


S, SE, I, F = "{study}", "{series}", "{sop}", "{frame}"
ST = f"/studies/{S}"
SR = f"{ST}/series/{SE}"
IN = f"{SR}/instances/{I}"
WI = "/workitems/{uid}"
SUB = f"{WI}/subscribers/{{aet}}"


def dicomweb_routes() -> list[BaseRoute]:
    return [
        # QIDO-RS
        Route("/studies", guarded(_qido(QueryLevel.STUDY)), methods=["GET"]),
        Route("/series", guarded(_qido(QueryLevel.SERIES)), methods=["GET"]),
        Route("/instances", guarded(_qido(QueryLevel.IMAGE)), methods=["GET"]),
        Route(f"{ST}/series", guarded(_qido(QueryLevel.SERIES, "StudyInstanceUID")),
              methods=["GET"]),
        Route(f"{ST}/instances", guarded(_qido(QueryLevel.IMAGE, "StudyInstanceUID")),
              methods=["GET"]),
        Route(f"{SR}/instances", guarded(_qido(QueryLevel.IMAGE, "StudyInstanceUID",
                                               "SeriesInstanceUID")), methods=["GET"]),
        # STOW-RS
        Route("/studies", guarded(stow.store), methods=["POST"]),
        Route(ST, guarded(stow.store), methods=["POST"]),
        # WADO-RS
        Route(ST, guarded(wado.retrieve), methods=["GET"]),
        Route(SR, guarded(wado.retrieve), methods=["GET"]),
        Route(IN, guarded(wado.retrieve), methods=["GET"]),
        Route(f"{ST}/metadata", guarded(wado.metadata), methods=["GET"]),
        Route(f"{SR}/metadata", guarded(wado.metadata), methods=["GET"]),
        Route(f"{IN}/metadata", guarded(wado.instance_metadata), methods=["GET"]),
        Route(f"{IN}/frames/{{frame_list}}", guarded(wado.frames), methods=["GET"]),
        Route(f"{IN}/bulkdata/{{tag_path:path}}", guarded(wado.bulkdata), methods=["GET"]),
        Route(f"{ST}/rendered", guarded(wado.rendered), methods=["GET"]),
        Route(f"{SR}/rendered", guarded(wado.rendered), methods=["GET"]),
        Route(f"{IN}/rendered", guarded(wado.rendered), methods=["GET"]),
        Route(f"{IN}/frames/{F}/rendered", guarded(wado.rendered), methods=["GET"]),
        Route(f"{ST}/thumbnail", guarded(_thumb), methods=["GET"]),
        Route(f"{SR}/thumbnail", guarded(_thumb), methods=["GET"]),
        Route(f"{IN}/thumbnail", guarded(_thumb), methods=["GET"]),
        Route(f"{IN}/frames/{F}/thumbnail", guarded(_thumb), methods=["GET"]),
        # UPS-RS (the Worklist Service, PS3.18 chapter 11)
        Route("/workitems", guarded(ups_rs.search), methods=["GET"]),
        Route("/workitems", guarded(ups_rs.create), methods=["POST"]),
        Route(WI, guarded(ups_rs.retrieve), methods=["GET"]),
        Route(WI, guarded(ups_rs.update), methods=["POST"]),
        Route(f"{WI}/state", guarded(ups_rs.change_state), methods=["PUT"]),
        Route(f"{WI}/cancelrequest", guarded(ups_rs.request_cancel), methods=["POST"]),
        Route(SUB, guarded(ups_rs.subscribe), methods=["POST"]),
        Route(SUB, guarded(ups_rs.unsubscribe), methods=["DELETE"]),
        Route(f"{SUB}/suspend", guarded(ups_rs.suspend), methods=["POST"]),
        Route("/subscribers/{aetitle}", guarded(ups_events.not_a_websocket), methods=["GET"]),
    ]


#: Where the archive deletes what a DICOMweb path names (not over DICOMweb: see `routes`).
_DELETE_AT = {ST: "/api/studies/{study}", SR: "/api/studies/{study}/series/{series}",
              IN: "/api/studies/{study}/series/{series}/instances/{sop}"}


_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def _other_method(path: str, allowed: list[str]) -> Endpoint:
    """A method `path` does not serve: 405 naming all the methods it does (RFC 9110 15.5.6:
    Allow lists the target resource's methods), and for DELETE where deletion is."""
    allow = ", ".join(allowed)

    async def handler(request: Request, **params: Any) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": f"{allow}, OPTIONS"})
        message = f"{request.method} is not supported on this resource (allowed: {allow})"
        if request.method == "DELETE" and path in _DELETE_AT:
            message = ("DICOMweb DELETE is not supported; delete with DELETE "
                       + _DELETE_AT[path].format(**{k: str(v)[:70] for k, v in params.items()}))
        raise HTTPProblem(405, message, {"Allow": allow})

    return handler


def _with_other_methods(served: list[BaseRoute]) -> list[BaseRoute]:
    """`served`, then per path a route taking every other method (a FULL match after the
    PARTIAL ones, so Starlette's own 405, which names one route's methods only, is not used)."""
    methods: dict[str, list[str]] = {}
    for route in served:
        if isinstance(route, Route):
            names = methods.setdefault(route.path, [])
            names += [m for m in sorted(route.methods or ()) if m not in names]
    order = ("GET", "HEAD", "POST")
    fallbacks: list[BaseRoute] = [
        Route(path, guarded(_other_method(path, sorted(names, key=lambda m: (
            order.index(m) if m in order else len(order), m)))), methods=_ANY_METHOD)
        for path, names in methods.items()]
    return [*served, *fallbacks]


def routes() -> list[BaseRoute]:
    inner = Router(routes=[*_with_other_methods(dicomweb_routes()),
                           WebSocketRoute("/subscribers/{aetitle}", ups_events.channel)],
                   default=_not_found_asgi)
    return [Mount("/dicomweb", app=Cors(inner))]


async def _not_found_asgi(scope: Any, receive: Any, send: Any) -> None:
    response = to_response(HTTPProblem(404, f"no DICOMweb resource at {scope['path'][:200]}"))
    await response(scope, receive, send)


def on_startup(app: Any) -> None:
    """Start the series metadata warmer for this application's archive (in one worker only:
    the others read what it writes under ``<data>/cache/metadata``)."""
    quiet_codec_logs()
    if not getattr(app.state, "background", True):
        app.state.metadata_warmer = None
        return
    app.state.metadata_warmer = wado.start_warmer(app.state)
