"""Admin HTTP API for Supplement 223 inventories (JSON, synchronous handlers in the thread pool).

Routes::

    POST /api/inventories                    start an Inventory Creation job      -> 202
         {"level": "study|series|instance", "scope": {"Modality": "CT", ...},
          "purpose": "..."}
    GET  /api/inventories                    stored inventories (root instances)
    GET  /api/inventories/jobs               every job (newest last)
    GET  /api/inventories/jobs/{transaction} one job: state, progress, root
    POST /api/inventories/jobs/{transaction}/{pause|resume|cancel}[?retain=yes]
    GET  /api/inventories/{root}?format=json|csv|dicom
                                             download (dicom: application/dicom for one
                                             instance, application/zip for a split inventory)

Jobs run in the same engine as DIMSE Inventory Creation (persistent, resumable); a job started
here has no DICOM requester, so no N-EVENT-REPORT is sent (a job started over DIMSE that this
engine finishes still sends its events to the requester). Errors answer ``{"status", "error"}``.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from pydicom.uid import generate_uid
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from archivist.core.uids import is_valid_uid
from archivist.errors import ArchivistError, QueryError
from archivist.inventory.builder import InventorySpec, to_part10, unsupported_scope_keys
from archivist.inventory.catalogue import Catalogue
from archivist.inventory.creation import InventoryCreation, Job, JobError
from archivist.inventory.model import Inventory
from archivist.inventory.remote import EventSender
from archivist.web.errors import problem_response

__all__ = ["on_startup", "routes"]

MAX_BODY = 64 * 1024


def _engine(request: Request) -> InventoryCreation:
    engine = getattr(request.app.state, "inventory_creation", None)
    if engine is None:
        archive = request.app.state.archive
        engine = InventoryCreation(archive, EventSender(archive))
        request.app.state.inventory_creation = engine
    return engine


def on_startup(app: Any) -> None:
    """Nothing runs until a job exists; the DIMSE service resumes jobs left by a restart."""
    app.state.inventory_creation = None


def _job_json(job: Job) -> dict[str, Any]:
    # A PROCESSING job knows its root's UID while it stores the inventory, not stored yet.
    root = job.root_uid if job.state != "PROCESSING" else None
    return {
        "transaction_uid": job.transaction_uid, "state": job.state, "level": job.level,
        "scope": dict(job.scope), "purpose": job.purpose, "requester": job.requester_aet or None,
        "studies_total": job.studies_total, "studies_done": job.studies_done,
        "root": root, "comment": job.comment or None,
        "status_url": f"/api/inventories/jobs/{job.transaction_uid}",
        "download_url": f"/api/inventories/{root}" if root else None,
    }


def _uid(request: Request, name: str) -> str:
    uid = str(request.path_params[name])
    if not is_valid_uid(uid):
        raise QueryError(f"{name} is not a valid UID")
    return uid


def _fail(exc: Exception) -> JSONResponse:
    if isinstance(exc, JobError):
        return problem_response(404 if exc.status == 0x0112 else 409, str(exc))
    return problem_response(400, str(exc))


async def create(request: Request) -> JSONResponse:
    """``POST /api/inventories``: start a job; answers 202 with its status URL."""
    # Read at most MAX_BODY bytes: the whole body was read first and measured after, so a
    # client could make a worker hold gigabytes.
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return problem_response(413, "request body too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return problem_response(413, "request body too large")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return problem_response(400, "the body must be JSON")
    if not isinstance(data, dict):
        return problem_response(400, "the body must be a JSON object")
    scope_raw = data.get("scope") or {}
    if not isinstance(scope_raw, dict) or not all(isinstance(v, str) for v in scope_raw.values()):
        return problem_response(400, 'scope must be an object of strings, e.g. {"Modality": "CT"}')
    scope = [(str(k), v) for k, v in scope_raw.items()]
    bad = unsupported_scope_keys(scope)
    if bad:
        return problem_response(400, f"scope keys not supported for matching: {', '.join(bad)}")
    from starlette.concurrency import run_in_threadpool

    def start() -> Job:
        engine = _engine(request)
        spec = InventorySpec(level=str(data.get("level") or "study"), scope=scope,
                             purpose=str(data.get("purpose") or ""))
        from archivist.inventory.builder import InventoryBuilder

        InventoryBuilder(request.app.state.archive).study_keys(spec)  # the scope must parse
        return engine.initiate(generate_uid(), spec, requester_aet="")

    try:
        job = await run_in_threadpool(start)
    except ArchivistError as exc:
        return _fail(exc)
    return JSONResponse(_job_json(job), status_code=202,
                        headers={"Location": f"/api/inventories/jobs/{job.transaction_uid}"})


def list_inventories(request: Request) -> JSONResponse:
    """``GET /api/inventories``: the stored inventories (root instances)."""
    roots = Catalogue(request.app.state.archive).roots()
    out = []
    for r in roots:
        item = {k: (v if v is None or isinstance(v, (int, float)) else str(v))
                for k, v in r.summary().items()}
        item["download_url"] = f"/api/inventories/{r.ref.sop_instance_uid}"
        out.append(item)
    return JSONResponse(out)


def list_jobs(request: Request) -> JSONResponse:
    return JSONResponse([_job_json(j) for j in _engine(request).jobs()])


def job_status(request: Request) -> JSONResponse:
    try:
        uid = _uid(request, "transaction")
        job = _engine(request).get(uid)
        if job is None:
            raise JobError("no Inventory Creation with this Transaction UID", 0x0112)
    except ArchivistError as exc:
        return _fail(exc)
    return JSONResponse(_job_json(job))


def job_action(request: Request) -> JSONResponse:
    """``POST .../jobs/{transaction}/{pause|resume|cancel}``."""
    action = request.path_params["action"]
    try:
        uid = _uid(request, "transaction")
        engine = _engine(request)
        if action == "pause":
            job = engine.pause(uid)
        elif action == "resume":
            job = engine.resume(uid)
        elif action == "cancel":
            retain = request.query_params.get("retain", "no").lower() in ("yes", "true", "1")
            job = engine.cancel(uid, retain)
        else:
            return problem_response(404, f"unknown action {action!r}: pause, resume or cancel")
    except ArchivistError as exc:
        return _fail(exc)
    return JSONResponse(_job_json(job))


def download(request: Request) -> Response:
    """``GET /api/inventories/{root}?format=json|csv|dicom``."""
    fmt = request.query_params.get("format", "json").lower()
    if fmt not in ("json", "csv", "dicom"):
        return problem_response(400, "format must be json, csv or dicom")
    try:
        uid = _uid(request, "root")
    except ArchivistError as exc:
        return _fail(exc)
    datasets = Catalogue(request.app.state.archive).datasets(uid)
    if not datasets:
        return problem_response(404, "no stored inventory with this SOP Instance UID")
    if fmt == "dicom":
        if len(datasets) == 1:
            return Response(to_part10(datasets[0]), media_type="application/dicom")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for n, ds in enumerate(datasets, 1):
                zf.writestr(f"inventory-{n:04d}.dcm", to_part10(ds))
        return Response(buf.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="inventory.zip"'})
    inv = Inventory.from_datasets(datasets, source=uid)
    if fmt == "csv":
        return Response(inv.to_csv(), media_type="text/csv; charset=utf-8")
    return JSONResponse(inv.to_json())


def routes() -> list[BaseRoute]:
    return [
        Route("/api/inventories", create, methods=["POST"]),
        Route("/api/inventories", list_inventories, methods=["GET"]),
        Route("/api/inventories/jobs", list_jobs, methods=["GET"]),
        Route("/api/inventories/jobs/{transaction}", job_status, methods=["GET"]),
        Route("/api/inventories/jobs/{transaction}/{action}", job_action, methods=["POST"]),
        Route("/api/inventories/{root}", download, methods=["GET"]),
    ]
