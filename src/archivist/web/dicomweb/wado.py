"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered and thumbnails."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.encaps import generate_fragments
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from archivist.archive.archive import Archive
from archivist.archive.retrieve import InstanceRef
from archivist.archive.transcode import swapped, value_word_size
from archivist.core.levels import QueryLevel
from archivist.errors import IndexError_, NotFound
from archivist.web.dicomweb import pixels
from archivist.web.dicomweb.common import (
    DICOM,
    DICOM_JSON,
    EXPLICIT_BE,
    EXPLICIT_LE,
    FRAME_MEDIA_TYPE,
    IMPLICIT_LE,
    NATIVE_SYNTAXES,
    OCTET,
    MediaRange,
    accept_of,
    accepts_gzip,
    archive_of,
    base_url,
    check_uid,
    find_instances,
    iterate_file,
    require_json,
)
from archivist.web.dicomweb.jsonmodel import instance_json, locate, read_deferred
from archivist.web.dicomweb.multipart import multipart_stream, new_boundary
from archivist.web.dicomweb.sr_text import is_structured_report, render_report
from archivist.web.errors import HTTPProblem

log = logging.getLogger("archivist.web")


# -- Instances (Part 10) -------------------------------------------------------------------------

#: In a list of acceptable transfer syntaxes: ``transfer-syntax=*`` (each instance as stored)
#: and no parameter at all (Explicit VR Little Endian, or as stored when this server cannot
#: decode the pixels: PS3.18 8.7.3.4).
AS_STORED = "*"
DEFAULT = ""


def choose_syntaxes(ranges: list[MediaRange], count: int) -> tuple[bool, list[str]]:
    """(multipart, the acceptable transfer syntaxes best first) for a retrieve of `count`
    instances; :data:`AS_STORED` and :data:`DEFAULT` stand for ``*`` and no parameter.

    A single part ``application/dicom`` is for one instance: with more it is not acceptable
    (PS3.18 10.4.4). The syntax of each part is chosen per instance (8.7.8.2, Note 1).

    Raises HTTPProblem(406) when no acceptable media type is a DICOM one.
    """
    multipart: bool | None = None
    syntaxes: list[str] = []
    single_only = False
    for r in ranges:
        if r.type in ("*/*", "multipart/*") or (r.multipart and r.part_type in ("", DICOM)):
            this_multipart = True
        elif r.type == DICOM:
            if count != 1:
                single_only = True
                continue
            this_multipart = False
        else:
            continue
        if multipart is None:
            multipart = this_multipart
        ts = r.transfer_syntax
        choice = AS_STORED if ts == "*" else (ts or DEFAULT)
        if choice not in syntaxes:
            syntaxes.append(choice)
    if multipart is None:
        if single_only:
            raise HTTPProblem(406, "application/dicom without multipart is for one instance; "
                              "accept multipart/related; type=\"application/dicom\"")
        raise HTTPProblem(406, "none of the accepted media types can be served; try "
                          "multipart/related; type=\"application/dicom\"; transfer-syntax=*")
    return multipart, syntaxes


def _syntax_for(archive: Archive, ref: InstanceRef, syntaxes: list[str],
                ) -> tuple[str | None, str]:
    """(the transfer syntax `ref` is sent in, or None: it cannot be sent in any acceptable
    one; why not). What the header and the stored pixel data tell without decoding is checked
    here, before the response starts (:func:`pixels.transcode_refusal`); a decoder failing on
    corrupt pixels that look right is found only when the instance is transcoded."""
    stored = ref.transfer_syntax_uid
    path = archive.retrieve.path(ref)

    def why_not(target: str) -> str | None:
        if target == stored:
            return None
        if path is None:
            return None if pixels.can_transcode(stored, target) else \
                f"this server has no codec to turn {stored} into {target}"
        return pixels.transcode_refusal(path, stored, target)

    reasons: list[str] = []
    for ts in syntaxes:
        if ts == AS_STORED:
            return stored, ""
        if ts == DEFAULT:
            return (EXPLICIT_LE if why_not(EXPLICIT_LE) is None else stored), ""
        why = why_not(ts)
        if why is None:
            return ts, ""
        reasons.append(why)
    return None, reasons[0] if reasons else "no acceptable transfer syntax"


def _still_stored(archive: Archive, ref: InstanceRef) -> bool:
    """False when the stored object of an instance just found is gone (deleted meanwhile)."""
    path = archive.retrieve.path(ref)
    if path is None or path.exists():
        return True
    log.warning("sop=%s left out of a WADO-RS response: deleted meanwhile", ref.sop_instance_uid)
    return False


def _opened(archive: Archive, ref: InstanceRef) -> BinaryIO | None:
    """The stored object opened, or None when it was deleted since it was found (logged)."""
    try:
        return archive.retrieve.open(ref)
    except (NotFound, OSError) as exc:
        log.warning("sop=%s left out of a WADO-RS response: deleted meanwhile (%s)",
                    ref.sop_instance_uid, type(exc).__name__)
        return None


def transcode_instance(archive: Archive, ref: InstanceRef, target: str) -> BinaryIO:
    """The instance in `target`, in a temporary file (in memory while small) positioned at its
    start, which the caller closes (:func:`~archivist.web.dicomweb.common.iterate_file` does);
    406 with the reason when the pixels cannot be re-encoded. Large pixel data is re-encoded
    a frame at a time (:func:`pixels.transcode_file`)."""
    path = archive.retrieve.path(ref)
    if path is None:
        raise HTTPProblem(500, "stored object is not on a file system")
    try:
        return pixels.transcode_file(path, target, archive.settings.tmp_dir)
    except HTTPProblem:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders and encoders fail in many ways
        log.warning("sop=%s: transcoding to %s failed: %s", ref.sop_instance_uid, target,
                    type(exc).__name__)
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise HTTPProblem(406, f"this instance cannot be sent in transfer syntax {target}: "
                          f"{reason}; transfer-syntax=* sends it as stored") from None


def _asked(syntaxes: list[str]) -> str:
    named = [ts for ts in syntaxes if ts not in (AS_STORED, DEFAULT)]
    return ", ".join(named) or EXPLICIT_LE


