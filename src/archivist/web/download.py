"""A study or a series as one ZIP file, for a person who wants the files on their own disk
(what Orthanc's ``/studies/{id}/archive`` and dcm4chee's ZIP export give).

Routes::

    GET /api/studies/{study}/archive                    every instance of a study
    GET /api/studies/{study}/series/{series}/archive    every instance of a series

The answer is ``application/zip`` (``Content-Disposition: attachment``), streamed while it is
written: one folder per series (``S001_CT``: its order in the study, then its modality), one
file per instance (``I00001.dcm``, in viewing order), each the stored Part 10 object byte for
byte (no transcoding, no compression: images are usually compressed already, and a copy costs
no CPU). Entry names are generated, never taken from attribute values or UIDs. ZIP64 is used
when an entry or the whole file needs it, so a study of any size fits.

Instances are listed as C-MOVE and WADO-RS list them (:meth:`Retrieve.instances`); one deleted
while the ZIP is written is left out (logged). A malformed UID answers 400 and an unknown one
404, with a JSON body ``{"error", "detail"}``. ``HEAD`` answers the headers without reading a
file (it read the whole study, for nothing). A client that goes away mid-way closes the file
being read at once (the abandoned writer held it, deleted or not, until a garbage collection).
"""

from __future__ import annotations

import io
import logging
import re
import time
import zipfile
from collections.abc import Iterator
from typing import Any

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from archivist.archive.archive import Archive
from archivist.archive.retrieve import InstanceRef
from archivist.core.levels import QueryLevel
from archivist.errors import NotFound

__all__ = ["routes", "zip_chunks"]

log = logging.getLogger(__name__)

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_CS = re.compile(r"[^A-Z0-9_]")
_CHUNK = 1 << 20


class _Pipe(io.RawIOBase):
    """Where :class:`zipfile.ZipFile` writes: bytes wait here until the response takes them.

    It cannot seek, so zipfile writes each entry's sizes and CRC after its data (a data
    descriptor) and never goes back over what was already sent.
    """

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []
        self.pending = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        self.pending += len(chunk)
        return len(chunk)

    def drain(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        self.pending = 0
        return out


def _series_folders(archive: Archive, study: str, refs: list[InstanceRef]) -> dict[str, str]:
    """A folder name for each series: its position in `refs`, then its modality."""
    query = archive.search.query_from_pairs(
        QueryLevel.SERIES, [("StudyInstanceUID", study), ("Modality", "*")])
    modality = {row["series.series_instance_uid"]: row.get("series.modality") or ""
                for row in archive.search.rows(query)}
    folders: dict[str, str] = {}
    for ref in refs:
        uid = ref.series_instance_uid
        if uid not in folders:
            kind = _CS.sub("", str(modality.get(uid, "")).upper())[:16]
            folders[uid] = f"S{len(folders) + 1:03d}" + (f"_{kind}" if kind else "")
    return folders


def zip_chunks(archive: Archive, refs: list[InstanceRef],
               folders: dict[str, str]) -> Iterator[bytes]:
    """The ZIP file of `refs`, a piece at a time (about a MiB each).

    `folders` names the folder of each series (by Series Instance UID).
    """
    pipe = _Pipe()
    stamp = time.localtime()[:6]
    numbers: dict[str, int] = {}
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for ref in refs:
            try:
                fh = archive.retrieve.open(ref)
            except (NotFound, OSError) as exc:
                log.warning("sop=%s left out of a ZIP download: deleted meanwhile (%s)",
                            ref.sop_instance_uid, type(exc).__name__)
                continue
            folder = folders.get(ref.series_instance_uid, "S000")
            numbers[folder] = n = numbers.get(folder, 0) + 1
            info = zipfile.ZipInfo(f"{folder}/I{n:05d}.dcm", date_time=stamp)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            info.file_size = ref.size  # zipfile decides on ZIP64 for the entry from this
            with fh, zf.open(info, "w") as entry:
                while chunk := fh.read(_CHUNK):
                    entry.write(chunk)
                    if pipe.pending >= _CHUNK:
                        yield pipe.drain()
            if pipe.pending >= _CHUNK:
                yield pipe.drain()
    tail = pipe.drain()
    if tail:
        yield tail


class _ZipResponse(StreamingResponse):
    """The ZIP, written in a thread; the writer is closed however the response ends."""

    def __init__(self, chunks: Iterator[bytes], headers: dict[str, str]) -> None:
        self._chunks = chunks
        super().__init__(iterate_in_threadpool(chunks), media_type="application/zip",
                         headers=headers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                try:
                    await run_in_threadpool(close)
                except ValueError:  # still running in its thread (a cancelled request)
                    pass


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"status": status, "error": error, "detail": detail}, status_code=status)


async def download(request: Request) -> Response:
    """``GET /api/studies/{study}[/series/{series}]/archive``."""
    study: str = request.path_params["study"]
    series: str | None = request.path_params.get("series")
    for uid in (study, series):
        if uid is not None and (len(uid) > 64 or not _UID.fullmatch(uid)):
            return _error(400, "bad request",
                          "the path must name UIDs (digits and dots, at most 64)")
    archive: Archive = request.app.state.archive

    def find() -> tuple[list[InstanceRef], dict[str, str]]:
        pairs = [("StudyInstanceUID", study)]
        if series is not None:
            pairs.append(("SeriesInstanceUID", series))
        query = archive.search.query_from_pairs(QueryLevel.IMAGE, pairs)
        refs = list(archive.retrieve.instances(query))
        return refs, (_series_folders(archive, study, refs) if refs else {})

    refs, folders = await run_in_threadpool(find)
    if not refs:
        what = "series" if series else "study"
        return _error(404, "not found", f"no such {what} in this archive")
    name = series or study
    headers = {"Content-Disposition": f'attachment; filename="{name}.zip"',
               "Cache-Control": "no-store"}
    if request.method == "HEAD":
        # (no Content-Length: a GET's length is not known before it is written)
        return StreamingResponse(iter(()), media_type="application/zip", headers=headers)
    log.info("ZIP download of %s %s: %d instances, %d bytes stored",
             "series" if series else "study", name, len(refs), sum(r.size for r in refs))
    return _ZipResponse(zip_chunks(archive, refs, folders), headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/studies/{study}/archive", download, methods=["GET"]),
        Route("/api/studies/{study}/series/{series}/archive", download, methods=["GET"]),
    ]
