"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related application/dicom parts.

The body is parsed as it streams in; each part goes to a temporary file in the data directory
and then through the one ingest pipeline (the same as C-STORE), so a bad part fails alone and
the good ones are stored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from archivist.archive import part10
from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin, StoreStatus
from archivist.errors import ArchivistError
from archivist.web.dicomweb.common import (
    DICOM,
    DICOM_JSON,
    JSON_RANGES,
    accept_of,
    archive_of,
    base_url,
    check_uid,
)
from archivist.web.dicomweb.multipart import (
    MultipartError,
    Part,
    StreamingParser,
    content_type_params,
    remove_quietly,
)
from archivist.web.dicomweb.siblings import Calls, Siblings
from archivist.web.dicomweb.xmlmodel import DICOM_XML, native_xml
from archivist.web.errors import (
    FAILURE_CANNOT_UNDERSTAND,
    FAILURE_PROCESSING,
    FAILURE_STUDY_MISMATCH,
    HTTPProblem,
    failure_reason,
)

log = logging.getLogger("archivist.web")


def _uids(source: Path | bytes | None) -> dict[str, str]:
    """The UIDs of a received part, as far as they can be read (for the response)."""
    if source is None:
        return {}
    tags = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"]
    ds: Dataset
    try:
        with (BytesIO(source) if isinstance(source, bytes) else open(source, "rb")) as fh:
            if part10.is_deflated(fh):
                # Inflated a step at a time, never whole (pydicom's dcmread would).
                try:
                    ds = part10.read_stored(fh, stop_before_pixels=True, specific_tags=tags)
                except part10.InflateRefused as exc:
                    ds = Dataset()
                    ds.SOPClassUID = exc.meta.get("MediaStorageSOPClassUID", "")
                    ds.SOPInstanceUID = exc.meta.get("MediaStorageSOPInstanceUID", "")
            else:
                ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True,
                                     specific_tags=tags)
    except Exception:  # noqa: BLE001 - garbage parts have no UIDs to report
        return {}
    out = {}
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
        value = ds.get(kw)
        if value:
            out[kw] = str(value).strip().rstrip("\x00")
    return out


_PREAMBLE = b"\x00" * 128 + b"DICM"


def _missing_prefix(head: bytes) -> bytes:
    """What a part whose first 132 bytes are `head` lacks before its File Meta: the 128-byte
    preamble and DICM when it starts with its File Meta (pydicom writes datasets built in
    memory that way), the preamble alone when it starts with DICM; nothing otherwise."""
    if head[128:132] == b"DICM":
        return b""
    if head.startswith(b"DICM\x02\x00"):
        return _PREAMBLE[:128]
    if head.startswith(b"\x02\x00"):
        return _PREAMBLE
    return b""


def _with_preamble(data: bytes) -> bytes:
    """`data` with a preamble if it lacks one (see :func:`_add_preamble`)."""
    return _missing_prefix(data) + data