def _plan(archive: Archive, refs: list[InstanceRef], syntaxes: list[str],
          ) -> tuple[list[tuple[InstanceRef, str]], list[tuple[InstanceRef, str]]]:
    """The instances to send with the syntax of each, and those left out with the reason.

    Raises HTTPProblem(406) when none can be sent (PS3.18 Table 10.4.3-1).
    """
    plan: list[tuple[InstanceRef, str]] = []
    left: list[tuple[InstanceRef, str]] = []
    for ref in refs:
        ts, why = _syntax_for(archive, ref, syntaxes)
        if ts is None:
            left.append((ref, why))
        else:
            plan.append((ref, ts))
    if not plan:
        what = "this instance cannot" if len(refs) == 1 else \
            f"none of the {len(refs)} instances can"
        raise HTTPProblem(406, f"{what} be sent in transfer syntax {_asked(syntaxes)}: "
                          f"{left[0][1]}; transfer-syntax=* sends "
                          f"{'it' if len(refs) == 1 else 'them'} as stored")
    return plan, left


def _left_out_warning(request: Request, left: list[tuple[InstanceRef, str]], total: int,
                      syntaxes: list[str]) -> str:
    """The Warning header value of a 206 (PS3.18 8.4, Table 10.4.3-1): which instances are not
    in the response, and why."""
    host = request.url.hostname or "archivist"
    uids = " ".join(ref.sop_instance_uid for ref, _ in left[:20])
    more = f" and {len(left) - 20} more" if len(left) > 20 else ""
    reason = left[0][1].replace('"', "'")
    if len(reason) > 200:  # cut at a word, and say so
        reason = reason[:200].rsplit(" ", 1)[0] + " ..."
    text = (f"{len(left)} of {total} instances are not included: they cannot be sent in "
            f"transfer syntax {_asked(syntaxes)} ({reason}); transfer-syntax=* sends them as "
            f"stored. Not included: {uids}{more}")
    return f'299 {host}: "{text}"'


async def retrieve(request: Request, study: str, series: str | None = None,
                   sop: str | None = None) -> Response:
    """Instances as Part 10 objects (PS3.18 10.4.1.1.1), each in the first acceptable
    transfer syntax it can be sent in. Instances that cannot be sent in any are left out and
    named in a Warning header of a 206 (Partial Content); when that is all of them, the
    answer is a 406 with the reason (PS3.18 Table 10.4.3-1). This is decided before the
    response starts, from what the stored syntaxes and headers tell."""
    archive = archive_of(request)
    refs = await run_in_threadpool(find_instances, archive, study, series, sop)
    refs = [ref for ref in refs if _still_stored(archive, ref)]
    if not refs:
        raise HTTPProblem(404, "deleted meanwhile: no longer in this archive")
    multipart, syntaxes = choose_syntaxes(accept_of(request), len(refs))
    plan, left = await run_in_threadpool(_plan, archive, refs, syntaxes)
    fallback = AS_STORED in syntaxes or DEFAULT in syntaxes  # as stored is acceptable
    headers: dict[str, str] = {}
    status = 200
    if left:
        status = 206
        headers["Warning"] = _left_out_warning(request, left, len(refs), syntaxes)
    ready: BinaryIO | None = None
    if len(plan) == 1 and plan[0][1] != plan[0][0].transfer_syntax_uid:
        # one instance: transcode before answering, so a failure is a 406, not a cut stream
        ref, ts = plan[0]
        try:
            ready = await run_in_threadpool(transcode_instance, archive, ref, ts)
        except HTTPProblem:
            if not fallback:
                raise
            plan = [(ref, ref.transfer_syntax_uid)]  # as stored (8.7.3.4)
    if not multipart:
        ref, ts = plan[0]
        media = f"{DICOM}; transfer-syntax={ts}"
        if ready is not None:
            return StreamingResponse(iterate_file(ready), media_type=media)
        fh = _opened(archive, ref)
        if fh is None:
            raise HTTPProblem(404, "this instance was deleted meanwhile")
        return StreamingResponse(iterate_file(fh), media_type=media)
    boundary = new_boundary()

    def parts() -> Iterator[tuple[str, Iterator[bytes]]]:
        # Each instance is transcoded before its part header goes out: once the response has
        # started, a failure can no longer change the status, and must not cut the body.
        for ref, ts in plan:
            stored = ref.transfer_syntax_uid
            if ready is not None:
                yield f"{DICOM}; transfer-syntax={ts}", iterate_file(ready)
                continue
            if ts == stored:
                # Opened before its part header goes out: an instance deleted since the
                # response started is left out, the body stays whole.
                fh = _opened(archive, ref)
                if fh is not None:
                    yield f"{DICOM}; transfer-syntax={stored}", iterate_file(fh)
                continue
            try:
                data = transcode_instance(archive, ref, ts)
            except HTTPProblem as exc:
                if not fallback:  # only the syntaxes asked for are acceptable: left out
                    log.warning("sop=%s left out of a WADO-RS response already under way: %s",
                                ref.sop_instance_uid, exc.message[:120])
                    continue
                fh = _opened(archive, ref)
                if fh is not None:
                    yield f"{DICOM}; transfer-syntax={stored}", iterate_file(fh)
                continue
            yield f"{DICOM}; transfer-syntax={ts}", iterate_file(data)

    media = f'multipart/related; type="{DICOM}"; boundary={boundary}'
    return StreamingResponse(multipart_stream(boundary, parts()), status_code=status,
                             media_type=media, headers=headers)


# -- Metadata ------------------------------------------------------------------------------------

