"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``."""

from __future__ import annotations

import logging
import math
from typing import Any

from pydicom.uid import UID
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, request_response

from archivist.core.uids import is_valid_uid
from archivist.errors import IndexError_, StorageError
from archivist.web.dicomweb import pixels
from archivist.web.dicomweb.common import (
    DICOM,
    Cors,
    archive_of,
    find_instances,
    iterate_file,
    parse_accept,
)
from archivist.web.dicomweb.sr_text import is_structured_report, render_report
from archivist.web.dicomweb.wado import RENDERED_IMAGE_TYPES, transcode_instance
from archivist.web.errors import HTTPProblem, to_response

log = logging.getLogger("archivist.web")

def _content_type(request: Request, has_pixels: bool, *, pdf: bool = False,
                  report: bool = False) -> str:
    """The media type to answer in: the best of ``contentType`` served here, by q value then
    order (RFC 9110 12.4.2; q=0 refuses a type). An Encapsulated PDF may also be asked for as
    ``application/pdf``, a Structured Report as ``text/html`` or ``text/plain`` (PS3.18
    8.7.4)."""
    raw = request.query_params.get("contentType")
    if not raw:
        return "image/jpeg" if has_pixels else DICOM
    for r in parse_accept(raw):
        media = r.type
        if media in (DICOM, "application/dicom") or media in RENDERED_IMAGE_TYPES:
            return media
        if media == "application/pdf" and pdf:
            return media
        if media in ("text/html", "text/plain") and report:
            return media
        if media == "*/*":
            return "image/jpeg" if has_pixels else DICOM
    raise HTTPProblem(406, f"contentType {raw[:60]!r} is not served; use application/dicom, "
                      "image/jpeg, image/png or image/gif" + (" (or application/pdf)" if pdf else "")
                      + (" (or text/html, text/plain)" if report else ""))


async def _document(path: Any) -> Response:
    """The PDF an Encapsulated PDF instance holds."""
    return Response(await run_in_threadpool(pixels.encapsulated_document, path),
                    media_type="application/pdf")


async def wado(request: Request) -> Response:
    try:
        return await _wado(request)
    except HTTPProblem as exc:
        return to_response(exc)
    except (IndexError_, StorageError) as exc:
        # The index's database or the object store is down: 503 with the reason, one line
        # in the log (not a traceback per request).
        log.warning("WADO-URI request failed: %s", exc)
        return to_response(exc)
    except Exception as exc:
        log.exception("WADO-URI request failed")
        return to_response(exc)


#: Parameters for rendered images only: with contentType=application/dicom they are a 400
#: (PS3.18 9.4 retrieves the instance itself; 9.5 defines them for rendered media only).
_IMAGE_ONLY = ("rows", "columns", "region", "windowCenter", "windowWidth", "imageQuality",
               "frameNumber", "presentationUID", "presentationSeriesUID")


def _positive_int(q: Any, name: str) -> int | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise HTTPProblem(400, f"{name} must be a positive integer, not {raw[:20]!r}") from None
    if value < 1:
        raise HTTPProblem(400, f"{name} must be a positive integer")
    return value


def _region(raw: str) -> tuple[float, float, float, float]:
    """``region=xmin,ymin,xmax,ymax``, fractions of the image (PS3.18 9.5; ill-defined: 400)."""
    try:
        x0, y0, x1, y1 = (float(v) for v in raw.split(","))
    except ValueError:
        raise HTTPProblem(400, "region must be xmin,ymin,xmax,ymax, four numbers from 0.0 to "
                          "1.0") from None
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise HTTPProblem(400, "region must be xmin,ymin,xmax,ymax with 0.0 <= min < max <= 1.0")
    return x0, y0, x1, y1


def _transfer_syntax(raw: str | None) -> str | None:
    """The ``transferSyntax`` parameter: a Transfer Syntax UID, else 400 (PS3.18 9.4.2.4; a
    valid one this server cannot produce is a 406, decided by the caller). ``*`` is the
    WADO-RS media type parameter's wildcard, not a value of this parameter."""
    if raw is None or raw == "":
        return None
    if raw == "*":
        raise HTTPProblem(400, "transferSyntax=* is not a UID: '*' is WADO-RS notation; leave "
                          "transferSyntax out to get the object as stored, or name a Transfer "
                          "Syntax UID")
    if not is_valid_uid(raw):
        raise HTTPProblem(400, f"transferSyntax {raw[:64]!r} is not a UID")
    if not UID(raw).is_transfer_syntax:
        raise HTTPProblem(400, f"transferSyntax {raw[:64]} is not a Transfer Syntax UID "
                          "(PS3.6 Table A-1)")
    return raw


def _image_header(path: Any) -> tuple[int, int, int]:
    """(columns, rows, frames) of a stored image, from its header."""
    with open(path, "rb") as fh:
        ds = pixels.read_stored(fh, stop_before_pixels=True,
                                specific_tags=["Rows", "Columns", "NumberOfFrames"])
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1  # rendering the frame says what is wrong with it
    return int(ds.get("Columns") or 0), int(ds.get("Rows") or 0), frames


