"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, request_response

from archivist.web.dicomweb import pixels
from archivist.web.dicomweb.common import (
    DICOM,
    Cors,
    archive_of,
    find_instances,
    iterate_file,
)
from archivist.web.dicomweb.wado import transcode_instance
from archivist.web.errors import HTTPProblem, to_response

log = logging.getLogger("archivist.web")

_IMAGE_TYPES = ("image/jpeg", "image/png")


def _content_type(request: Request, has_pixels: bool) -> str:
    raw = request.query_params.get("contentType")
    if not raw:
        return "image/jpeg" if has_pixels else DICOM
    for token in raw.split(","):
        media = token.split(";")[0].strip().lower()
        if media in (DICOM, "application/dicom") or media in _IMAGE_TYPES:
            return media
        if media == "*/*":
            return "image/jpeg" if has_pixels else DICOM
    raise HTTPProblem(406, f"contentType {raw[:60]!r} is not served; use application/dicom, "
                      "image/jpeg or image/png")


async def wado(request: Request) -> Response:
    try:
        return await _wado(request)
    except HTTPProblem as exc:
        return to_response(exc)
    except Exception as exc:
        log.exception("WADO-URI request failed")
        return to_response(exc)


async def _wado(request: Request) -> Response:
    q = request.query_params
    if q.get("requestType") != "WADO":
        raise HTTPProblem(400, "requestType=WADO is required")
    study, series, sop = q.get("studyUID"), q.get("seriesUID"), q.get("objectUID")
    if not (study and series and sop):
        raise HTTPProblem(400, "studyUID, seriesUID and objectUID are all required")
    archive = archive_of(request)
    ref = (await run_in_threadpool(find_instances, archive, study, series, sop))[0]
    path = archive.retrieve.path(ref)
    if path is None:
        raise HTTPProblem(500, "stored object is not on a file system")
    has_pixels = ref.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.") and not \
        ref.sop_class_uid.startswith(("1.2.840.10008.5.1.4.1.1.88", "1.2.840.10008.5.1.4.1.1.104",
                                      "1.2.840.10008.5.1.4.1.1.11", "1.2.840.10008.5.1.4.1.1.66"))
    media = _content_type(request, has_pixels)
    if media == DICOM:
        target = q.get("transferSyntax")
        if target and target != ref.transfer_syntax_uid:
            if not pixels.can_transcode(ref.transfer_syntax_uid, target):
                raise HTTPProblem(406, f"cannot send this object in transfer syntax {target[:64]}")
            data = await run_in_threadpool(transcode_instance, archive, ref, target)
            return Response(data, media_type=DICOM)
        return StreamingResponse(iterate_file(archive.retrieve.open(ref)), media_type=DICOM,
                                 headers={"Content-Length": str(ref.size)})
    params = {
        "quality": q.get("imageQuality"),
        "window": (f"{q.get('windowCenter')},{q.get('windowWidth')}"
                   if q.get("windowCenter") and q.get("windowWidth") else None),
    }
    rows, cols = q.get("rows"), q.get("columns")
    if rows or cols:
        params["viewport"] = f"{cols or rows},{rows or cols}"
    opts = pixels.parse_render_options({k: v for k, v in params.items() if v}, media)
    frame = q.get("frameNumber") or "1"
    try:
        number = int(frame)
    except ValueError:
        raise HTTPProblem(400, "frameNumber must be a number") from None
    data = await run_in_threadpool(pixels.render, path, number, opts)
    return Response(data, media_type=media)


def routes() -> list[BaseRoute]:
    return [Route("/wado", Cors(request_response(wado)), methods=["GET", "HEAD", "OPTIONS"])]