class MetadataCache:
    """Series metadata built once per change of the series, kept in memory and on disk.

    A series' entry is keyed by its index row and its change sequence, so any store into the
    series makes a new entry. What is kept is a template whose URLs start with a placeholder;
    each response replaces it with the root the client used (and gzips once per root). The
    files live under ``<data>/cache/metadata`` named by row number, never by UID. A background
    warmer (:func:`start_warmer`) builds the template of every series a few seconds after it
    last changed, so the first viewer to open a new study finds it ready.
    """

    #: What a worker keeps in memory at most: with the files on disk a miss costs a read and
    #: an inflate (~50 ms for a 5,000-instance series), and each worker has its own copy, so
    #: this is held low for the 300 MB a worker may take (issue 10).
    MAX_BYTES = 64 << 20

    def __init__(self, archive: Archive, max_bytes: int = MAX_BYTES) -> None:
        self.archive = archive
        self.dir = Path(archive.settings.data_dir) / "cache" / "metadata"
        self.token = "urn:archivist:root:" + hashlib.sha256(
            str(self.dir.resolve()).encode()).hexdigest()[:16]
        self.templates: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self.responses: OrderedDict[tuple[int, int, str], bytes] = OrderedDict()
        self.bytes = 0
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.building: dict[tuple[int, int], threading.Lock] = {}

    #: Changed whenever the JSON built for a series changes (f3: DS, IS and PN with an empty
    #: value among several keep their other values; f2: empty values among several
    #: are null, big endian InlineBinary turned around), so a file an older version wrote is
    #: not served: the series is built again on first use and the old file removed.
    FORMAT = "f3"

    def _file(self, pk: int, seq: int) -> Path:
        return self.dir / f"series-{pk}-{seq}-{self.FORMAT}.json.gz"

    def _remember(self, table: OrderedDict, key: Any, data: bytes) -> None:  # type: ignore[type-arg]
        with self.lock:
            # An older version of the same series is never served again (its change sequence
            # is behind the index): dropped now, not when the memory is full, so a series
            # viewed while it is being stored does not keep a copy per version.
            tables: tuple[OrderedDict[Any, bytes], ...] = (self.templates, self.responses)
            for held in tables:
                for old in [k for k in held if k[0] == key[0] and k[1] != key[1]]:
                    self.bytes -= len(held.pop(old))
            if key not in table:
                table[key] = data
                self.bytes += len(data)
            while self.bytes > self.max_bytes:
                victim = self.responses if self.responses else self.templates
                if len(victim) <= 1 and victim is self.templates:
                    break
                _, old = victim.popitem(last=False)
                self.bytes -= len(old)

    def template(self, pk: int, seq: int, study: str, series: str) -> bytes:
        """The JSON array of the series' instances, URLs under the placeholder root."""
        key = (pk, seq)
        with self.lock:
            hit = self.templates.get(key)
            if hit is not None:
                self.templates.move_to_end(key)
                return hit
            guard = self.building.setdefault(key, threading.Lock())
        with guard:  # one build per series at a time, even with many viewers asking
            with self.lock:
                hit = self.templates.get(key)
            if hit is not None:
                return hit
            path = self._file(pk, seq)
            try:
                data = gzip.decompress(path.read_bytes())
            except (OSError, EOFError, gzip.BadGzipFile):
                data = _build_series(self.archive, study, series, self.token)
                self._write(pk, path, gzip.compress(data, compresslevel=5))
            self._remember(self.templates, key, data)
        with self.lock:
            self.building.pop(key, None)
        return data

    def series_gz(self, pk: int, seq: int, study: str, series: str, root: str) -> bytes:
        """The series metadata for clients that reached us under `root`, gzipped."""
        key = (pk, seq, root)
        with self.lock:
            hit = self.responses.get(key)
            if hit is not None:
                self.responses.move_to_end(key)
                return hit
        data = self.template(pk, seq, study, series).replace(self.token.encode(), root.encode())
        gz = gzip.compress(data, compresslevel=5)
        self._remember(self.responses, key, gz)
        return gz

    def _write(self, pk: int, path: Path, data: bytes) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in self.dir.glob(f"series-{pk}-*.json.gz"):
                stale.unlink(missing_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("metadata cache not written: %s", exc.strerror)

    def forget_removed(self) -> int:
        """Drop what is kept of series no longer in the index (deleted), on disk and in memory:
        their files hold patient data, which must not outlive the deletion. Returns how many
        files were removed."""
        files: dict[int, list[Path]] = {}
        for path in self.dir.glob("series-*-*.json.gz"):
            try:
                files.setdefault(int(path.name.split("-")[1]), []).append(path)
            except ValueError:
                continue
        gone = set(files) - self.archive.index.series_present(files)
        removed = 0
        for pk in gone:
            for path in files[pk]:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        with self.lock:
            tables: tuple[OrderedDict[Any, bytes], ...] = (self.templates, self.responses)
            for table in tables:
                for key in [k for k in table if k[0] in gone]:
                    self.bytes -= len(table.pop(key))
        return removed

    def warm(self, study: str, series: str) -> None:
        """Build the template of one series if its current version is not built yet."""
        try:
            rows = _series_rows(self.archive, study, series)
        except HTTPProblem:
            return
        row = rows[0]
        self.template(int(row["series.pk"]), int(row["series.change_seq"] or 0), study, series)


_CACHE_LOCK = threading.Lock()


def cache_for(state: Any) -> MetadataCache:
    with _CACHE_LOCK:
        cache = getattr(state, "metadata_cache", None)
        if cache is None:
            cache = MetadataCache(state.archive)
            state.metadata_cache = cache
    return cache  # type: ignore[no-any-return]


def cache_of(request: Request) -> MetadataCache:
    return cache_for(request.app.state)


def _serving(state: Any, within: float = 0.5) -> bool:
    """True when an HTTP request was being answered in the last `within` seconds in any worker
    (see web/app.py), or a DICOM association was open in any worker in that time (C-FIND,
    C-MOVE and C-GET come as associations one after the other: a gap between two is not
    quiet)."""
    activity = getattr(state, "http_activity", None)
    if activity is not None and activity.quiet_for() < within:
        return True
    quiet_for = getattr(getattr(state, "health", None), "dimse_quiet_for", None)
    return bool(quiet_for is not None and quiet_for() < within)


def start_warmer(state: Any, quiet: float = 2.0, poll: float = 1.0,
                 patience: float = 60.0) -> threading.Event:
    """Precompute series metadata in a daemon thread once the archive has been quiet for
    `quiet` seconds (or a series has waited `patience` seconds: then one per `poll` while
    requests are being answered). It stops building when HTTP requests are being answered in
    any worker, a DICOM association is open (or was, half a second ago) or objects are stored
    again, and waits for quiet anew.

    Returns the event that stops it.
    """
    stop = threading.Event()
    cache = cache_for(state)
    index = cache.archive.index

    def loop() -> None:
        try:
            last = index.last_change()
        except Exception:  # noqa: BLE001 - no index, nothing to warm
            return
        pending: dict[tuple[str, str], float] = {}
        last_any = 0.0
        removed = True  # deletions made while the server was down: looked for once at start
        said_at = -60.0  # when a failure was last logged
        while not stop.wait(poll):
            health = getattr(state, "health", None)
            if health is not None and health.stopping:
                return
            try:
                for row in index.changes_since(last, limit=5000):
                    last = int(row["seq"])
                    last_any = time.monotonic()
                    removed = removed or row.get("kind") == "removed"
                    if row.get("study_instance_uid") and row.get("series_instance_uid"):
                        pending[(row["study_instance_uid"], row["series_instance_uid"])] = \
                            last_any
                if removed:
                    removed = False
                    cache.forget_removed()
                now = time.monotonic()
                # Build while the archive is quiet, so warming never competes with ingest or
                # with requests being answered (HTTP seen in the last half second, a DICOM
                # association open in any worker); a series waiting longer than `patience` is
                # built anyway.
                archive_quiet = now - last_any >= quiet
                built = 0
                for key, when in list(pending.items()):
                    if stop.is_set():
                        return
                    overdue = time.monotonic() - when >= patience
                    # While requests are answered, a series waiting too long is built one
                    # per poll, not all at once.
                    if (not overdue or built) and _serving(state):
                        break
                    if not overdue and built and index.last_change() > last:
                        # Stores resumed while building (in any worker): back to waiting
                        # for quiet, so warming does not take CPU from an ingest burst.
                        break
                    if (archive_quiet and now - when >= quiet) or overdue:
                        del pending[key]
                        cache.warm(*key)
                        built += 1
            except (IndexError_, SQLAlchemyError) as exc:
                # The index (its database) is down: said once a minute, not with a traceback
                # every second in every worker.
                if time.monotonic() - said_at >= 60:
                    said_at = time.monotonic()
                    log.warning("metadata warmer: the index cannot be read (%s); retrying",
                                type(exc).__name__)
            except Exception:  # warming is an optimisation: log and go on
                if time.monotonic() - said_at >= 60:
                    said_at = time.monotonic()
                    log.exception("metadata warmer failed; retrying")

    threading.Thread(target=loop, name="metadata-warmer", daemon=True).start()
    return stop


def _series_rows(archive: Archive, study: str, series: str | None) -> list[dict[str, Any]]:
    pairs = [("StudyInstanceUID", check_uid(study, "Study Instance UID"))]
    if series:
        pairs.append(("SeriesInstanceUID", check_uid(series, "Series Instance UID")))
    query = archive.search.query_from_pairs(QueryLevel.SERIES, pairs)
    rows = list(archive.search.rows(query))
    if not rows:
        raise HTTPProblem(404, "no such series in this archive" if series
                          else "no such study in this archive")
    return rows


def _build_series(archive: Archive, study: str, series: str, root: str) -> bytes:
    refs = find_instances(archive, study, series)
    items = []
    for ref in refs:
        bulk_root = f"{root}/studies/{study}/series/{series}/instances/{ref.sop_instance_uid}"
        fh = _opened(archive, ref)
        if fh is None:  # deleted since it was found: left out, as WADO-RS leaves it out
            continue
        with fh:
            items.append(json.dumps(instance_json(fh, bulk_root, ref.transfer_syntax_uid),
                                    ensure_ascii=False, separators=(",", ":")))
    return ("[" + ",".join(items) + "]").encode("utf-8")


def _metadata_body(request: Request, study: str, series: str | None) -> tuple[bytes, str, bool]:
    """(body, etag, gzipped) for study or series metadata."""
    archive = archive_of(request)
    cache = cache_of(request)
    root = base_url(request)
    rows = _series_rows(archive, study, series)
    gzipped = accepts_gzip(request.headers.get("accept-encoding"))
    tags = []
    blobs = []
    for row in rows:
        pk = int(row["series.pk"])
        seq = int(row["series.change_seq"] or 0)
        tags.append(f"{pk}.{seq}")
        blobs.append(cache.series_gz(pk, seq, study, row["series.series_instance_uid"], root))
    etag = '"' + hashlib.sha256((root + "|" + ",".join(tags)).encode()).hexdigest()[:24] + '"'
    if len(blobs) == 1:
        body = blobs[0] if gzipped else gzip.decompress(blobs[0])
        return body, etag, gzipped
    parts = [gzip.decompress(b)[1:-1] for b in blobs]
    joined = b"[" + b",".join(p for p in parts if p) + b"]"
    if gzipped:
        return gzip.compress(joined, compresslevel=5), etag, True
    return joined, etag, False


async def metadata(request: Request, study: str, series: str | None = None) -> Response:
    require_json(request, "metadata")
    body, etag, gzipped = await run_in_threadpool(_metadata_body, request, study, series)
    if gzipped:  # a strong validator names one representation (RFC 9110 8.8.3)
        etag = etag[:-1] + '-gzip"'
    headers = {"ETag": etag, "Vary": "Accept-Encoding, Accept",
               "Cache-Control": "no-cache"}
    if _etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=DICOM_JSON, headers=headers)