def _add_preamble(path: Path) -> None:
    """Give a part that starts with its File Meta (no 128-byte preamble, with or without DICM)
    its preamble and DICM. The content is Part 10 otherwise."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    prefix = _missing_prefix(head)
    if not prefix:
        return
    fixed = path.with_suffix(".fixed")
    with open(path, "rb") as src, open(fixed, "wb") as dst:
        dst.write(prefix)
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.replace(fixed, path)


#: The request Content-Encodings STOW-RS decodes, and zlib's window bits for each.
_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class _Inflater:
    """Undoes a request's Content-Encoding (RFC 9110 8.4.1), ``gzip`` or ``deflate`` (zlib),
    as the body arrives, a piece of at most `piece` bytes at a time: a small body that inflates
    hugely is never held whole, and the size limit counts the inflated bytes."""

    def __init__(self, coding: str, piece: int = 1 << 20) -> None:
        self.coding = coding
        self._z = zlib.decompressobj(_CODINGS[coding])
        self._piece = piece

    @classmethod
    def for_request(cls, header: str | None) -> _Inflater | None:
        """The inflater for a Content-Encoding header; None for none (or ``identity``); 415
        for a coding this server does not decode (RFC 9110 15.5.16), naming those it does."""
        codings = [c.strip().lower() for c in (header or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if not codings:
            return None
        if len(codings) == 1 and codings[0] in _CODINGS:
            return cls(codings[0])
        raise HTTPProblem(415, f"Content-Encoding {(header or '')[:40]!r} is not supported; "
                          "send the body as is, or gzip or deflate encoded",
                          {"Accept-Encoding": "gzip, deflate"})

    def pieces(self, chunk: bytes) -> Iterator[bytes]:
        data = chunk
        while data and not self._z.eof:
            try:
                out = self._z.decompress(data, self._piece)
            except zlib.error as exc:
                raise MultipartError(f"the {self.coding} body cannot be decoded ({exc})"
                                     ) from None
            data = self._z.unconsumed_tail
            if out:
                yield out

    def finish(self) -> bytes:
        """The output still held at the end of the body (a few KiB at most)."""
        try:
            tail = self._z.flush()
        except zlib.error as exc:
            raise MultipartError(f"the {self.coding} body cannot be decoded ({exc})") from None
        if not self._z.eof:
            raise MultipartError(f"the {self.coding} body ends before its end of stream")
        return tail


_PARTS_IN_FLIGHT = 4

# The threads that store parts: one pool per process, made at first use (after the fork).
# anyio's run_in_threadpool cost ~8 % of a STOW-RS request's GIL time in its own dispatch.
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _store_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=2 * _PARTS_IN_FLIGHT, thread_name_prefix="stow")
        return _pool


async def _in_pool(fn: Any, *args: Any) -> Any:
    """`fn(*args)` on the parts' pool. As with anyio's run_in_threadpool, a cancelled caller
    still waits for the thread to finish, so nothing is cleaned up under a running store."""
    return await _shielded(asyncio.get_running_loop().run_in_executor(
        _store_pool(), functools.partial(fn, *args)))


class _RefusalLog:
    """One WARNING line per refused part, at most `per_second` a second in this process; the
    others are counted and the count logged when lines are allowed again (a request of 20,000
    bad parts wrote 20,000 lines). The request's own line counts its refused parts anyway."""

    def __init__(self, per_second: int = 20) -> None:
        self.per_second = per_second
        self._lock = threading.Lock()
        self._second = 0
        self._lines = 0
        self._held = 0

    def warn(self, reason: str) -> None:
        now = int(time.monotonic())
        with self._lock:
            if now != self._second:
                held, self._held = self._held, 0
                self._second, self._lines = now, 0
                if held:
                    log.warning("%d more STOW-RS parts refused (not logged one by one)", held)
            if self._lines >= self.per_second:
                self._held += 1
                return
            self._lines += 1
        log.warning("STOW-RS part refused: %s", reason)


_refusals = _RefusalLog()


class _Outcome:
    """What storing one part reported (:class:`StowResult`'s ``ok``/``fail``), replayed into
    the response once every part is done, in the parts' order."""

    def __init__(self) -> None:
        self.calls: Calls = []

    def ok(self, *args: Any) -> None:
        self.calls.append(("ok", args))

    def fail(self, *args: Any) -> None:
        self.calls.append(("fail", args))

    def replay(self, result: StowResult) -> None:
        for name, args in self.calls:
            getattr(result, name)(*args)


