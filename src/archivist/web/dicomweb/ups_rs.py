"""UPS-RS, the Worklist Service (PS3.18 chapter 11): Unified Procedure Steps over HTTP, on the
rules and the store of :mod:`archivist.archive.ups` (the same workitems UPS DIMSE serves)::

    POST   /dicomweb/workitems{?workitem}                       Create (11.4)
    GET    /dicomweb/workitems/{workitem}                       Retrieve (11.5)
    POST   /dicomweb/workitems/{workitem}{?transaction-uid}     Update (11.6)
    PUT    /dicomweb/workitems/{workitem}/state                 Change State (11.7)
    POST   /dicomweb/workitems/{workitem}/cancelrequest         Request Cancellation (11.8)
    GET    /dicomweb/workitems?{match}&includefield=&limit=...  Search (11.9)
    POST   /dicomweb/workitems/{workitem}/subscribers/{aetitle}{?deletionlock}  Subscribe (11.10)
    DELETE /dicomweb/workitems/{workitem}/subscribers/{aetitle}               Unsubscribe (11.11)
    POST   /dicomweb/workitems/1.2.840.10008.5.1.4.34.5/subscribers/{aetitle}/suspend  (11.12)

The events reach subscribers over the WebSocket of :mod:`archivist.web.dicomweb.ups_events`.

:data:`HTTP_STATUS` is the one place where the Annex CC status of a refusal
(:class:`~archivist.archive.ups.UpsError`) becomes an HTTP status, per transaction, as the status
code tables of PS3.18 11.4.3 to 11.11.3 give them; the body of every refusal names the rule and
the attribute (``{"status", "error", "dimse_status", "attributes"}``), and the Warning header
carries the text PS3.18 prescribes. Payloads are ``application/dicom+json`` (an array holding one
data set, or the data set itself), at most :data:`MAX_PAYLOAD` bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from starlette import status as http
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from archivist.archive import ups as U
from archivist.archive.ups import UpsError, Workitems
from archivist.core.uids import is_valid_uid
from archivist.errors import QueryError
from archivist.web.dicomweb.common import DICOM_JSON, base_url, require_json
from archivist.web.dicomweb.jsonmodel import dataset_from_json, dataset_to_json
from archivist.web.dicomweb.qido import (
    _RESERVED,
    _SINGLE,
    _attribute,
    _bool_param,
    _comma_is_a_separator,
    _includefields,
    _int_param,
    fuzzy_match,
)
from archivist.web.errors import HTTPProblem

__all__ = ["HTTP_STATUS", "MAX_PAYLOAD", "http_status", "workitems_of"]

#: The largest request payload taken (a workitem's attribute set is at most 4 MiB once stored,
#: :data:`archivist.archive.ups.MAX_DATASET_BYTES`; its JSON, with base64 values, a bit more).
MAX_PAYLOAD = 3 * U.MAX_DATASET_BYTES // 2
#: Answers of one search at most (a larger ``limit`` is cut to it, with a Warning).
MAX_RESULTS = 1000
#: Every binary value inline: a workitem has no bulk data resource.
_INLINE = U.MAX_DATASET_BYTES

CREATE, RETRIEVE, UPDATE, CHANGE_STATE, CANCEL, SUBSCRIBE = (
    "create", "retrieve", "update", "change state", "request cancellation", "subscribe")

#: Annex CC status -> HTTP status, the same for every transaction unless overridden below.
_COMMON: dict[int, int] = {
    U.NO_SUCH_WORKITEM: http.HTTP_404_NOT_FOUND,
    U.NO_SUCH_ATTRIBUTE: http.HTTP_400_BAD_REQUEST,
    U.INVALID_ATTRIBUTE_VALUE: http.HTTP_400_BAD_REQUEST,
    U.INVALID_OBJECT_INSTANCE: http.HTTP_400_BAD_REQUEST,
    U.MISSING_ATTRIBUTE: http.HTTP_400_BAD_REQUEST,
    U.MISSING_ATTRIBUTE_VALUE: http.HTTP_400_BAD_REQUEST,
    U.PROCESSING_FAILURE: http.HTTP_413_CONTENT_TOO_LARGE,  # the attribute set over 4 MiB
    U.UNKNOWN_RECEIVING_AE: http.HTTP_404_NOT_FOUND,
}
#: Per transaction (PS3.18 Tables 11.4.3-1, 11.6.3-1, 11.7.3-1, 11.8.3-1, 11.10.3-1).
HTTP_STATUS: dict[str, dict[int, int]] = {
    # 11.4.3-1: 400 for a payload against the N-CREATE requirements, 409 when it exists.
    CREATE: {**_COMMON, U.DUPLICATE_INSTANCE: http.HTTP_409_CONFLICT,
             U.NOT_SCHEDULED: http.HTTP_400_BAD_REQUEST},
    RETRIEVE: _COMMON,
    # 11.6.2: a COMPLETED or CANCELED workitem "shall be a 400"; 11.6.3-1: 400 for a missing
    # or incorrect Transaction UID; 409 for a request inconsistent with the state (changing
    # the state by an update).
    UPDATE: {**_COMMON, U.MAY_NO_LONGER_BE_UPDATED: http.HTTP_400_BAD_REQUEST,
             U.WRONG_TRANSACTION_UID: http.HTTP_400_BAD_REQUEST,
             U.ONLY_SCHEDULED_BY_CREATE: http.HTTP_409_CONFLICT},
    # 11.7.3-1: 400 for a missing or incorrect Transaction UID, 409 for a transition the
    # current state does not allow.
    CHANGE_STATE: {**_COMMON, U.WRONG_TRANSACTION_UID: http.HTTP_400_BAD_REQUEST,
                   U.MAY_NO_LONGER_BE_UPDATED: http.HTTP_409_CONFLICT,
                   U.ALREADY_IN_PROGRESS: http.HTTP_409_CONFLICT,
                   U.ONLY_SCHEDULED_BY_CREATE: http.HTTP_409_CONFLICT,
                   U.FINAL_STATE_NOT_MET: http.HTTP_409_CONFLICT,
                   U.NOT_IN_PROGRESS: http.HTTP_409_CONFLICT,
                   U.ALREADY_COMPLETED: http.HTTP_409_CONFLICT},
    # 11.8.3-1: 409 for a workitem in a state that cannot be canceled (COMPLETED).
    CANCEL: {**_COMMON, U.ALREADY_COMPLETED: http.HTTP_409_CONFLICT},
    SUBSCRIBE: _COMMON,
}

#: The Warning texts of PS3.18 11.4.3.2, 11.6.3.2, 11.7.3.2 and 11.8.3.2.
WARN_CREATED_MODIFIED = "The Workitem was created with modifications."
WARN_ALREADY = "The UPS is already in the requested state of {state}."
WARN_TUID_MISSING = "The Transaction UID is missing."
WARN_TUID_INCORRECT = "The Transaction UID is incorrect."
WARN_INCONSISTENT = "The submitted request is inconsistent with the current state of the Workitem."
WARN_DELETION_LOCK = "Deletion Lock not granted."

#: Return keys of every search answer: the UPS attributes of Return Key Type 1 and 2 in
#: PS3.4 Table CC.2.5-3 (PS3.18 11.9.2); more with ``includefield`` (``all``: everything).
SEARCH_DEFAULTS = (
    "SOPClassUID", "SOPInstanceUID", "ScheduledProcedureStepPriority",
    "ScheduledProcedureStepModificationDateTime", "ProcedureStepLabel", "WorklistLabel",
    "ScheduledStationNameCodeSequence", "ScheduledStationClassCodeSequence",
    "ScheduledStationGeographicLocationCodeSequence", "ScheduledHumanPerformersSequence",
    "ScheduledProcedureStepStartDateTime", "ExpectedCompletionDateTime",
    "ScheduledWorkitemCodeSequence", "InputReadinessState", "InputInformationSequence",
    "StudyInstanceUID", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
    "PatientSex", "AdmissionID", "IssuerOfAdmissionIDSequence", "ReferencedRequestSequence",
    "ProcedureStepState", "ProcedureStepProgressInformationSequence",
    "UnifiedProcedureStepPerformedProcedureSequence",
)
_JSON_TYPES = ("application/dicom+json", "application/json")
_AET = re.compile(r"^[^\\\x00-\x1f\x7f]{1,16}$")
_WORKLIST_UIDS = (U.GLOBAL_SUBSCRIPTION, U.FILTERED_GLOBAL_SUBSCRIPTION)


def workitems_of(state: Any) -> Workitems:
    """The :class:`Workitems` of an application (made at first use, one per worker)."""
    items = getattr(state, "workitems", None)
    if items is None:
        items = state.workitems = Workitems(state.archive.index)
    return items  # type: ignore[no-any-return]


def http_status(transaction: str, status: int) -> int:
    """The HTTP status answering a refusal with Annex CC `status` in `transaction`."""
    return HTTP_STATUS[transaction].get(status, http.HTTP_400_BAD_REQUEST)


def _warning(request: Request, *texts: str) -> dict[str, str]:
    """The Warning header (RFC 9111 5.5) with PS3.18's texts, as QIDO-RS writes it."""
    host = request.url.hostname or "archivist"
    return {"Warning": ", ".join(f'299 {host}: "{text}"' for text in texts)}