def _etag_matches(request: Request, etag: str) -> bool:
    inm = request.headers.get("if-none-match")
    if not inm:
        return False
    tags = [t.strip() for t in inm.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags


async def instance_metadata(request: Request, study: str, series: str, sop: str) -> Response:
    require_json(request, "metadata")
    archive = archive_of(request)
    root = base_url(request)

    def build() -> tuple[bytes, str]:
        ref = find_instances(archive, study, series, sop)[0]
        bulk_root = f"{root}/studies/{study}/series/{series}/instances/{sop}"
        fh = _opened(archive, ref)
        if fh is None:
            raise HTTPProblem(404, "this instance was deleted meanwhile")
        with fh:
            item = instance_json(fh, bulk_root, ref.transfer_syntax_uid)
        etag = '"' + hashlib.sha256(f"{root}|{ref.sha256}".encode()).hexdigest()[:24] + '"'
        return json.dumps([item], ensure_ascii=False, separators=(",", ":")).encode(), etag

    body, etag = await run_in_threadpool(build)
    headers = {"ETag": etag, "Vary": "Accept", "Cache-Control": "no-cache"}
    if _etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=DICOM_JSON, headers=headers)


# -- Frames --------------------------------------------------------------------------------------

def parse_frame_list(text: str) -> list[int]:
    try:
        # An empty item (1,,2 or a trailing comma) is no frame number: refused with the rest.
        numbers = [int(t) for t in text.replace("%2C", ",").split(",")]
    except ValueError:
        raise HTTPProblem(400, f"frame list {text[:40]!r} is not a comma-separated list of "
                          "numbers") from None
    if not numbers or len(numbers) > 10_000:
        raise HTTPProblem(400, "frame list is empty or too long")
    if min(numbers) < 1:
        raise HTTPProblem(400, "frame numbers are positive integers (the first frame is 1)")
    if len(set(numbers)) != len(numbers):
        # 1,1,1,... would make one small request cost the frame's size that many times over
        raise HTTPProblem(400, "frame list names a frame more than once")
    return numbers


