"""The archive's own JSON API (beside DICOMweb): validation findings, and deletion.

Routes (all JSON)::

    GET    /api/instances/{sop}/validation   the findings of the validation on ingest
    GET    /api/validation                   the policy and how many instances have errors
    GET    /api/changes?since=N&limit=M      what was stored, replaced or removed after change N
    POST   /api/studies/{study}[/series/{series}]/send?to=AET   send it to a configured peer
    GET    /api/send-jobs/{job}              how that send is going, and how it ended
    DELETE /api/studies/{study}                                  delete a study
    DELETE /api/studies/{study}/series/{series}                  delete a series
    DELETE /api/studies/{study}/series/{series}/instances/{sop}  delete an instance

A delete may name a reason (``?reason=quality``, ``safety``, ``worklist``, ``retention``,
``qc``, ``inaccessible``, ``kos``, ``replaced``: CID 7031) and answers 200 with what it removed
(:meth:`archivist.index.removal.Removal.to_json`); the removed records stay visible to
Repository Query as Removed from Operational Use until purged.

Unknown instances answer 404 and malformed UIDs 400, with ``{"status": ..., "error": ..., "detail": ...}``;
when the index cannot be written (locked by another program past the busy timeout, failing) a
delete answers 503 with ``Retry-After`` and nothing is deleted.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.status import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from archivist.archive.delete import Deletion
from archivist.archive.jobs import SendJobs
from archivist.core.levels import QueryLevel
from archivist.errors import IndexError_, NotFound, QueryError
from archivist.index.removal import reason_of

__all__ = ["routes"]

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
#: The largest change sequence number the index can hold (SQLite INTEGER).
_MAX_SEQ = (1 << 63) - 1


def _error(status: int, error: str, detail: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": status, "error": error, "detail": detail}, status_code=status, headers=headers)


async def instance_validation(request: Request) -> JSONResponse:
    """``GET /api/instances/{sop}/validation``.

    The body: ``sop_instance_uid``, ``sop_class_uid``, ``validated`` (False when the object was
    stored with validation off), ``errors``, ``warnings`` and ``findings``, each with severity,
    rule_id, path, module, iod, message and reference (docs/validation.md lists the rules).
    """
    sop = request.path_params["sop"]
    if len(sop) > 64 or not _UID.fullmatch(sop):
        return _error(HTTP_400_BAD_REQUEST, "bad request",
                      "the path must name a SOP Instance UID (digits and dots, at most 64)")
    archive = request.app.state.archive
    body: dict[str, Any] | None = await run_in_threadpool(archive.index.validation_of, sop)
    if body is None:
        return _error(HTTP_404_NOT_FOUND, "not found", f"no instance {sop} is stored")
    return JSONResponse(body)


async def validation_summary(request: Request) -> JSONResponse:
    """``GET /api/validation``: the policy in force and counts over the stored instances."""
    archive = request.app.state.archive
    counts = await run_in_threadpool(archive.index.validation_counts)
    return JSONResponse({"policy": archive.settings.validation_policy, **counts})


async def delete_entity(request: Request) -> JSONResponse:
    """``DELETE /api/studies/{study}[/series/{series}[/instances/{sop}]]``."""
    params = request.path_params
    study: str = params["study"]
    uids: list[str | None] = [study, params.get("series"), params.get("sop")]
    for uid in uids:
        if uid is not None and (len(uid) > 64 or not _UID.fullmatch(uid)):
            return _error(HTTP_400_BAD_REQUEST, "bad request",
                          "the path must name UIDs (digits and dots, at most 64)")
    try:
        reason = reason_of(request.query_params.get("reason"))
    except QueryError as exc:
        return _error(HTTP_400_BAD_REQUEST, "bad request", str(exc))
    archive = request.app.state.archive
    deletion = Deletion(archive.index, archive.blobs, archive.removals)
    try:
        removal = await run_in_threadpool(deletion.delete, study, uids[1], uids[2],
                                          reason=reason)
    except NotFound as exc:
        return _error(HTTP_404_NOT_FOUND, "not found", str(exc))
    except QueryError as exc:
        return _error(HTTP_400_BAD_REQUEST, "bad request", str(exc))
    except IndexError_ as exc:
        return _error(HTTP_503_SERVICE_UNAVAILABLE, "index unavailable", str(exc),
                      {"Retry-After": "5"})
    return JSONResponse(removal.to_json())


def _utc_iso(value: Any) -> str:
    """A stored time as ISO 8601 with its offset (the index keeps UTC; SQLite gives it back
    without the zone)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