class StowResult:
    def __init__(self, root: str, study: str | None) -> None:
        self.root = root
        self.study = study
        self.referenced: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self.studies: list[str] = []

    def ok(self, sop_class: str, sop: str, study: str, series: str, warning: str | None) -> None:
        item: dict[str, Any] = {
            "00081150": {"vr": "UI", "Value": [sop_class]},
            "00081155": {"vr": "UI", "Value": [sop]},
            "00081190": {"vr": "UR", "Value": [
                f"{self.root}/studies/{study}/series/{series}/instances/{sop}"]},
        }
        if warning:
            item["00081196"] = {"vr": "US", "Value": [0xB000]}  # Warning Reason: coercion
        self.referenced.append(item)
        if study not in self.studies:
            self.studies.append(study)

    def fail(self, uids: dict[str, str], reason: int, text: str) -> None:
        item: dict[str, Any] = {
            # Error Comment in the failed item helps a person reading the response. Its tag
            # comes first: attributes are in ascending tag order (PS3.18 F.2.2).
            "00000902": {"vr": "LO", "Value": [_comment(text)]},
            "00081150": {"vr": "UI", "Value": [uids["SOPClassUID"]]} if uids.get("SOPClassUID")
            else {"vr": "UI"},
            "00081155": {"vr": "UI", "Value": [uids["SOPInstanceUID"]]}
            if uids.get("SOPInstanceUID") else {"vr": "UI"},
            "00081197": {"vr": "US", "Value": [reason]},
        }
        self.failed.append(item)

    def body(self) -> dict[str, Any]:
        """The Store Instances Response Module (PS3.18 Table I.1-1): Retrieve URL is Type 2
        (empty when no one study holds what was stored), the two sequences Type 1C (each only
        when it has items)."""
        out: dict[str, Any] = {"00081190": {"vr": "UR"}}
        if self.referenced:
            study = self.study or (self.studies[0] if len(self.studies) == 1 else None)
            if study:
                out["00081190"]["Value"] = [f"{self.root}/studies/{study}"]
        if self.failed:
            out["00081198"] = {"vr": "SQ", "Value": self.failed}
        if self.referenced:
            out["00081199"] = {"vr": "SQ", "Value": self.referenced}
        return out

    def status(self) -> int:
        """200 when every instance was stored as sent; 202 when some failed or were stored
        with a warning (PS3.18 Table 10.5.3-1: "warnings or failures exist"; Orthanc answered
        200 with warnings until its issue 196); 409 when none was stored."""
        if not self.failed:
            warned = any("00081196" in item for item in self.referenced)
            return 202 if warned else 200
        return 202 if self.referenced else 409


def _store_part(archive: Archive, part: Part, study: str | None,
                result: StowResult | _Outcome, origin: Origin) -> None:
    body: Path | bytes | None = part.data if part.data is not None else part.path
    if not part.complete:
        result.fail(_uids(body), FAILURE_CANNOT_UNDERSTAND,
                    "part truncated: the request ended before its boundary")
        return
    mtype = _part_type(part)
    if mtype != DICOM:
        result.fail({}, FAILURE_CANNOT_UNDERSTAND, f"part of type {mtype[:40]} is not "
                    "application/dicom")
        return
    assert body is not None
    _store_body(archive, body, study, result, origin)


def _part_type(part: Part) -> str:
    mtype, _ = content_type_params(part.content_type or DICOM)
    return mtype


def _store_body(archive: Archive, body: Path | bytes, study: str | None,
                result: StowResult | _Outcome, origin: Origin) -> None:
    """Store one whole application/dicom part (in memory or in its file) and report it."""
    try:
        # The one ingest reads the part once; a refusal carries the UIDs it read. A part held
        # in memory is stored from there (written once, to its place in the store).
        if isinstance(body, bytes):
            body = _with_preamble(body)
            res = archive.ingest.store_bytes(body, origin, expected_study=study)
        else:
            _add_preamble(body)
            res = archive.ingest.store_file(body, origin, consume=True, expected_study=study)
    except ArchivistError as exc:
        # The reason without the values it quotes (a validation finding quotes patient data)
        _refusals.warn(str(exc).partition(": ")[0])
        uids = getattr(exc, "uids", None) or _uids(body)
        result.fail(uids, failure_reason(exc), str(exc) or type(exc).__name__)
        return
    except Exception as exc:
        log.exception("STOW-RS part failed unexpectedly")
        result.fail(_uids(body), FAILURE_PROCESSING,
                    f"internal error ({type(exc).__name__})")
        return
    warning = "; ".join(res.warnings) if res.warnings else None
    study_uid, series_uid = res.study_instance_uid, res.series_instance_uid
    if res.status is StoreStatus.ALREADY_STORED:
        warning = None
        # The copy kept is the first one (duplicate policy keep); the one sent may name
        # another study or series, where the instance is not: the response gives where it is.
        stored = _stored_at(archive, res.sop_instance_uid)
        if stored is not None and stored != (study_uid, series_uid):
            if study is not None and stored[0] != study:
                result.fail({"SOPClassUID": res.sop_class_uid,
                             "SOPInstanceUID": res.sop_instance_uid}, FAILURE_STUDY_MISMATCH,
                            "already stored in another study than the URL's")
                return
            study_uid, series_uid = stored
            warning = "already stored under another study or series: the first copy is kept"
    result.ok(res.sop_class_uid, res.sop_instance_uid, study_uid, series_uid, warning)