def choose_frame_encoding(ranges: list[MediaRange], stored_ts: str) -> tuple[str, bool]:
    """(media type of each part, decode?) for frames of an instance stored in `stored_ts`.

    ``transfer-syntax=*`` (what OHIF sends) gets the frames as stored, compressed or not;
    plain application/octet-stream gets them decoded to native little endian.
    """
    stored_media = FRAME_MEDIA_TYPE.get(stored_ts, OCTET)
    plain = stored_ts in (EXPLICIT_LE, "1.2.840.10008.1.2")
    native = stored_ts in NATIVE_SYNTAXES

    def octet() -> tuple[str, bool] | None:
        if plain:
            return OCTET, False
        if native or pixels.can_transcode(stored_ts, EXPLICIT_LE):
            return OCTET, True
        return None

    for r in ranges:
        ptype, ts = r.part_type, r.transfer_syntax
        if r.type in ("*/*", "multipart/*") or ptype in ("", "*/*", "*"):
            return octet() or (stored_media, False)
        if ptype == OCTET:
            if ts == "*":
                return (OCTET, not plain) if native else (stored_media, False)
            if ts in (None, EXPLICIT_LE):
                choice = octet()
                if choice:
                    return choice
            continue
        if not native and ts in (None, "*", stored_ts) and (
                ptype == stored_media
                or (ptype.endswith("/*") and stored_media.startswith(ptype[:-1]))):
            # The stored type, or a wildcard of its kind (image/* for image/jp2).
            return stored_media, False
    raise HTTPProblem(406, f"frames are stored as {stored_media} ({stored_ts}); the accepted "
                      "media types cannot be served")


class _PixelInfoCache:
    """The frame layout of recently served files: a viewer asks for the frames of a series one
    request at a time, and parsing the header was a third of a frame request's time. A stored
    file never changes under its storage key (a replaced or deleted object gets another key or
    is no longer found in the index), so the path is the key. Layouts that hold a large value
    read with the header (an encapsulated Pixel Data) are not kept."""

    def __init__(self, entries: int = 512, max_value_bytes: int = 64 * 1024) -> None:
        self.entries = entries
        self.max_value_bytes = max_value_bytes
        self.items: OrderedDict[Path, pixels.PixelInfo] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: Path) -> pixels.PixelInfo:
        with self.lock:
            info = self.items.get(path)
            if info is not None:
                self.items.move_to_end(path)
                return info
        info = pixels.pixel_info(path)
        # A deflated object's layout holds its inflated data set open: not kept.
        if info.inflated is None and (info.in_memory is None
                                      or len(info.in_memory) <= self.max_value_bytes):
            with self.lock:
                self.items[path] = info
                while len(self.items) > self.entries:
                    self.items.popitem(last=False)
        return info


_PIXEL_INFO = _PixelInfoCache()


def _frames_response(archive: Archive, ranges: list[MediaRange], study: str, series: str,
                     sop: str, numbers: list[int]) -> Response:
    ref = find_instances(archive, study, series, sop)[0]
    path = archive.retrieve.path(ref)
    if path is None:
        raise HTTPProblem(500, "stored object is not on a file system")
    info = _PIXEL_INFO.get(path)
    pixels.check_frames(info, numbers)
    video = FRAME_MEDIA_TYPE.get(info.transfer_syntax, "")
    if video.startswith("video/"):
        return _video_frames(info, ranges, video)
    media, decode = choose_frame_encoding(ranges, info.transfer_syntax)
    if media == OCTET:
        part_type = f"{OCTET}; transfer-syntax={EXPLICIT_LE}"
    else:
        part_type = f"{media}; transfer-syntax={info.transfer_syntax}"
    read = pixels.decoded_frame if decode else pixels.stored_frame
    single = len(numbers) == 1 and not ranges[0].multipart and ranges[0].type not in (
        "*/*", "multipart/*")
    if single:
        # The client asked for a single-part response (PS3.18 8.7.3.3.2): the frame itself.
        return Response(read(info, numbers[0]), media_type=part_type)
    return _frame_parts(info, numbers, read, media, part_type)


#: A multipart body of frames (or bulk data) up to this size is made before the response starts,
#: so that any failure is the request's status; a larger one is sent as it is read.
BUFFERED_BODY = 16 << 20


def _frame_parts(info: pixels.PixelInfo, numbers: list[int], read: Any, media: str,
                 part_type: str) -> Response:
    """Frames `numbers` of `info` as a multipart/related body, one part each, read with
    `read`. A body larger than :data:`BUFFERED_BODY` (all the frames of a long cine) is
    streamed: the first frame is read before the response starts (its errors are the
    request's), the others one at a time as the client reads, so memory stays at a frame
    whatever the list; one failing later cuts the body short (no closing boundary), which a
    client sees as an incomplete response, never as a frame silently left out."""
    boundary = new_boundary()
    content_type = f'multipart/related; type="{media}"; boundary={boundary}'
    if len(numbers) * max(info.frame_bytes, 1) <= BUFFERED_BODY:
        body = b"".join(multipart_stream(
            boundary, ((part_type, iter([read(info, n)])) for n in numbers)))
        return Response(body, media_type=content_type)
    first = read(info, numbers[0])

    def parts() -> Iterator[tuple[str, Iterator[bytes]]]:
        yield part_type, iter((first,))
        for n in numbers[1:]:
            yield part_type, iter((read(info, n),))

    return StreamingResponse(multipart_stream(boundary, parts()), media_type=content_type)


def _video_frames(info: pixels.PixelInfo, ranges: list[MediaRange], media: str) -> Response:
    """Frames of a video: its frames are not cut out of the one stream (PS3.5 8.2.5), and a
    fragment of it is no frame, so any frame list is answered with the whole stream, in one
    part; the client must accept the video's media type."""
    if not _accepts_video(ranges, media):
        raise HTTPProblem(406, f"this instance is a video: its frames are one {media} stream, "
                          "which the Accept header leaves out")
    stream = _video_stream(info)
    part_type = f"{media}; transfer-syntax={info.transfer_syntax}"
    if not ranges[0].multipart and ranges[0].type not in ("*/*", "multipart/*"):
        return Response(stream, media_type=part_type)
    boundary = new_boundary()
    body = b"".join(multipart_stream(boundary, iter([(part_type, iter([stream]))])))
    return Response(body, media_type=f'multipart/related; type="{media}"; boundary={boundary}')


