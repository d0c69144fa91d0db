"""Modality Performed Procedure Steps over HTTP (what modalities reported with MPPS N-CREATE and
N-SET, :mod:`archivist.archive.mpps`)::

    GET /api/mpps?study=UID&status=COMPLETED&limit=100&offset=0   newest update first
    GET /api/mpps/{uid}                                          one step, in full

A listing entry has the step's status, study, accession number, modality, station, start and
end, how many series and instances it lists, and when it was created and last updated. One
step adds ``dataset`` (its attribute set in the DICOM JSON model) and ``arrival``: how many of
the instances it lists the archive holds, and up to 100 it does not.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from archivist.archive.mpps import STATUSES, ProcedureSteps, dicom_json

__all__ = ["routes"]

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DIGITS = re.compile(r"[0-9]{1,9}")
MAX_LIMIT = 1000


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"status": status, "error": error, "detail": detail}, status_code=status)


def _steps(request: Request) -> ProcedureSteps:
    state = request.app.state
    steps = getattr(state, "procedure_steps", None)
    if steps is None:
        steps = state.procedure_steps = ProcedureSteps(state.archive.index)
    return steps


def _number(text: str | None, default: int, maximum: int) -> int | None:
    if text is None or text == "":
        return default
    if not _DIGITS.fullmatch(text):
        return None
    return min(int(text), maximum)


async def list_steps(request: Request) -> JSONResponse:
    """``GET /api/mpps``: 400 for a malformed study UID, status, limit or offset."""
    query = request.query_params
    study = query.get("study") or None
    if study is not None and (len(study) > 64 or not _UID.fullmatch(study)):
        return _error(400, "bad request", "study must be a Study Instance UID")
    status = (query.get("status") or "").upper().replace("_", " ") or None
    if status is not None and status not in STATUSES:
        return _error(400, "bad request",
                      "status must be IN PROGRESS, COMPLETED or DISCONTINUED")
    limit = _number(query.get("limit"), 100, MAX_LIMIT)
    offset = _number(query.get("offset"), 0, 10**9)
    if limit is None or offset is None:
        return _error(400, "bad request", "limit and offset must be whole numbers")
    steps = await run_in_threadpool(_steps(request).list, study=study, status=status,
                                    limit=limit, offset=offset)
    return JSONResponse({"mpps": [step.summary() for step in steps]})


async def one_step(request: Request) -> JSONResponse:
    """``GET /api/mpps/{uid}``: 400 for a malformed UID, 404 for an unknown one."""
    uid = request.path_params["uid"]
    if len(uid) > 64 or not _UID.fullmatch(uid):
        return _error(400, "bad request", "the path must name a SOP Instance UID")
    steps = _steps(request)

    def read() -> dict[str, Any] | None:
        step = steps.get(uid)
        if step is None:
            return None
        return {**step.summary(), "arrival": steps.arrival(step),
                "dataset": dicom_json(step.dataset)}

    body = await run_in_threadpool(read)
    if body is None:
        return _error(404, "not found", f"no Performed Procedure Step {uid}")
    return JSONResponse(body)


def routes() -> list[BaseRoute]:
    return [Route("/api/mpps", list_steps, methods=["GET"]),
            Route("/api/mpps/{uid}", one_step, methods=["GET"])]