def _stored_at(archive: Archive, sop: str) -> tuple[str, str] | None:
    """The Study and Series Instance UIDs the index holds an instance under."""
    ref = archive.retrieve.instance(sop)
    return None if ref is None else (ref.study_instance_uid, ref.series_instance_uid)


def part_file_prefix() -> str:
    """The start of this process's part files' names: a worker started again after one was
    killed removes those of processes that are gone (``siblings.sweep_dead_workers_parts``)."""
    return f"stow-{os.getpid()}_"


#: The exchange with the sibling worker processes (set by ``archivist serve`` in each worker
#: when there are several; None: every part is stored in the process that received it).
_siblings: Siblings | None = None


def use_siblings(siblings: Siblings | None) -> None:
    global _siblings
    _siblings = siblings


async def store_for_sibling(archive: Archive, body: bytes | Path, study: str | None,
                            client: str | None) -> Calls:
    """Store a part another worker received (see :mod:`siblings`); what it reported."""
    outcome = _Outcome()
    await _in_pool(_store_body, archive, body, study, outcome, Origin("stow", None, client))
    return outcome.calls


async def _shielded(work: Any) -> Any:
    """Await `work` (a coroutine or future) so that a cancelled caller still waits for it to
    finish before the cancellation goes on."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait([task])
        raise


def _response_type(request: Request) -> str:
    """The media type of the response: application/dicom+json, or application/dicom+xml when
    the client prefers it (dcm4che's ``stowrs`` asks for XML by default); 406 before the body
    is read, so nothing is stored, when it accepts neither (PS3.18 10.5.3, 8.3.3.1)."""
    for r in accept_of(request):  # best first
        if r.type in JSON_RANGES:
            return DICOM_JSON
        if r.type == DICOM_XML:
            return DICOM_XML
    raise HTTPProblem(406, "the STOW-RS response is application/dicom+json or "
                      "application/dicom+xml; nothing was stored")


async def store(request: Request, study: str | None = None) -> Response:
    archive = archive_of(request)
    settings = archive.settings
    if study is not None:
        check_uid(study, "Study Instance UID")
    response_type = _response_type(request)
    mtype, params = content_type_params(request.headers.get("content-type", ""))
    if mtype != "multipart/related":
        raise HTTPProblem(415, "STOW-RS takes multipart/related; type=\"application/dicom\"")
    part_type = params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise HTTPProblem(415, f"parts of type {part_type[:40]!r} are not supported; send "
                          "application/dicom parts")
    boundary = params.get("boundary")
    if not boundary:
        raise HTTPProblem(400, "multipart/related without a boundary parameter")
    max_body = int(settings.http_max_body)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_body:
                raise HTTPProblem(413, f"request of {int(declared)} bytes exceeds the limit of "
                                  f"{max_body} bytes")
        except ValueError:
            raise HTTPProblem(400, "Content-Length is not a number") from None
    inflater = _Inflater.for_request(request.headers.get("content-encoding"))
    tmp_dir = Path(settings.tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)

    created: list[Path] = []  # every part file, removed at the end whatever happened

    def new_file() -> Path:
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=part_file_prefix(), suffix=".part")
        os.close(fd)
        created.append(Path(name))
        return Path(name)

    try:
        parser = StreamingParser(boundary, new_file)
    except MultipartError as exc:
        raise HTTPProblem(400, str(exc)) from None
    client = request.client.host if request.client else None
    origin = Origin("stow", None, client)
    result = StowResult(base_url(request), study)
    received = 0
    too_large = False
    # Parts are stored while the next ones arrive, a few at a time: their index rows and
    # fsyncs share the ingest's group commits. Outcomes are reported in the parts' order.
    outcomes: list[_Outcome] = []
    running: set[asyncio.Future[None]] = set()
    slots = asyncio.Semaphore(_PARTS_IN_FLIGHT)

    local = 0  # parts being stored in this process
    by_siblings = 0  # parts another worker stored

    async def store_one(part: Part, outcome: _Outcome) -> None:
        nonlocal local, by_siblings
        try:
            # While this process stores one part (and parses the body), the next go to a
            # sibling worker: both cores work on one request.
            siblings = _siblings
            if (local and siblings is not None and siblings.usable and part.complete
                    and _part_type(part) == DICOM):
                body = part.data if part.data is not None else part.path
                assert body is not None
                calls = await _shielded(siblings.forward(body, study, origin.address))
                if calls is not None:
                    outcome.calls.extend(calls)
                    by_siblings += 1
                    return
            local += 1
            try:
                await _in_pool(_store_part, archive, part, study, outcome, origin)
            finally:
                local -= 1
        finally:
            remove_quietly(part.path)
            slots.release()

    async def submit(part: Part) -> None:
        await slots.acquire()
        outcome = _Outcome()
        outcomes.append(outcome)
        task = asyncio.ensure_future(store_one(part, outcome))
        running.add(task)
        task.add_done_callback(running.discard)

    async def settle() -> None:
        """Wait for every part handed over and report them, in order, into `result`."""
        while running:
            await asyncio.gather(*running, return_exceptions=True)
        for outcome in outcomes:
            outcome.replay(result)
        outcomes.clear()

    try:
        try:
            async for chunk in request.stream():
                for data in (inflater.pieces(chunk) if inflater else (chunk,)):
                    received += len(data)
                    if received > max_body:
                        too_large = True
                        break
                    for part in parser.feed(data):
                        await submit(part)
                if too_large:
                    break
            if inflater is not None and not too_large:
                tail = inflater.finish()
                received += len(tail)
                if received > max_body:
                    too_large = True
                else:
                    for part in parser.feed(tail):
                        await submit(part)
            await settle()
        except ClientDisconnect:
            await settle()
        except OSError as exc:
            await settle()
            # Writing a received part failed (ENOSPC, EIO): what was stored stays stored.
            import errno

            status = 507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 503
            if not result.referenced:
                raise HTTPProblem(status, f"cannot receive the request: {exc.strerror}") from None
            result.fail({}, 0xA700, f"cannot receive the rest: {exc.strerror}")
        except MultipartError as exc:
            await settle()
            if not result.referenced:
                raise HTTPProblem(400, f"malformed multipart body: {exc}") from None
            result.fail({}, FAILURE_CANNOT_UNDERSTAND, f"malformed multipart body: {exc}")
        leftover = parser.close()
        if leftover is not None:
            if too_large:
                result.fail(_uids(leftover.data if leftover.data is not None
                                  else leftover.path),
                            FAILURE_CANNOT_UNDERSTAND, "request exceeds the size limit")
            elif leftover.size or leftover.headers:
                await _in_pool(_store_part, archive, leftover, study, result, origin)
    finally:
        if running:  # the request failed or was cancelled: no part file is left in use
            await asyncio.gather(*running, return_exceptions=True)
        for path in created:  # parts not yet removed, and one cut short by a failure
            remove_quietly(path)
    if too_large and not result.referenced:
        raise HTTPProblem(413, f"request exceeds the limit of {max_body} bytes")
    if not result.referenced and not result.failed:
        raise HTTPProblem(400, "the request holds no parts")
    log.info("STOW-RS from %s: %d stored, %d refused%s", origin.address or "-",
             len(result.referenced), len(result.failed),
             f" ({by_siblings} parts handed to other workers)" if by_siblings else "")
    if response_type == DICOM_XML:
        return Response(native_xml(result.body()), status_code=result.status(),
                        media_type=DICOM_XML)
    return JSONResponse(result.body(), status_code=result.status(), media_type=DICOM_JSON)


def _comment(text: str) -> str:
    """`text` as an Error Comment (LO: at most 64 characters): whole words, never a number cut
    in two; an ellipsis says where words were left out inside the limit."""
    if len(text) <= 64:
        return text
    if not text[64].isalnum() and text[64] != ".":
        return text[:64]  # the limit falls between words
    head = text[:63]
    if " " in head[32:]:
        head = head[:head.rindex(" ")]
    return head.rstrip(" ,;:(") + "\u2026"