def _refusal(request: Request, transaction: str, exc: UpsError,
             warning: str | None = None) -> JSONResponse:
    status = http_status(transaction, exc.status)
    body = {"status": status, "error": str(exc), "dimse_status": f"0x{exc.status:04X}",
            "attributes": [f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in exc.attributes]}
    headers = _warning(request, warning) if warning else {}
    return JSONResponse(body, status_code=status, headers=headers)


def _workitem_uid(uid: str) -> str:
    if len(uid) > 64 or not is_valid_uid(uid):
        raise HTTPProblem(400, f"the path must name a Workitem UID, not {uid[:70]!r}")
    return uid


def _aet(aet: str) -> str:
    aet = aet.strip()
    if not _AET.match(aet):
        raise HTTPProblem(400, "the Subscriber's AE title must be 1 to 16 characters, without "
                          "backslash or control characters")
    return aet


def _url(request: Request, uid: str) -> str:
    return f"{base_url(request)}/workitems/{uid}"


async def _payload(request: Request, *, optional: bool = False) -> Dataset | None:
    """The one data set of a DICOM JSON payload; None when `optional` and there is none.

    415 for another media type, 413 over :data:`MAX_PAYLOAD` (or ``http_max_body``), 400 for
    JSON that is not one DICOM JSON data set."""
    limit = min(MAX_PAYLOAD, int(request.app.state.settings.http_max_body))
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise HTTPProblem(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise HTTPProblem(413, f"a payload of {int(declared)} bytes exceeds the limit of "
                              f"{limit} bytes")
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding not in ("", "identity"):
        raise HTTPProblem(415, f"Content-Encoding {coding[:40]!r} is not supported here; send "
                          "the payload as is")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise HTTPProblem(413, f"the payload exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data.strip():
        if optional:
            return None
        raise HTTPProblem(400, "the request needs a payload: a data set in DICOM JSON")
    if ctype not in _JSON_TYPES:
        raise HTTPProblem(415, f"the payload must be application/dicom+json, not "
                          f"{ctype[:60] or 'untyped'!r}")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPProblem(400, f"the payload is not JSON ({str(exc)[:80]})") from None
    if isinstance(body, list):
        if len(body) != 1:
            raise HTTPProblem(400, f"the payload must hold one data set, not {len(body)}")
        body = body[0]
    return dataset_from_json(body, "the workitem")


def _json(items: list[dict[str, Any]], status: int = 200,
          headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(data, status_code=status, media_type=DICOM_JSON, headers=headers)


def _as_json(ds: Dataset) -> dict[str, Any]:
    return dict(sorted(dataset_to_json(ds, "", inline_up_to=_INLINE).items()))


# -- the transactions ---------------------------------------------------------------------------


async def create(request: Request) -> Response:
    """Create Workitem (PS3.18 11.4): 201 with Location, and the Warning of 11.4.3.2 when the
    archive completed or changed what was sent (Type 2 attributes added empty, a Worklist
    Label given, a Transaction UID dropped)."""
    uid = request.query_params.get("workitem")
    if uid is None:  # "/workitems?1.2.3", as some clients write the template
        bare = [k for k, v in request.query_params.multi_items() if not v]
        uid = bare[0] if len(bare) == 1 and is_valid_uid(bare[0]) else None
    if uid is not None:
        _workitem_uid(uid)
    ds = await _payload(request)
    assert ds is not None
    if uid is None and str(ds.get("SOPInstanceUID") or "").strip():
        # PS3.18 11.4.1.1: without the query parameter, the data set names the Workitem UID.
        uid = _workitem_uid(str(ds.SOPInstanceUID).strip())
    # The JSON's values are Unicode, whatever character set the sender's data had.
    ds.SpecificCharacterSet = "ISO_IR 192"
    items = workitems_of(request.app.state)
    try:
        made, changes = await run_in_threadpool(items.create, uid, ds)
    except UpsError as exc:
        return _refusal(request, CREATE, exc)
    url = _url(request, made)
    headers = {"Location": url, "Content-Location": url}
    if changes:
        headers.update(_warning(request, WARN_CREATED_MODIFIED))
    return Response(status_code=http.HTTP_201_CREATED, headers=headers)


async def retrieve(request: Request, uid: str) -> Response:
    """Retrieve Workitem (PS3.18 11.5): the workitem as DICOM JSON, never its Transaction UID."""
    require_json(request, "UPS-RS")
    _workitem_uid(uid)
    item = await run_in_threadpool(workitems_of(request.app.state).get, uid)
    if item is None:
        raise HTTPProblem(404, f"no workitem {uid}")
    ds = item.dataset
    if "TransactionUID" in ds:
        del ds.TransactionUID
    return _json([_as_json(ds)], headers={"Content-Location": _url(request, uid)})


async def update(request: Request, uid: str) -> Response:
    """Update Workitem (PS3.18 11.6), the Transaction UID from ``transaction-uid`` (or the
    payload). The payload's Specific Character Set is not applied: its values are Unicode and
    are stored in the workitem's own."""
    _workitem_uid(uid)
    transaction_uid = request.query_params.get("transaction-uid") or None
    ds = await _payload(request)
    assert ds is not None
    if "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
    items = workitems_of(request.app.state)
    try:
        await run_in_threadpool(items.set, uid, ds, transaction_uid)
    except UpsError as exc:
        warning = None
        if exc.status == U.WRONG_TRANSACTION_UID:
            given = transaction_uid or str(ds.get("TransactionUID") or "")
            warning = WARN_TUID_INCORRECT if given else WARN_TUID_MISSING
        elif exc.status in (U.MAY_NO_LONGER_BE_UPDATED, U.ONLY_SCHEDULED_BY_CREATE):
            warning = WARN_INCONSISTENT
        return _refusal(request, UPDATE, exc, warning)
    return Response(status_code=http.HTTP_200_OK,
                    headers={"Content-Location": _url(request, uid)})


async def change_state(request: Request, uid: str) -> Response:
    """Change Workitem State (PS3.18 11.7): the payload holds Procedure Step State and
    Transaction UID. 200; with a Warning when already in the requested final state."""
    _workitem_uid(uid)
    ds = await _payload(request)
    assert ds is not None
    state = str(ds.get("ProcedureStepState") or "").strip().upper()
    if not state:
        return _refusal(request, CHANGE_STATE, UpsError(
            U.MISSING_ATTRIBUTE, "(0074,1000) Procedure Step State is missing: the state to "
            "change to", (int(tag_for_keyword("ProcedureStepState") or 0),)))
    if state == "CANCELLED":  # PS3.18 11.7.1.4 spells it so
        state = U.CANCELED
    tuid = str(ds.get("TransactionUID") or "").strip()
    items = workitems_of(request.app.state)
    try:
        _item, status = await run_in_threadpool(items.change_state, uid, state, tuid)
    except UpsError as exc:
        warning: str | None = WARN_INCONSISTENT
        if exc.status == U.WRONG_TRANSACTION_UID:
            warning = WARN_TUID_INCORRECT if tuid else WARN_TUID_MISSING
        elif exc.status in _COMMON:
            warning = None
        return _refusal(request, CHANGE_STATE, exc, warning)
    headers = {"Content-Location": _url(request, uid)}
    if status == U.ALREADY_CANCELED:
        headers.update(_warning(request, WARN_ALREADY.format(state=U.CANCELED)))
    elif status == U.ALREADY_COMPLETED_WARNING:
        headers.update(_warning(request, WARN_ALREADY.format(state=U.COMPLETED)))
    return Response(status_code=http.HTTP_200_OK, headers=headers)


async def request_cancel(request: Request, uid: str) -> Response:
    """Request Cancellation (PS3.18 11.8): 202. A SCHEDULED workitem is canceled at once; the
    performer of one IN PROGRESS is told (a Cancel Requested event). The optional payload
    gives Reason For Cancellation, a Procedure Step Discontinuation Reason Code Sequence,
    Contact Display Name and Contact URI."""
    _workitem_uid(uid)
    ds = await _payload(request, optional=True)
    items = workitems_of(request.app.state)
    try:
        _item, status = await run_in_threadpool(items.request_cancel, uid, ds)
    except UpsError as exc:
        return _refusal(request, CANCEL, exc,
                        WARN_INCONSISTENT if exc.status == U.ALREADY_COMPLETED else None)
    headers = {"Content-Location": _url(request, uid)}
    if status == U.ALREADY_CANCELED:
        headers.update(_warning(request, WARN_ALREADY.format(state=U.CANCELED)))
    return Response(status_code=http.HTTP_202_ACCEPTED, headers=headers)


# -- search -------------------------------------------------------------------------------------


def _set_path(identifier: Dataset, path: str, value: str | None) -> None:
    """Put the key `path` (dotted keywords into sequences) into `identifier`, with `value`
    (None: a return key)."""
    parts = path.split(".")
    current = identifier
    for keyword in parts[:-1]:
        if keyword not in current or not current[keyword].value:
            setattr(current, keyword, Sequence([Dataset()]))
        seq = current[keyword]
        if seq.VR != "SQ":
            raise QueryError(f"{keyword} is not a sequence")
        current = seq.value[0]
    keyword = parts[-1]
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise QueryError(f"unknown attribute {keyword[:64]!r}")
    vr = dictionary_VR(tag)
    if vr == "SQ":
        if value:
            raise QueryError(f"{keyword} is a sequence: match one of its attributes "
                             f"({keyword}.CodeValue=...)")
        if keyword not in current:
            setattr(current, keyword, Sequence([]))
        return
    if keyword in current and value is None:
        return  # a matching key is its own return key
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV") and value:
        try:
            number: Any = float(value) if vr in ("FL", "FD") else int(value)
        except ValueError:
            raise QueryError(f"{keyword} takes a number, not {value[:20]!r}") from None
        setattr(current, keyword, number)
        return
    current.add_new(tag, vr.split(" or ")[0], value if value else None)


class WorkitemSearch:
    """One Search request (PS3.18 11.9): the QIDO-RS parameter syntax (8.3.4), matched as
    C-FIND matches a UPS (PS3.4 CC.2.6)."""

    def __init__(self, request: Request) -> None:
        params = request.query_params
        for name in _SINGLE:
            if len(params.getlist(name)) > 1:
                raise HTTPProblem(400, f"{name} is given more than once")
        self.limit = _int_param(request, "limit")
        self.offset = _int_param(request, "offset") or 0
        self.fuzzy = _bool_param(request, "fuzzymatching")
        try:
            include, self.include_all = _includefields(params.getlist("includefield"))
            self.identifier = Dataset()
            self.fuzzy_names: list[tuple[str, str]] = []
            seen: set[str] = set()
            for key, value in params.multi_items():
                if key.lower() in _RESERVED:
                    continue
                attr = _attribute(key)
                if attr in seen:
                    raise HTTPProblem(400, f"{key[:64]} is given more than once")
                seen.add(attr)
                if attr == "TransactionUID":
                    raise HTTPProblem(400, "(0008,1195) Transaction UID is never matched nor "
                                      "returned (PS3.4 CC.2.6)")
                if "," in value and (_comma_is_a_separator(attr.split(".")[-1])
                                     or attr.endswith("UID")):
                    value = "\\".join(v.strip() for v in value.split(",") if v.strip())
                tag = tag_for_keyword(attr.split(".")[-1])
                if (self.fuzzy and "." not in attr and tag is not None
                        and dictionary_VR(tag) == "PN" and value.strip()):
                    self.fuzzy_names.append((attr, value))
                    _set_path(self.identifier, attr, None)
                    continue
                _set_path(self.identifier, attr, value)
            for keyword in (*SEARCH_DEFAULTS, *include):
                _set_path(self.identifier, keyword, None)
        except QueryError as exc:
            raise HTTPProblem(400, str(exc)) from None
        self.matching = Dataset()
        for elem in self.identifier:
            if any(elem.keyword == k for k, _ in self.fuzzy_names):
                continue  # matched by fuzzy_match
            if (elem.VR == "SQ" and elem.value and len(elem.value[0])) or (
                    elem.VR != "SQ" and elem.value not in (None, "")):
                self.matching.add(elem)

    def run(self, items: Workitems) -> tuple[list[dict[str, Any]], bool]:
        """The answers as DICOM JSON, and whether :data:`MAX_RESULTS` cut them."""
        wanted = MAX_RESULTS if self.limit is None else min(self.limit, MAX_RESULTS)
        if wanted == 0:
            return [], False
        out: list[dict[str, Any]] = []
        skipped = 0
        paged = not self.fuzzy_names
        found = items.find(self.matching, limit=wanted + 1 if paged else None,
                           offset=self.offset if paged else 0)
        for item in found:
            if not paged:
                ds = item.dataset
                if not all(fuzzy_match(value, str(ds.get(keyword) or ""))
                           for keyword, value in self.fuzzy_names):
                    continue
                if skipped < self.offset:
                    skipped += 1
                    continue
            if len(out) >= wanted:
                return out, self.limit is None or self.limit > MAX_RESULTS
            if self.include_all:
                answer = item.dataset
                if "TransactionUID" in answer:
                    del answer.TransactionUID
            else:
                answer = Workitems.answer(self.identifier, item)
            out.append(_as_json(answer))
        return out, False


async def search(request: Request) -> Response:
    """Search (PS3.18 11.9): 200 with the matches, 204 for none; a limit over
    :data:`MAX_RESULTS` is cut to it, with a Warning."""
    require_json(request, "UPS-RS")
    query = WorkitemSearch(request)
    try:
        found, cut = await run_in_threadpool(query.run, workitems_of(request.app.state))
    except (QueryError, ValueError) as exc:
        raise HTTPProblem(400, str(exc)[:300]) from None
    headers = _warning(request, "The number of results exceeded the maximum supported by the "
                       "server. Additional results can be requested.") if cut else {}
    if not found:
        return Response(status_code=http.HTTP_204_NO_CONTENT, headers=headers)
    return _json(found, headers=headers)


# -- subscriptions ------------------------------------------------------------------------------


def _filter_keys(request: Request) -> Dataset:
    """The matching keys of a Filtered Worklist Subscription: the ``filter`` parameter's
    comma-separated ``attribute=value`` pairs (PS3.18 11.10.1.2), and any other
    ``attribute=value`` parameter (QIDO-RS syntax)."""
    pairs: list[tuple[str, str]] = []
    for key, value in request.query_params.multi_items():
        if key.lower() == "filter":
            for pair in value.split(","):
                name, sep, wanted = pair.partition("=")
                if not sep or not name.strip():
                    raise HTTPProblem(400, f"filter: {pair[:60]!r} is not attribute=value")
                pairs.append((name.strip(), wanted.strip()))
        elif key.lower() not in ("deletionlock", *_RESERVED):
            pairs.append((key, value))
    keys = Dataset()
    try:
        for name, wanted in pairs:
            _set_path(keys, _attribute(name), wanted)
    except QueryError as exc:
        raise HTTPProblem(400, f"filter: {exc}") from None
    return keys


def notification_url(request: Request, aet: str) -> str:
    """The WebSocket where `aet`'s events come (PS3.18 8.10.4, 11.10.3.2)."""
    root = base_url(request)
    scheme, _, rest = root.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/subscribers/{aet}"


async def subscribe(request: Request, uid: str, aet: str) -> Response:
    """Subscribe (PS3.18 11.10) to a workitem, the worklist, or the filtered worklist: 201,
    Content-Location the WebSocket of the subscriber's events."""
    aet = _aet(aet)
    _workitem_uid(uid)
    lock = _bool_param(request, "deletionlock")
    matching = _filter_keys(request) if uid == U.FILTERED_GLOBAL_SUBSCRIPTION else None
    if uid != U.FILTERED_GLOBAL_SUBSCRIPTION and any(
            k.lower() not in ("deletionlock", "accept", "charset")
            for k in request.query_params):
        raise HTTPProblem(400, "matching keys (filter) are for the Filtered Worklist "
                          f"Subscription, {U.FILTERED_GLOBAL_SUBSCRIPTION}, only")
    items = workitems_of(request.app.state)
    try:
        await run_in_threadpool(items.subscribe, aet, uid, lock, matching)
    except UpsError as exc:
        return _refusal(request, SUBSCRIBE, exc)
    except (QueryError, ValueError) as exc:
        raise HTTPProblem(400, f"filter: {str(exc)[:200]}") from None
    return Response(status_code=http.HTTP_201_CREATED,
                    headers={"Content-Location": notification_url(request, aet)})


async def unsubscribe(request: Request, uid: str, aet: str) -> Response:
    """Unsubscribe (PS3.18 11.11): 200, 404 when `aet` has no such subscription. From the
    worklist UIDs it ends the global subscription and every one to a workitem."""
    aet = _aet(aet)
    _workitem_uid(uid)
    items = workitems_of(request.app.state)
    held = await run_in_threadpool(items.subscriptions, aet)
    if not (held if uid in _WORKLIST_UIDS else [s for s in held if s["ups_uid"] == uid]):
        raise HTTPProblem(404, f"{aet} has no subscription to "
                          f"{'the worklist' if uid in _WORKLIST_UIDS else uid}")
    try:
        await run_in_threadpool(items.unsubscribe, aet, uid)
    except UpsError as exc:
        return _refusal(request, SUBSCRIBE, exc)
    return Response(status_code=http.HTTP_200_OK)


async def suspend(request: Request, uid: str, aet: str) -> Response:
    """Suspend Global Subscription (PS3.18 11.12): 200; the subscriptions to workitems stay.
    404 when `aet` has no worklist subscription."""
    aet = _aet(aet)
    if uid not in _WORKLIST_UIDS:
        raise HTTPProblem(400, f"suspend is for the worklist subscriptions ({U.GLOBAL_SUBSCRIPTION}"
                          f" and {U.FILTERED_GLOBAL_SUBSCRIPTION}), not a workitem")
    items = workitems_of(request.app.state)
    held = await run_in_threadpool(items.subscriptions, aet)
    if not any(s["global"] for s in held):
        raise HTTPProblem(404, f"{aet} has no worklist subscription")
    await run_in_threadpool(items.suspend_global, aet)
    return Response(status_code=http.HTTP_200_OK)
