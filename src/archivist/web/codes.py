"""HTTP API for the terminology service (PS3.16 codes and context groups).

Routes (all GET, all JSON)::

    /api/codes?q=pneumothorax[&scheme=SCT][&cid=4][&limit=20][&offset=0]   ranked search
    /api/codes/{scheme}/{value}                                  one code (404 when unknown;
                                                                 any valid UCUM unit is known)
    /api/cids/{number}[?search=liv]                              one context group (404 when unknown)

Bad input answers 400 with ``{"status": ..., "error": ..., "detail": ...}``. The handlers are synchronous
(Starlette runs them in its thread pool); the tables load on first use.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.status import HTTP_400_BAD_REQUEST, HTTP_404_NOT_FOUND

from archivist import terminology
from archivist.terminology.ucum import UNLISTED_NOTE, unlisted_unit_note

__all__ = ["routes"]

MAX_LIMIT = 1000
#: Paging goes this far: every concept of the tables fits.
MAX_OFFSET = 100_000


class _BadRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"status": status, "error": error, "detail": detail}, status_code=status)


def _shown(text: str, most: int = 80) -> str:
    """`text` as echoed in an error message: at most `most` characters."""
    return text if len(text) <= most else text[:most] + "..."


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer, got {_shown(raw)!r}") from None


def _cid_number(raw: str) -> int | None:
    """A context group number as people write it (``4``, ``CID4``, ``CID 4``), or None."""
    text = (raw[3:] if raw.upper().startswith("CID") else raw).strip()
    # int() alone also takes "4_0" (40) and non-ASCII digits
    return int(text) if text.isascii() and text.isdigit() else None


def _cid_param(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    number = _cid_number(raw)
    if number is None:
        raise _BadRequest(f"cid must be a CID number such as 4 or CID4, got {_shown(raw)!r}")
    return number


def search_codes(request: Request) -> JSONResponse:
    """``GET /api/codes?q=...``: ranked search by meaning, keyword or code value."""
    query = request.query_params.get("q", "").strip()
    try:
        if not query:
            raise _BadRequest("the query parameter q is required, e.g. /api/codes?q=liver")
        cid = _cid_param(request.query_params.get("cid"))
        limit = _int_param(request, "limit", 20)
        offset = _int_param(request, "offset", 0)
        assert limit is not None and offset is not None
        if not 0 < limit <= MAX_LIMIT:
            raise _BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
        if not 0 <= offset <= MAX_OFFSET:
            raise _BadRequest(f"offset must be between 0 and {MAX_OFFSET}")
        term = terminology.default_terminology()
        if cid is not None and term.cid_name(cid) is None:
            raise _BadRequest(f"CID {cid} is not defined in PS3.16")
        scheme = request.query_params.get("scheme") or None
        if scheme is not None:
            problem = term.scheme_error(scheme)
            if problem is not None:
                raise _BadRequest(problem)
    except _BadRequest as exc:
        return _error(HTTP_400_BAD_REQUEST, "bad request", exc.detail)
    hits = terminology.search(query, scheme=scheme, cid=cid, limit=offset + limit)[offset:]
    return JSONResponse(
        {"query": query, "offset": offset, "count": len(hits),
         "results": [h.to_dict() for h in hits]}
    )


def get_code(request: Request) -> JSONResponse:
    """``GET /api/codes/{scheme}/{value}``: one code, with its CIDs and SRT equivalent."""
    scheme: str = request.path_params["scheme"]
    value: str = request.path_params["value"]
    if not scheme.strip() or not value.strip():
        return _error(HTTP_400_BAD_REQUEST, "bad request",
                      "both parts are needed: /api/codes/{scheme}/{value}, e.g. "
                      "/api/codes/SCT/36118008")
    term = terminology.default_terminology()
    concept = term.find(scheme, value)
    if concept is None and term.canonical_scheme(scheme) == "UCUM":
        unit = term.unlisted_unit(value)
        if unit is not None:  # as `archivist codes show`: a unit PS3.16 need not list
            return JSONResponse({**term.concept_dict(unit), "note": UNLISTED_NOTE})
    if concept is None:
        detail = f"{_shown(scheme)}:{_shown(value)} is not in the PS3.16 tables"
        if term.canonical_scheme(scheme) == "UCUM":
            detail += "; " + unlisted_unit_note(value.strip())
        else:
            detail += term.other_schemes_hint(value[:100])
        return _error(HTTP_404_NOT_FOUND, "unknown code", detail)
    scheme = term.canonical_scheme(scheme)
    body = term.concept_dict(concept)
    if (scheme, value) != (concept.scheme, concept.value):
        body["requested"] = {"scheme": scheme, "value": value}
    return JSONResponse(body)


def get_cid(request: Request) -> JSONResponse:
    """``GET /api/cids/{number}``: a context group and its members (PS3.16 Annex B)."""
    raw = request.path_params["number"]
    number = _cid_number(raw)
    if number is None:
        return _error(HTTP_400_BAD_REQUEST, "bad request",
                      f"a CID number is expected, got {_shown(raw)!r}")
    try:
        group = terminology.context_group(number)
    except terminology.UnknownContextGroup as exc:
        return _error(HTTP_404_NOT_FOUND, "unknown context group", str(exc))
    members = list(group.members)
    text = request.query_params.get("search", "").strip()
    if text:
        rank = {
            h.concept.key: i for i, h in enumerate(terminology.search(text, cid=number, limit=0))
        }
        members = sorted((m for m in members if m.key in rank), key=lambda m: rank[m.key])
    return JSONResponse(group.to_dict(members))


def routes() -> list[BaseRoute]:
    """The terminology routes, to mount in the application."""
    return [
        Route("/api/codes", search_codes, methods=["GET"]),
        Route("/api/codes/{scheme}/{value:path}", get_code, methods=["GET"]),
        Route("/api/cids/{number}", get_cid, methods=["GET"]),
    ]