async def changes(request: Request) -> JSONResponse:
    """``GET /api/changes?since=N&limit=M``: the change log after sequence number N (default 0),
    oldest first, at most M entries (default 100, at most 1000), like Orthanc's ``/changes``.

    The body: ``changes`` (each ``seq``, ``kind``: stored, replaced or a removal, ``level``,
    ``study``, ``series``, ``sop`` UIDs and ``at``, UTC ISO 8601), ``last`` (the sequence number
    to ask after next time; the newest change's when `since` is past it) and ``done`` (nothing
    more after it for now). A client that polls with ``since=last`` sees every change once, in
    order.
    """
    params = request.query_params
    try:
        since = int(params.get("since", "0") or 0)
        limit = int(params.get("limit", "100") or 100)
    except ValueError:
        return _error(HTTP_400_BAD_REQUEST, "bad request", "since and limit must be integers")
    if not 0 <= since <= _MAX_SEQ or not 1 <= limit <= 1000:
        # (a number past SQLite's 64-bit integers made the query fail: 500)
        return _error(HTTP_400_BAD_REQUEST, "bad request",
                      f"since must be 0 to {_MAX_SEQ} and limit between 1 and 1000")
    index = request.app.state.archive.index

    def read() -> tuple[int, list[dict[str, Any]]]:
        newest = index.last_change()  # before the changes: one committed between comes next
        return newest, index.changes_since(since, limit + 1)

    newest, rows = await run_in_threadpool(read)
    more = len(rows) > limit
    rows = rows[:limit]
    out = [{"seq": int(r["seq"]), "kind": r["kind"], "level": r["level"],
            "study": r["study_instance_uid"], "series": r["series_instance_uid"],
            "sop": r["sop_instance_uid"],
            "at": _utc_iso(r["at"])} for r in rows]
    # Past the end (a cursor kept from before the data directory was restored or made anew),
    # ``last`` is the end, as Orthanc answers: answering `since` back skipped every change up
    # to it.
    return JSONResponse({"changes": out, "last": out[-1]["seq"] if out else min(since, newest),
                         "done": not more})


def _send_jobs(request: Request) -> SendJobs:
    """This process's one :class:`SendJobs`: job names are made of the time, the process and
    its counter, which a new one per request started again at 1 each time (two jobs queued in
    the same clock tick, as a coarse clock gives, got one name and the second replaced the
    first)."""
    state = request.app.state
    jobs: SendJobs | None = getattr(state, "send_jobs", None)
    if jobs is None:
        jobs = state.send_jobs = SendJobs(state.archive.settings.data_dir)
    return jobs


async def send(request: Request) -> JSONResponse:
    """``POST /api/studies/{study}[/series/{series}]/send?to=AET``: queue a send of the study
    or series to a configured peer (what Orthanc's "send to DICOM modality" does). Answers 202
    with ``job`` (follow it at ``/api/send-jobs/{job}``) and the number of instances; 400 for a
    malformed UID or a destination that is not a configured peer, 404 when nothing is stored
    under the UIDs. A ``serve`` worker sends it within a second, as ``archivist send`` would.
    """
    params = request.path_params
    study: str = params["study"]
    series: str | None = params.get("series")
    for uid in (study, series):
        if uid is not None and (len(uid) > 64 or not _UID.fullmatch(uid)):
            return _error(HTTP_400_BAD_REQUEST, "bad request",
                          "the path must name UIDs (digits and dots, at most 64)")
    archive = request.app.state.archive
    to = (request.query_params.get("to") or "").strip()
    if archive.settings.peer(to) is None:
        known = ", ".join(p.aet for p in archive.settings.peers) or "none is configured"
        return _error(HTTP_400_BAD_REQUEST, "bad request",
                      f"to= must name a configured peer ({known})")

    def queue() -> tuple[str, int] | None:
        pairs = [("StudyInstanceUID", study)]
        if series is not None:
            pairs.append(("SeriesInstanceUID", series))
        query = archive.search.query_from_pairs(QueryLevel.IMAGE, pairs)
        count = sum(1 for _ in archive.retrieve.instances(query))
        if not count:
            return None
        return _send_jobs(request).queue(to, study, series, count), count

    queued = await run_in_threadpool(queue)
    if queued is None:
        return _error(HTTP_404_NOT_FOUND, "not found",
                      f"no such {'series' if series else 'study'} in this archive")
    job, count = queued
    return JSONResponse({"job": job, "to": to, "instances": count,
                         "status": f"/api/send-jobs/{job}"}, status_code=202)


async def send_job(request: Request) -> JSONResponse:
    """``GET /api/send-jobs/{job}``: ``state`` (queued, running, done), ``sent``, ``total``,
    ``failed`` (each ``sop`` and ``reason``) and ``error`` when the peer could not be reached."""
    body = await run_in_threadpool(_send_jobs(request).status, request.path_params["job"])
    if body is None:
        return _error(HTTP_404_NOT_FOUND, "not found", "no such send job")
    return JSONResponse(body)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/studies/{study}", delete_entity, methods=["DELETE"]),
        Route("/api/studies/{study}/series/{series}", delete_entity, methods=["DELETE"]),
        Route("/api/studies/{study}/series/{series}/instances/{sop}", delete_entity,
              methods=["DELETE"]),
        Route("/api/instances/{sop}/validation", instance_validation, methods=["GET"]),
        Route("/api/validation", validation_summary, methods=["GET"]),
        Route("/api/changes", changes, methods=["GET"]),
        Route("/api/studies/{study}/send", send, methods=["POST"]),
        Route("/api/studies/{study}/series/{series}/send", send, methods=["POST"]),
        Route("/api/send-jobs/{job}", send_job, methods=["GET"]),
    ]