async def frames(request: Request, study: str, series: str, sop: str, frame_list: str,
                 ) -> Response:
    """Frames in one piece of work off the event loop: they are small, and each hop costs."""
    numbers = parse_frame_list(frame_list)
    return await run_in_threadpool(_frames_response, archive_of(request), accept_of(request),
                                   study, series, sop, numbers)


# -- Bulk data -----------------------------------------------------------------------------------

def _bulk_span(path: Path, tag_path: list[str]) -> tuple[int, int] | None:
    """(position in the file, length) of the value a bulk data path names when it can be sent
    straight from the file: a value long enough to have been left on disk by the header's
    parse, in a little endian syntax that is not deflated. None otherwise (the value is then
    read by :func:`_bulk_bytes`)."""
    from pydicom.dataelem import RawDataElement

    with open(path, "rb") as fh:
        ds = read_deferred(fh)
        if str(ds.file_meta.get("TransferSyntaxUID", "")) not in (EXPLICIT_LE, IMPLICIT_LE):
            return None
        try:
            holder, tag = locate(ds, tag_path)
        except (KeyError, IndexError, ValueError):
            raise HTTPProblem(404, "no such bulk data element in this instance") from None
        raw = holder.get_item(tag, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.value is not None \
            or raw.length == 0xFFFFFFFF or raw.VR == "SQ" or raw.value_tell < 0:
        return None
    return int(raw.value_tell), int(raw.length)


def _file_chunks(path: Path, start: int, length: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(start)
        while length > 0:
            data = fh.read(min(chunk, length))
            if not data:
                return
            length -= len(data)
            yield data


def _bulk_bytes(path: Path, tag_path: list[str]) -> bytes:
    """The value a bulk data path names, in little endian byte order (PS3.18 8.7.3.3.1:
    ``application/octet-stream`` bulk data is little endian): the OW, OL, OF, OD and OV
    values of a big endian object are turned around word by word (PS3.5 7.3), the others are
    sent as stored. The Pixel Data of an object not in a little endian native syntax is
    served by :func:`_pixel_bulk`.
    """
    with open(path, "rb") as fh:
        ds = read_deferred(fh)
        try:
            holder, tag = locate(ds, tag_path)
        except (KeyError, IndexError, ValueError):
            raise HTTPProblem(404, "no such bulk data element in this instance") from None
        elem = holder[tag]
        value = elem.value
        if value is None:
            return b""
        if not isinstance(value, (bytes, bytearray)):
            raise HTTPProblem(404, "that element is not bulk data")
        if str(ds.file_meta.get("TransferSyntaxUID", "")) == EXPLICIT_BE:
            return swapped(bytes(value), value_word_size(elem.VR))
        return bytes(value)


def _pixel_bulk(path: Path, ranges: list[MediaRange],
                ) -> tuple[str, pixels.PixelInfo, Any]:
    """How the Pixel Data of an instance stored in `path` goes out as bulk data: the media
    type, its layout and how each frame is read (None for a video, sent as its stream).

    PS3.18 8.7.3.3: uncompressed bulk data (``application/octet-stream``) is native little
    endian, so frames stored compressed are decoded and big endian is swapped; compressed bulk
    data is sent frame by frame, each frame's compressed bitstream without the fragment
    delimiters (PS3.18 8.7.3.3.2), when the client accepts the stored media type (or
    ``transfer-syntax=*``). Video is the stream as stored.
    """
    info = _PIXEL_INFO.get(path)
    stored_media = FRAME_MEDIA_TYPE.get(info.transfer_syntax, OCTET)
    if stored_media.startswith("video/"):
        return stored_media, info, None
    media, decode = choose_frame_encoding(ranges, info.transfer_syntax)
    return media, info, pixels.decoded_frame if decode else pixels.stored_frame


def _native_pixel_chunks(info: pixels.PixelInfo, read: Any, start: int, end: int,
                         ) -> Iterator[bytes]:
    """Bytes `start` to `end` (inclusive) of the native Pixel Data of `info`, read a frame
    at a time (decoded or cut by `read`)."""
    size = info.frame_bytes
    for n in range(start // size + 1, end // size + 2):
        data = read(info, n)
        first = (n - 1) * size
        yield data[max(start - first, 0):end - first + 1]


def _video_stream(info: pixels.PixelInfo) -> bytes:
    """The video stream of an encapsulated Pixel Data: its fragments after the Basic Offset
    Table, joined (PS3.5 8.2.5: one stream for all the frames, split into fragments at any
    byte; Number of Frames counts video frames, which are not cut out of it)."""
    def joined(buffer: Any) -> bytes:
        header = buffer.read(8)
        if len(header) != 8 or header[:4] != b"\xfe\xff\x00\xe0":
            raise HTTPProblem(406, "the encapsulated pixel data of this instance has no Basic "
                              "Offset Table item")
        buffer.seek(int.from_bytes(header[4:], "little"), os.SEEK_CUR)
        try:
            return b"".join(generate_fragments(buffer))
        except ValueError as exc:
            raise HTTPProblem(406, f"the video stream of this instance cannot be read: {exc}"
                              ) from None

    if info.in_memory is not None:
        return joined(io.BytesIO(info.in_memory))
    with open(info.path, "rb") as fh:
        fh.seek(info.value_tell)
        return joined(fh)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range of a Range header, None to ignore the header (no range, another unit, a
    syntactically invalid range such as ``5-2``, or several ranges, which would need a
    multipart/byteranges answer: a server may ignore Range, RFC 9110 14.1.1, 14.2, and answers
    the whole value with 200); 416 when the range is not within `size`."""
    if not header or header[:6].lower() != "bytes=":
        return None
    specs = [p.strip() for p in header[6:].split(",") if p.strip()]
    if len(specs) != 1:
        return None
    spec = specs[0]
    start_s, _, end_s = spec.partition("-")
    try:
        if start_s == "":
            length = int(end_s)
            start, end = max(0, size - length), size - 1
        else:
            start = int(start_s)
            if end_s and int(end_s) < start:
                return None
            end = int(end_s) if end_s else size - 1
    except ValueError:
        return None
    if start > end or start >= size:
        raise HTTPProblem(416, f"range not satisfiable (size {size})",
                          {"Content-Range": f"bytes */{size}"})
    return start, min(end, size - 1)


async def bulkdata(request: Request, study: str, series: str, sop: str, tag_path: str,
                   ) -> Response:
    archive = archive_of(request)
    parts = [p for p in tag_path.split("/") if p]
    if not parts or len(parts) % 2 != 1 or len(parts) > 41:
        raise HTTPProblem(400, "bulk data path must be TAG or TAG/ITEM/.../TAG")
    for i, p in enumerate(parts):
        if (i % 2 == 0 and (len(p) != 8 or not all(c in "0123456789abcdefABCDEF" for c in p))) \
                or (i % 2 == 1 and not p.isdigit()):
            raise HTTPProblem(400, f"bad bulk data path component {p[:20]!r}")
    ref = (await run_in_threadpool(find_instances, archive, study, series, sop))[0]
    path = archive.retrieve.path(ref)
    if path is None:
        raise HTTPProblem(500, "stored object is not on a file system")
    ranges = accept_of(request)
    asked_multipart = any(r.multipart for r in ranges) and not any(
        r.type in (OCTET, "*/*") for r in ranges)
    headers = {"Accept-Ranges": "bytes"}
    if parts == ["7FE00010"] and ref.transfer_syntax_uid not in (EXPLICIT_LE, IMPLICIT_LE):
        media, info, read = await run_in_threadpool(_pixel_bulk, path, ranges)
        if read is None or media != OCTET:
            # Compressed: one part per frame (a Range cannot address several parts).
            part_type = f"{media}; transfer-syntax={ref.transfer_syntax_uid}"
            if (read is None or info.frames == 1) and not asked_multipart:
                # One part (a single frame, or a video stream, which players read by Range).
                one = await run_in_threadpool(_video_stream, info) if read is None else \
                    await run_in_threadpool(read, info, 1)
                rng = _parse_range(request.headers.get("range"), len(one))
                if rng is not None:
                    start, end = rng
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(one)}"
                    return Response(one[start:end + 1], status_code=206,
                                    media_type=part_type, headers=headers)
                return Response(one, media_type=part_type, headers=headers)
            if read is None:
                stream = await run_in_threadpool(_video_stream, info)
                boundary = new_boundary()
                body = b"".join(multipart_stream(boundary, iter([(part_type, iter([stream]))])))
                return Response(body, media_type=f'multipart/related; type="{media}"; '
                                f"boundary={boundary}")
            return await run_in_threadpool(_frame_parts, info, list(range(1, info.frames + 1)),
                                           read, media, part_type)
        size = info.frames * info.frame_bytes
        if info.bits_allocated % 8 == 0 and size > BUFFERED_BODY and str(
                info.header.get("PhotometricInterpretation", "")).strip() != "YBR_FULL_422":
            # Native pixels of a large object, decoded or swapped a frame at a time.
            return await _streamed_bulk(request, headers, size, asked_multipart,
                                        lambda start, end: _native_pixel_chunks(
                                            info, read, start, end))
        data = b"".join(await run_in_threadpool(
            lambda: [read(info, n) for n in range(1, info.frames + 1)]))
    else:
        span = await run_in_threadpool(_bulk_span, path, parts)
        if span is not None and span[1] > BUFFERED_BODY:
            # A large value (Pixel Data, a private OB of 100 MB) sent from the file as it is
            # read, only the bytes of the Range asked for.
            offset, size = span
            return await _streamed_bulk(request, headers, size, asked_multipart,
                                        lambda start, end: _file_chunks(
                                            path, offset + start, end - start + 1))
        data = await run_in_threadpool(_bulk_bytes, path, parts)
    rng = _parse_range(request.headers.get("range"), len(data))
    status = 200
    if rng is not None:
        start, end = rng
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        data, status = data[start:end + 1], 206
    if asked_multipart:
        # The range too goes in the one part of a multipart/related body when the client asked
        # for that (dicomweb-client's retrieve_bulkdata with a byte range does).
        boundary = new_boundary()
        body = b"".join(multipart_stream(boundary, iter([(OCTET, iter([data]))])))
        return Response(body, status_code=status, media_type=f'multipart/related; '
                        f'type="{OCTET}"; boundary={boundary}', headers=headers)
    return Response(data, status_code=status, media_type=OCTET, headers=headers)


async def _streamed_bulk(request: Request, headers: dict[str, str], size: int,
                         asked_multipart: bool, chunks: Any) -> Response:
    """A bulk data value of `size` bytes sent as it is read: ``chunks(start, end)`` yields
    bytes `start` to `end` inclusive; the Range asked for, if any (206). The first chunk is
    read before the response starts, so a value that cannot be read is the request's error."""
    rng = _parse_range(request.headers.get("range"), size)
    status = 200
    start, end = 0, size - 1
    if rng is not None:
        start, end = rng
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        status = 206
    body = chunks(start, end)
    first = await run_in_threadpool(next, body, b"")

    def rest() -> Iterator[bytes]:
        yield first
        yield from body

    if asked_multipart:
        boundary = new_boundary()
        return StreamingResponse(
            multipart_stream(boundary, iter([(OCTET, rest())])), status_code=status,
            media_type=f'multipart/related; type="{OCTET}"; boundary={boundary}',
            headers=headers)
    headers["Content-Length"] = str(end - start + 1)
    return StreamingResponse(rest(), status_code=status, media_type=OCTET, headers=headers)


# -- Rendered and thumbnails ---------------------------------------------------------------------

#: The media types of a rendered image (PS3.18 Table 8.7.4-1: JPEG the default, GIF and PNG
#: required).
RENDERED_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")


def _render_media(request: Request) -> str:
    for r in accept_of(request):
        t = r.part_type if r.multipart else r.type
        if t in RENDERED_IMAGE_TYPES:
            return t
        if t in ("*/*", "image/*"):
            return "image/jpeg"
    raise HTTPProblem(406, "rendered images are served as image/jpeg, image/png or image/gif")


def _report_media(request: Request) -> str:
    """The rendered type of a Structured Report (PS3.18 Table 8.7.4-1: text/html the
    default, text/plain required)."""
    for r in accept_of(request):
        t = r.part_type if r.multipart else r.type
        if t in ("text/html", "text/plain"):
            return t
        if t in ("*/*", "text/*"):
            return "text/html"
    raise HTTPProblem(406, "this instance is a Structured Report: its rendered form is "
                      "text/html or text/plain, which the Accept header leaves out")


def _rendered_frames_media(request: Request) -> str:
    """The type of each part of several rendered frames: image/jpeg and image/png are single
    image types, so several frames are a ``multipart/related`` response, and a client that
    accepts only the single part types gets a 406 (PS3.18 10.4.4: a single part media type is
    for a resource that is one item)."""
    for r in accept_of(request):
        if r.multipart and r.part_type in RENDERED_IMAGE_TYPES:
            return r.part_type
        if r.type in ("*/*", "multipart/*") or (r.multipart and r.part_type in (
                "", "*/*", "image/*")):
            return "image/jpeg"
    raise HTTPProblem(406, "several frames rendered are one image each: accept "
                      "multipart/related; type=\"image/jpeg\" (or image/png), or ask for the "
                      "frames one at a time")


def _representative(refs: list[InstanceRef]) -> InstanceRef:
    """The instance to render for a study or series: the first image (its first frame) of the
    first series that holds images, in the retrieve order (series, then instance number);
    presentation states, reports, documents are passed over when there is an image."""
    images = [r for r in refs if pixels.is_image_class(r.sop_class_uid)]
    return (images or refs)[0]


_ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _accepts_pdf(request: Request) -> bool:
    """True when the client accepts application/pdf, the rendered type of an Encapsulated PDF
    (PS3.18 8.7.4, Table 8.7.4-1)."""
    for r in accept_of(request):
        t = r.part_type if r.multipart else r.type
        if t in ("application/pdf", "application/*", "*/*"):
            return True
    return False


def _accepts_video(ranges: list[MediaRange], media: str) -> bool:
    """True when the client accepts `media` (the stored video's type, ``video/mp4`` say), the
    rendered type of a video instance (PS3.18 8.7.4, Table 8.7.4-1), and that of its frames.
    A media element asks with no Accept or ``*/*``."""
    for r in ranges:
        t = r.part_type if r.multipart else r.type
        if t in (media, "video/*", "*/*") or (r.multipart and t in ("", "multipart/*")):
            return True
    return False


def _rendered_video(request: Request, path: Path, media: str) -> Response:
    """The video stream of a video instance as its rendered form, by byte Range if asked (a
    ``<video>`` element reads it that way)."""
    if not _accepts_video(accept_of(request), media):
        raise HTTPProblem(406, f"this instance is a video: its rendered form is {media}, "
                          "which the Accept header leaves out")
    stream = _video_stream(_PIXEL_INFO.get(path))
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    rng = _parse_range(request.headers.get("range"), len(stream))
    if rng is None:
        return Response(stream, media_type=media, headers=headers)
    start, end = rng
    headers["Content-Range"] = f"bytes {start}-{end}/{len(stream)}"
    return Response(stream[start:end + 1], status_code=206, media_type=media, headers=headers)


async def rendered(request: Request, study: str, series: str | None = None,
                   sop: str | None = None, frame: str | None = None, *,
                   thumbnail: bool = False) -> Response:
    archive = archive_of(request)
    numbers = parse_frame_list(frame) if frame is not None else [1]
    several = len(numbers) > 1 and not thumbnail  # a thumbnail is of the first frame listed
    opts = pixels.parse_render_options(request.query_params, "image/jpeg", thumbnail=thumbnail)
    refs = await run_in_threadpool(find_instances, archive, study, series, sop)
    ref = refs[0] if sop else _representative(refs)
    path = archive.retrieve.path(ref)
    if path is None:
        raise HTTPProblem(500, "stored object is not on a file system")
    if ref.sop_class_uid == _ENCAPSULATED_PDF and not thumbnail and frame is None:
        # A document's rendered form is the document (PS3.18 8.7.4), when the client takes it.
        if not _accepts_pdf(request):
            raise HTTPProblem(406, "this instance is an Encapsulated PDF: its rendered form is "
                              "application/pdf, which the Accept header leaves out")

        data = await run_in_threadpool(pixels.encapsulated_document, path)
        return Response(data, media_type="application/pdf")
    if is_structured_report(ref.sop_class_uid) and not thumbnail and frame is None:
        # A report's rendered form is its text (PS3.18 8.7.4), as HTML or plain text.
        media = _report_media(request)
        text = await run_in_threadpool(render_report, path, media)
        return Response(text, media_type=f"{media}; charset=utf-8",
                        headers={"Cache-Control": "private, max-age=3600"})
    video = FRAME_MEDIA_TYPE.get(ref.transfer_syntax_uid, "")
    if video.startswith("video/") and sop and not thumbnail and frame is None:
        return await run_in_threadpool(_rendered_video, request, path, video)
    opts.media_type = _rendered_frames_media(request) if several else _render_media(request)
    if frame is not None:
        # Every frame asked for must exist before the response starts: one missing is a 404,
        # never a part silently left out (PS3.18 8.3.5.1.x, 10.4.1.1.3).
        count = await run_in_threadpool(pixels.frames_to_render, path)
        missing = [n for n in numbers if n > count]
        if missing:
            raise HTTPProblem(404, f"frame {missing[0]} does not exist (this instance has "
                              f"{count})")
    number = numbers[0]
    if several:
        media = opts.media_type
        # The first frame is rendered before the response starts (its errors are the
        # request's); the others one at a time as the body is sent, so a long frame list
        # never holds every image in memory. A later frame that fails is left out (logged).
        first = await run_in_threadpool(pixels.render, path, numbers[0], opts)

        def images() -> Iterator[tuple[str, Iterator[bytes]]]:
            yield media, iter((first,))
            for n in numbers[1:]:
                try:
                    image = pixels.render(path, n, opts)
                except Exception as exc:  # noqa: BLE001 - the response is under way
                    log.warning("sop=%s frame %d left out of a rendered response: %s",
                                ref.sop_instance_uid, n, str(exc)[:120])
                    continue
                yield media, iter((image,))

        boundary = new_boundary()
        return StreamingResponse(multipart_stream(boundary, images()),
                                 media_type=f'multipart/related; type="{media}"; '
                                 f"boundary={boundary}",
                                 headers={"Cache-Control": "private, max-age=3600"})
    data = await run_in_threadpool(pixels.render, path, number, opts)
    return Response(data, media_type=opts.media_type,
                    headers={"Cache-Control": "private, max-age=3600"})