def _window_value(q: Any, name: str) -> str | None:
    """``windowCenter`` / ``windowWidth``: a finite decimal number (PS3.18 9.5), else
    400; the width must be positive."""
    raw = q.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise HTTPProblem(400, f"{name} must be a decimal number, not {raw[:20]!r}") from None
    if not math.isfinite(value) or (name == "windowWidth" and value <= 0):
        raise HTTPProblem(400, f"{name} must be a finite decimal number"
                          + (" greater than 0" if name == "windowWidth" else ""))
    return raw


_ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


async def _wado(request: Request) -> Response:
    q = request.query_params
    if q.get("requestType") != "WADO":
        raise HTTPProblem(400, "requestType=WADO is required")
    repeated = [k for k in ("requestType", "studyUID", "seriesUID", "objectUID", "contentType",
                            "frameNumber", "transferSyntax") if len(q.getlist(k)) > 1]
    if repeated:
        # One value each (PS3.18 9.4): which of two objectUIDs was meant is not ours to guess
        raise HTTPProblem(400, f"{', '.join(repeated)} given more than once")
    study, series, sop = q.get("studyUID"), q.get("seriesUID"), q.get("objectUID")
    if not (study and series and sop):
        raise HTTPProblem(400, "studyUID, seriesUID and objectUID are all required")
    if q.get("anonymize") is not None:
        # PS3.18 9.4.2.3: a server that does not anonymize may refuse; ignoring it would send
        # the patient's identity to a client that asked for none.
        raise HTTPProblem(400, "anonymize is not supported: this server does not de-identify "
                          "objects")
    archive = archive_of(request)
    ref = (await run_in_threadpool(find_instances, archive, study, series, sop))[0]
    path = archive.retrieve.path(ref)
    if path is None:
        raise HTTPProblem(500, "stored object is not on a file system")
    has_pixels = ref.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.") and \
        pixels.is_image_class(ref.sop_class_uid)
    report = is_structured_report(ref.sop_class_uid)
    media = _content_type(request, has_pixels, pdf=ref.sop_class_uid == _ENCAPSULATED_PDF,
                          report=report)
    if media == "application/pdf":
        return await _document(path)
    if media in ("text/html", "text/plain"):
        text = await run_in_threadpool(render_report, path, media)
        return Response(text, media_type=f"{media}; charset=utf-8")
    if media == DICOM:
        extra = [name for name in _IMAGE_ONLY if q.get(name) is not None]
        if extra:
            raise HTTPProblem(400, f"{', '.join(extra)} cannot be used with contentType="
                              "application/dicom (they are for rendered images)")
        target = _transfer_syntax(q.get("transferSyntax"))
        if target and target != ref.transfer_syntax_uid:
            why = await run_in_threadpool(pixels.transcode_refusal, path,
                                          ref.transfer_syntax_uid, target)
            if why is not None:
                raise HTTPProblem(406, f"cannot send this object in transfer syntax {target}: "
                                  f"{why}")
            coded = await run_in_threadpool(transcode_instance, archive, ref, target)
            return StreamingResponse(iterate_file(coded), media_type=DICOM)
        return StreamingResponse(iterate_file(archive.retrieve.open(ref)), media_type=DICOM,
                                 headers={"Content-Length": str(ref.size)})
    if q.get("transferSyntax") is not None:
        raise HTTPProblem(400, "transferSyntax is only for contentType=application/dicom")
    quality = _positive_int(q, "imageQuality")
    if quality is not None and quality > 100:
        raise HTTPProblem(400, "imageQuality must be an integer from 1 to 100")
    center, width = _window_value(q, "windowCenter"), _window_value(q, "windowWidth")
    if (center is None) != (width is None):
        raise HTTPProblem(400, "windowCenter and windowWidth go together")
    params = {
        "quality": str(quality) if quality is not None else None,
        "window": f"{center},{width}" if center is not None else None,
    }
    rows, cols = _positive_int(q, "rows"), _positive_int(q, "columns")
    if max(rows or 0, cols or 0) > 8192:
        raise HTTPProblem(400, "rows and columns must be 8192 at most")
    if rows or cols:
        # One of the two alone scales the image to it, keeping the aspect ratio.
        params["viewport"] = f"{cols or 8192},{rows or 8192}"
    opts = pixels.parse_render_options({k: v for k, v in params.items() if v}, media)
    region = q.get("region")
    number = _positive_int(q, "frameNumber")
    if region is not None or number is not None:
        width_px, height_px, frames = await run_in_threadpool(_image_header, path)
        if number is not None and number > frames:
            # PS3.18 9.5.2: a frame number past the Number of Frames is a 400.
            raise HTTPProblem(400, f"frameNumber {number} is past the last frame of this "
                              f"instance ({frames})")
        if region is not None:
            x0, y0, x1, y1 = _region(region)
            sx, sy = int(x0 * width_px), int(y0 * height_px)
            opts.crop = (sx, sy, max(1, round(x1 * width_px) - sx),
                         max(1, round(y1 * height_px) - sy))
    number = number or 1
    data = await run_in_threadpool(pixels.render, path, number, opts)
    return Response(data, media_type=media)


def routes() -> list[BaseRoute]:
    return [Route("/wado", Cors(request_response(wado)), methods=["GET", "HEAD", "OPTIONS"])]
