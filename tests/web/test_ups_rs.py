"""UPS-RS, the Worklist Service (PS3.18 chapter 11), against a real ``archivist serve`` over HTTP,
with its event WebSocket (``websockets`` client): the life of a workitem, every refusal with its
HTTP status and readable body, search matching, subscriptions, and the security of the writes."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pydicom.uid import generate_uid
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from archivist.core.passwords import hash_password
from archivist.testing.server import ServerProcess

JSON = {"Content-Type": "application/dicom+json"}
GLOBAL = "1.2.840.10008.5.1.4.34.5"
FILTERED = "1.2.840.10008.5.1.4.34.5.1"
LISTED = "http://viewer.example"
EVIL = "http://evil.example"
PASSWORD = "ups-rs secret"

# Tags, as DICOM JSON names them.
STATE, PRIORITY, LABEL, WORKLIST = "00741000", "00741200", "00741204", "00741202"
START, READINESS, TUID, PATIENT = "00404005", "00404041", "00081195", "00100010"
SOP_UID, WORKITEM_CODES, PROGRESS_SEQ = "00080018", "00404018", "00741002"
AFFECTED_UID, EVENT_TYPE = "00001000", "00001002"


def _cs(value: str, vr: str = "CS") -> dict[str, Any]:
    return {"vr": vr, "Value": [value]}


def workitem(**changes: Any) -> dict[str, Any]:
    """A complete workitem as DICOM JSON; `changes` by tag (None removes)."""
    code = {"00080100": _cs("110005", "SH"), "00080102": _cs("DCM", "SH"),
            "00080104": _cs("CAD", "LO")}
    body: dict[str, Any] = {
        STATE: _cs("SCHEDULED"), PRIORITY: _cs("MEDIUM"), LABEL: _cs("Lung nodule CAD", "LO"),
        WORKLIST: _cs("UPSRS", "LO"), START: _cs("20261207090000", "DT"),
        READINESS: _cs("READY"), PATIENT: {"vr": "PN", "Value": [{"Alphabetic": "Müller^Anna"}]},
        "00100020": _cs("P-UPS-RS", "LO"), WORKITEM_CODES: {"vr": "SQ", "Value": [code]},
    }
    for tag, value in changes.items():
        tag = tag.lstrip("_")
        if value is None:
            body.pop(tag, None)
        else:
            body[tag] = value
    return body


def state_change(state: str, tuid: str | None) -> str:
    body = {STATE: _cs(state)}
    if tuid:
        body[TUID] = _cs(tuid, "UI")
    return json.dumps([body])


def completion() -> dict[str, Any]:
    performed = {"00404050": _cs("20261207091000", "DT"), "00404051": _cs("20261207092000", "DT"),
                 "00404033": {"vr": "SQ"}}
    return {"00741216": {"vr": "SQ", "Value": [performed]}}


def progress(percent: int) -> dict[str, Any]:
    return {PROGRESS_SEQ: {"vr": "SQ", "Value": [{"00741004": {"vr": "DS",
                                                              "Value": [percent]}}]}}


def value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("upsrs")
    server = ServerProcess(tmp / "data", extra_args=["--workers", "1"], env={
        "ARCHIVIST_VIEWER_DIR": str(tmp / "no-viewer"),
        "ARCHIVIST_CORS_ORIGINS": f"*,{LISTED}",
    })
    server.start()
    yield server
    server.stop()


class Client:
    """The UPS-RS resources of one server."""

    def __init__(self, srv: ServerProcess, auth: tuple[str, str] | None = None) -> None:
        self.root = f"{srv.url}/dicomweb"
        self.auth = auth

    def create(self, body: Any = None, uid: str | None = None, **kw: Any) -> requests.Response:
        params = {"workitem": uid} if uid else None
        data = body if isinstance(body, (str, bytes)) else json.dumps([body or workitem()])
        return requests.post(f"{self.root}/workitems", params=params, data=data, timeout=30,
                             auth=self.auth, headers=kw.pop("headers", JSON), **kw)

    def new(self, **changes: Any) -> str:
        r = self.create(workitem(**changes))
        assert r.status_code == 201, r.text
        return str(r.headers["Location"].rsplit("/", 1)[1])

    def get(self, uid: str) -> requests.Response:
        return requests.get(f"{self.root}/workitems/{uid}", timeout=30, auth=self.auth)

    def update(self, uid: str, body: dict[str, Any], tuid: str | None = None) -> requests.Response:
        params = {"transaction-uid": tuid} if tuid else None
        return requests.post(f"{self.root}/workitems/{uid}", params=params, timeout=30,
                             data=json.dumps([body]), headers=JSON, auth=self.auth)

    def state(self, uid: str, state: str, tuid: str | None) -> requests.Response:
        return requests.put(f"{self.root}/workitems/{uid}/state", data=state_change(state, tuid),
                            headers=JSON, timeout=30, auth=self.auth)

    def cancel(self, uid: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.post(f"{self.root}/workitems/{uid}/cancelrequest", timeout=30,
                             data=json.dumps([body]) if body else b"", auth=self.auth,
                             headers=JSON if body else {})

    def search(self, **params: Any) -> requests.Response:
        return requests.get(f"{self.root}/workitems", params=params, timeout=30, auth=self.auth)

    def found(self, **params: Any) -> list[str]:
        r = self.search(**params)
        assert r.status_code in (200, 204), r.text
        return [value(item, SOP_UID) for item in r.json()] if r.status_code == 200 else []

    def subscribe(self, uid: str, aet: str, **params: Any) -> requests.Response:
        return requests.post(f"{self.root}/workitems/{uid}/subscribers/{aet}", params=params,
                             timeout=30, auth=self.auth)

    def unsubscribe(self, uid: str, aet: str) -> requests.Response:
        return requests.delete(f"{self.root}/workitems/{uid}/subscribers/{aet}", timeout=30,
                               auth=self.auth)

    def suspend(self, uid: str, aet: str) -> requests.Response:
        return requests.post(f"{self.root}/workitems/{uid}/subscribers/{aet}/suspend",
                             timeout=30, auth=self.auth)

    def channel(self, aet: str, **kw: Any) -> ClientConnection:
        url = self.root.replace("http://", "ws://", 1) + f"/subscribers/{aet}"
        return connect(url, open_timeout=30, **kw)


@pytest.fixture
def ups(srv: ServerProcess) -> Client:
    return Client(srv)


def _events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next `count` event messages (each waited for at most 30 s: no fixed sleep)."""
    return [json.loads(ws.recv(timeout=30)) for _ in range(count)]


def _summary(event: dict[str, Any]) -> tuple[str, int, str | None]:
    return value(event, AFFECTED_UID), value(event, EVENT_TYPE), value(event, STATE)


# -- the life of a workitem ------------------------------------------------------------------------


class TestLifeCycle:
    def test_create_search_claim_progress_complete(self, ups: Client) -> None:
        uid = generate_uid()
        r = ups.create(workitem(), uid=uid)
        assert r.status_code == 201, r.text
        assert r.headers["Location"].endswith(f"/dicomweb/workitems/{uid}")
        assert r.headers["Content-Location"] == r.headers["Location"]
        # Type 2 attributes left out were added empty: created with modifications.
        assert "The Workitem was created with modifications." in r.headers["Warning"]
        assert r.headers["Warning"].startswith("299 ")

        r = ups.get(uid)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(
            "application/dicom+json")
        (item,) = r.json()
        assert value(item, SOP_UID) == uid and value(item, STATE) == "SCHEDULED"
        assert value(item, PATIENT) == {"Alphabetic": "Müller^Anna"}
        assert value(item, "00080016") == "1.2.840.10008.5.1.4.34.6.1"
        assert uid in ups.found(ProcedureStepState="SCHEDULED", WorklistLabel="UPSRS")

        tuid = generate_uid()
        r = ups.state(uid, "IN PROGRESS", tuid)
        assert r.status_code == 200, r.text
        (item,) = ups.get(uid).json()
        assert value(item, STATE) == "IN PROGRESS" and TUID not in item
        assert uid not in ups.found(ProcedureStepState="SCHEDULED", WorklistLabel="UPSRS")

        r = ups.update(uid, progress(50), tuid)
        assert r.status_code == 200, r.text
        (item,) = ups.get(uid).json()
        assert value(item, PROGRESS_SEQ)["00741004"]["Value"] == [50]
        assert ups.update(uid, completion(), tuid).status_code == 200
        r = ups.state(uid, "COMPLETED", tuid)
        assert r.status_code == 200, r.text
        (item,) = ups.get(uid).json()
        assert value(item, STATE) == "COMPLETED" and TUID not in item

    def test_the_uid_from_the_data_set_or_assigned(self, ups: Client) -> None:
        uid = generate_uid()
        r = ups.create(workitem(**{SOP_UID: _cs(uid, "UI")}))
        assert r.status_code == 201 and r.headers["Location"].endswith(uid)
        r = ups.create(workitem())
        assert r.status_code == 201
        assigned = r.headers["Location"].rsplit("/", 1)[1]
        assert ups.get(assigned).status_code == 200

    def test_a_transaction_uid_sent_at_creation_is_dropped(self, ups: Client) -> None:
        r = ups.create(workitem(**{TUID: _cs(generate_uid(), "UI")}))
        assert r.status_code == 201 and "Warning" in r.headers
        (item,) = ups.get(r.headers["Location"].rsplit("/", 1)[1]).json()
        assert TUID not in item

    def test_a_cancel_request(self, ups: Client) -> None:
        scheduled = ups.new()
        reason = {"00741238": _cs("Patient left", "LT")}
        r = ups.cancel(scheduled, reason)
        assert r.status_code == 202, r.text
        (item,) = ups.get(scheduled).json()
        assert value(item, STATE) == "CANCELED"
        assert value(item, PROGRESS_SEQ)["00741238"]["Value"] == ["Patient left"]
        r = ups.cancel(scheduled)
        assert r.status_code == 202
        assert "already in the requested state of CANCELED" in r.headers["Warning"]

        busy = ups.new()
        tuid = generate_uid()
        assert ups.state(busy, "IN PROGRESS", tuid).status_code == 200
        assert ups.cancel(busy).status_code == 202  # the performer is told; it decides
        (item,) = ups.get(busy).json()
        assert value(item, STATE) == "IN PROGRESS"
        assert ups.state(busy, "CANCELED", tuid).status_code == 200
        r = ups.state(busy, "CANCELED", tuid)
        assert r.status_code == 200
        assert "already in the requested state of CANCELED" in r.headers["Warning"]


# -- refusals --------------------------------------------------------------------------------------


def _refused(r: requests.Response, status: int, *words: str,
             dimse: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["error"]
    for word in words:
        assert word in body["error"], body
    if dimse is not None:
        assert body["dimse_status"] == dimse, body
    return body


class TestCreateRefusals:
    @pytest.mark.parametrize(("changes", "dimse", "words"), [
        ({LABEL: None}, "0x0120", ("(0074,1204)", "missing")),
        ({LABEL: {"vr": "LO"}}, "0x0121", ("(0074,1204)", "no value")),
        ({STATE: _cs("IN PROGRESS")}, "0xC309", ("SCHEDULED",)),
        ({STATE: None}, "0x0120", ("(0074,1000)",)),
        ({PRIORITY: _cs("URGENT")}, "0x0106", ("(0074,1200)", "HIGH")),
        ({READINESS: _cs("MAYBE")}, "0x0106", ("(0040,4041)",)),
        ({"0020000D": _cs("1.2.x", "UI")}, "0x0106", ("(0020,000D)",)),
    ], ids=["label-missing", "label-empty", "not-scheduled", "state-missing", "bad-priority",
            "bad-readiness", "bad-study-uid"])
    def test_attribute_refusals_are_400_naming_the_attribute(self, ups, changes, dimse,
                                                             words) -> None:
        body = _refused(ups.create(workitem(**changes)), 400, *words, dimse=dimse)
        assert body["attributes"] or dimse == "0xC309" or dimse == "0x0106"

    def test_an_existing_uid_is_409(self, ups: Client) -> None:
        uid = ups.new()
        _refused(ups.create(workitem(), uid=uid), 409, "exists", dimse="0x0111")

    @pytest.mark.parametrize(("body", "words"), [
        ("{not json", ("not JSON",)),
        (json.dumps([workitem(), workitem()]), ("one data set",)),
        (json.dumps([["x"]]), ("DICOM JSON object",)),
        (json.dumps([{"0074100": _cs("SCHEDULED")}]), ("is not a tag",)),
        (json.dumps([{STATE: {"Value": ["SCHEDULED"]}}]), ("(0074,1000)", "vr")),
        (json.dumps([workitem(**{PATIENT: {"vr": "PN", "Value": "Doe"}})]),
         ("(0010,0010)", "array")),
        (json.dumps([workitem(**{"00420011": {"vr": "OB", "BulkDataURI": "http://x/1"}})]),
         ("(0042,0011)", "BulkDataURI")),
        ("", ("needs a payload",)),
    ], ids=["not-json", "two-datasets", "not-an-object", "bad-tag", "no-vr", "value-not-array",
            "bulkdata-uri", "empty"])
    def test_a_bad_payload_is_400(self, ups, body, words) -> None:
        _refused(ups.create(body), 400, *words)

    def test_another_media_type_is_415(self, ups: Client) -> None:
        r = ups.create(json.dumps([workitem()]), headers={"Content-Type": "application/dicom"})
        _refused(r, 415, "application/dicom+json")

    def test_an_invalid_workitem_uid_is_400(self, ups: Client) -> None:
        _refused(ups.create(workitem(), uid="1.2.x"), 400, "Workitem UID")

    def test_a_payload_over_the_limit_is_413(self, ups: Client) -> None:
        big = workitem(**{"00404026": {"vr": "OB", "InlineBinary": base64.b64encode(
            b"\0" * (7 << 20)).decode()}})
        _refused(ups.create(json.dumps([big])), 413, "limit")


class TestStateAndUpdateRefusals:
    def test_retrieve_unknown_and_malformed(self, ups: Client) -> None:
        _refused(ups.get(generate_uid()), 404, "no workitem")
        _refused(ups.get("not-a-uid"), 400, "Workitem UID")

    def test_update_refusals(self, ups: Client) -> None:
        _refused(ups.update(generate_uid(), progress(1)), 404, dimse="0xC307")
        uid = ups.new()
        r = ups.update(uid, {STATE: _cs("COMPLETED")})
        _refused(r, 409, "(0074,1000)", dimse="0xC303")
        tuid = generate_uid()
        assert ups.state(uid, "IN PROGRESS", tuid).status_code == 200
        r = ups.update(uid, progress(10))
        _refused(r, 400, "Transaction UID", dimse="0xC301")
        assert "The Transaction UID is missing." in r.headers["Warning"]
        r = ups.update(uid, progress(10), generate_uid())
        _refused(r, 400, dimse="0xC301")
        assert "The Transaction UID is incorrect." in r.headers["Warning"]
        _refused(ups.update(uid, {SOP_UID: _cs(generate_uid(), "UI")}, tuid), 400,
                 "(0008,0018)", dimse="0x0106")
        _refused(ups.update(uid, {PRIORITY: _cs("SOON")}, tuid), 400, "(0074,1200)")
        assert ups.state(uid, "CANCELED", tuid).status_code == 200
        r = ups.update(uid, progress(10), tuid)
        _refused(r, 400, "CANCELED", dimse="0xC300")  # PS3.18 11.6.2: 400, not 409
        assert "inconsistent with the current state" in r.headers["Warning"]

    def test_change_state_refusals(self, ups: Client) -> None:
        _refused(ups.state(generate_uid(), "IN PROGRESS", generate_uid()), 404, dimse="0xC307")
        uid = ups.new()
        tuid = generate_uid()
        _refused(ups.state(uid, "COMPLETED", tuid), 409, "claim it first", dimse="0xC310")
        _refused(ups.state(uid, "SCHEDULED", tuid), 409, dimse="0xC303")
        r = ups.state(uid, "IN PROGRESS", None)
        _refused(r, 400, "(0008,1195)", dimse="0xC301")
        assert "The Transaction UID is missing." in r.headers["Warning"]
        _refused(ups.state(uid, "DONE", tuid), 400, "(0074,1000)", dimse="0x0106")
        r = requests.put(f"{ups.root}/workitems/{uid}/state", timeout=30, headers=JSON,
                         data=json.dumps([{TUID: _cs(tuid, "UI")}]))
        _refused(r, 400, "(0074,1000)", dimse="0x0120")
        assert ups.state(uid, "IN PROGRESS", tuid).status_code == 200
        _refused(ups.state(uid, "IN PROGRESS", generate_uid()), 409, dimse="0xC302")
        r = ups.state(uid, "COMPLETED", generate_uid())
        _refused(r, 400, dimse="0xC301")
        assert "The Transaction UID is incorrect." in r.headers["Warning"]
        r = ups.state(uid, "COMPLETED", tuid)
        _refused(r, 409, "(0074,1216)", dimse="0xC304")  # final state requirements unmet
        assert "inconsistent" in r.headers["Warning"]
        assert ups.update(uid, completion(), tuid).status_code == 200
        assert ups.state(uid, "COMPLETED", tuid).status_code == 200
        r = ups.state(uid, "COMPLETED", tuid)
        assert r.status_code == 200
        assert "already in the requested state of COMPLETED" in r.headers["Warning"]
        _refused(ups.state(uid, "CANCELED", tuid), 409, "COMPLETED", dimse="0xC311")
        _refused(ups.cancel(uid), 409, "COMPLETED", dimse="0xC311")
        _refused(ups.cancel(generate_uid()), 404, dimse="0xC307")

    def test_methods_a_resource_does_not_serve_are_405(self, ups: Client) -> None:
        r = requests.delete(f"{ups.root}/workitems/{generate_uid()}", timeout=30)
        assert r.status_code == 405 and "POST" in r.headers["Allow"]


# -- search ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue(srv: ServerProcess) -> dict[str, str]:
    """Workitems of their own worklist (label SEARCH), by name."""
    ups = Client(srv)
    other = {"00080100": _cs("999", "SH"), "00080102": _cs("99", "SH"),
             "00080104": _cs("Other", "LO")}
    made = {
        "high": ups.new(**{WORKLIST: _cs("SEARCH", "LO"), PRIORITY: _cs("HIGH"),
                           START: _cs("20261208120000", "DT"),
                           PATIENT: {"vr": "PN", "Value": [{"Alphabetic": "Núñez^José"}]}}),
        "medium": ups.new(**{WORKLIST: _cs("SEARCH", "LO")}),
        "low": ups.new(**{WORKLIST: _cs("SEARCH", "LO"), PRIORITY: _cs("LOW"),
                          START: _cs("20261210080000", "DT"),
                          WORKITEM_CODES: {"vr": "SQ", "Value": [other]}}),
    }
    assert ups.state(made["low"], "IN PROGRESS", generate_uid()).status_code == 200
    return made


class TestSearch:
    @pytest.mark.parametrize(("params", "expected"), [
        ({}, ["high", "medium", "low"]),
        ({"ProcedureStepState": "SCHEDULED"}, ["high", "medium"]),
        ({"ProcedureStepState": "IN PROGRESS"}, ["low"]),
        ({"ScheduledProcedureStepPriority": "HIGH"}, ["high"]),
        ({"ScheduledProcedureStepPriority": "HIGH,LOW"}, ["high", "low"]),
        ({"ScheduledProcedureStepStartDateTime": "20261208-"}, ["high", "low"]),
        ({"ScheduledProcedureStepStartDateTime": "20261207-20261208235959"},
         ["high", "medium"]),
        ({"00741200": "LOW"}, ["low"]),
        ({"PatientName": "müller*"}, ["medium", "low"]),
        ({"PatientName": "jose", "fuzzymatching": "true"}, ["high"]),
        ({"PatientName": "nun jo", "fuzzymatching": "true"}, ["high"]),
        ({"ScheduledWorkitemCodeSequence.CodeValue": "110005"}, ["high", "medium"]),
        ({"ScheduledWorkitemCodeSequence.CodeValue": "999"}, ["low"]),
        ({"limit": "1"}, ["high"]),
        ({"limit": "1", "offset": "1"}, ["medium"]),
        ({"offset": "2"}, ["low"]),
        ({"PatientName": "mü", "fuzzymatching": "true", "offset": "1"}, ["low"]),
    ], ids=["all", "scheduled", "in-progress", "priority", "priority-list", "date-open-range",
            "date-range", "by-tag", "pn-wildcard", "fuzzy", "fuzzy-words", "code-sequence",
            "code-sequence-other", "limit", "limit-offset", "offset", "fuzzy-offset"])
    def test_matching(self, ups, catalogue, params, expected) -> None:
        found = ups.found(WorklistLabel="SEARCH", **params)
        assert found == [catalogue[name] for name in expected]

    def test_no_match_is_204(self, ups: Client, catalogue: dict[str, str]) -> None:
        r = ups.search(WorklistLabel="SEARCH", ScheduledProcedureStepPriority="MEDIUM",
                       ProcedureStepState="COMPLETED")
        assert r.status_code == 204 and not r.content

    def test_answers_hold_the_return_keys_and_never_the_transaction_uid(
            self, ups: Client, catalogue: dict[str, str]) -> None:
        r = ups.search(WorklistLabel="SEARCH", ProcedureStepState="IN PROGRESS")
        (item,) = r.json()
        assert TUID not in item
        for tag in (STATE, PRIORITY, LABEL, START, READINESS, PATIENT, WORKITEM_CODES):
            assert tag in item, tag
        assert "00101010" not in item and "00101020" not in item  # not UPS return keys
        (item,) = ups.search(WorklistLabel="SEARCH", ProcedureStepState="IN PROGRESS",
                             includefield="PatientAge,00101020").json()
        assert "00101010" in item and "00101020" in item  # asked for: answered (empty)
        (item,) = ups.search(WorklistLabel="SEARCH", ProcedureStepState="IN PROGRESS",
                             includefield="all").json()
        assert "00404010" in item and TUID not in item  # the modification date and time

    @pytest.mark.parametrize(("params", "words"), [
        ({"NoSuchKeyword": "1"}, ("NoSuchKeyword",)),
        ({"limit": "-1"}, ("limit",)),
        ({"fuzzymatching": "maybe"}, ("fuzzymatching",)),
        ({"TransactionUID": "1.2.3"}, ("Transaction UID",)),
        ({"ScheduledProcedureStepStartDateTime": "2026-12"}, ()),
        ({"ScheduledWorkitemCodeSequence": "x"}, ("sequence",)),
    ], ids=["unknown-key", "negative-limit", "bad-bool", "transaction-uid", "bad-date",
            "sequence-value"])
    def test_bad_parameters_are_400(self, ups, params, words) -> None:
        _refused(ups.search(**params), 400, *words)


# -- subscriptions and events ----------------------------------------------------------------------


class TestSubscriptions:
    def test_workitem_subscription_and_its_events_in_order(self, ups: Client) -> None:
        uid = ups.new()
        r = ups.subscribe(uid, "UPS_WATCH_1")
        assert r.status_code == 201, r.text
        assert r.headers["Content-Location"] == (
            ups.root.replace("http://", "ws://", 1) + "/subscribers/UPS_WATCH_1")
        with ups.channel("UPS_WATCH_1") as ws:
            (first,) = _events(ws, 1)  # the current state, at once
            assert _summary(first) == (uid, 1, "SCHEDULED")
            assert value(first, "00000002") == "1.2.840.10008.5.1.4.34.6.4"
            assert value(first, "00000110") == 1
            tuid = generate_uid()
            assert ups.state(uid, "IN PROGRESS", tuid).status_code == 200
            assert ups.update(uid, progress(40), tuid).status_code == 200
            assert ups.cancel(uid, {"00741238": _cs("Stop", "LT")}).status_code == 202
            assert ups.update(uid, completion(), tuid).status_code == 200
            assert ups.state(uid, "COMPLETED", tuid).status_code == 200
            events = _events(ws, 4)
            assert [_summary(e)[1:] for e in events] == [
                (1, "IN PROGRESS"), (3, "IN PROGRESS"), (2, None), (1, "COMPLETED")]
            assert value(events[1], PROGRESS_SEQ)["00741004"]["Value"] == [40]
            assert value(events[2], "00741238") == "Stop"
            assert [value(e, "00000110") for e in events] == [2, 3, 4, 5]
        assert ups.unsubscribe(uid, "UPS_WATCH_1").status_code == 200
        _refused(ups.unsubscribe(uid, "UPS_WATCH_1"), 404, "no subscription")

    def test_events_wait_in_the_outbox_until_the_channel_opens(self, ups: Client) -> None:
        uid = ups.new()
        assert ups.subscribe(uid, "UPS_LATER").status_code == 201
        assert ups.cancel(uid).status_code == 202  # SCHEDULED -> IN PROGRESS -> CANCELED
        with ups.channel("UPS_LATER") as ws:
            assert [_summary(e) for e in _events(ws, 3)] == [
                (uid, 1, "SCHEDULED"), (uid, 1, "IN PROGRESS"), (uid, 1, "CANCELED")]

    def test_global_subscription_and_suspend(self, ups: Client) -> None:
        before = ups.new()
        r = ups.subscribe(GLOBAL, "UPS_GLOBAL", deletionlock="true")
        assert r.status_code == 201, r.text
        with ups.channel("UPS_GLOBAL") as ws:
            # Every SCHEDULED or IN PROGRESS workitem is reported; ours among them.
            seen: list[tuple[str, int, str | None]] = []
            while (before, 1, "SCHEDULED") not in seen:
                seen += [_summary(e) for e in _events(ws, 1)]
            after = ups.new()
            assert _summary(_events(ws, 1)[0]) == (after, 1, "SCHEDULED")
            assert ups.suspend(GLOBAL, "UPS_GLOBAL").status_code == 200
            ignored = ups.new()  # not subscribed to any more
            assert ups.cancel(after).status_code == 202  # still subscribed to this one
            events = [_summary(e) for e in _events(ws, 2)]
            assert events == [(after, 1, "IN PROGRESS"), (after, 1, "CANCELED")]
            assert ignored not in {e[0] for e in events}
        _refused(ups.suspend(GLOBAL, "UPS_GLOBAL"), 404, "no worklist subscription")
        assert ups.unsubscribe(GLOBAL, "UPS_GLOBAL").status_code == 200
        _refused(ups.unsubscribe(GLOBAL, "UPS_GLOBAL"), 404)

    def test_filtered_worklist_subscription(self, ups: Client) -> None:
        r = ups.subscribe(FILTERED, "UPS_FILTERED",
                          filter="ScheduledProcedureStepPriority=HIGH,WorklistLabel=FILTERED")
        assert r.status_code == 201, r.text
        with ups.channel("UPS_FILTERED") as ws:
            low = ups.new(**{WORKLIST: _cs("FILTERED", "LO"), PRIORITY: _cs("LOW")})
            high = ups.new(**{WORKLIST: _cs("FILTERED", "LO"), PRIORITY: _cs("HIGH")})
            (event,) = _events(ws, 1)  # the LOW one, created first, never comes
            assert _summary(event) == (high, 1, "SCHEDULED") and low != high
        # Matching keys as plain query parameters (QIDO-RS syntax) work too.
        r = ups.subscribe(FILTERED, "UPS_FILTERED_2", ScheduledProcedureStepPriority="LOW",
                          WorklistLabel="FILTERED")
        assert r.status_code == 201
        with ups.channel("UPS_FILTERED_2") as ws:
            assert _summary(_events(ws, 1)[0]) == (low, 1, "SCHEDULED")
        assert ups.unsubscribe(FILTERED, "UPS_FILTERED").status_code == 200
        assert ups.unsubscribe(FILTERED, "UPS_FILTERED_2").status_code == 200

    def test_subscription_refusals(self, ups: Client) -> None:
        _refused(ups.subscribe(generate_uid(), "UPS_NOBODY"), 404, dimse="0xC307")
        uid = ups.new()
        _refused(ups.subscribe(uid, "A" * 17), 400, "AE title")
        _refused(ups.subscribe(uid, "UPS_X", ProcedureStepState="SCHEDULED"), 400, "Filtered")
        _refused(ups.subscribe(FILTERED, "UPS_X", filter="NoSuchKey=1"), 400, "filter")
        _refused(ups.suspend(uid, "UPS_X"), 400, "worklist")
        _refused(ups.unsubscribe(uid, "UPS_X"), 404)
        _refused(ups.unsubscribe(generate_uid(), "UPS_X"), 404)

    def test_a_plain_get_on_the_channel_is_426(self, ups: Client) -> None:
        r = requests.get(f"{ups.root}/subscribers/UPS_X", timeout=30)
        _refused(r, 426, "WebSocket")


# -- security: the writes are guarded as STOW-RS is -----------------------------------------------


CROSS_SITE = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}


class TestSecurity:
    def test_a_foreign_page_cannot_create_nor_change(self, ups: Client) -> None:
        r = ups.create(json.dumps([workitem()]), headers={**JSON, **CROSS_SITE})
        assert r.status_code == 403
        uid = ups.new()
        r = requests.put(f"{ups.root}/workitems/{uid}/state", timeout=30, data=state_change(
            "IN PROGRESS", generate_uid()), headers={**JSON, **CROSS_SITE})
        assert r.status_code == 403
        r = requests.post(f"{ups.root}/workitems/{uid}/cancelrequest", timeout=30,
                          headers={"Origin": EVIL, "Content-Type": "text/plain"})
        assert r.status_code == 403
        (item,) = ups.get(uid).json()
        assert value(item, STATE) == "SCHEDULED"

    def test_a_foreign_page_cannot_open_the_channel(self, ups: Client) -> None:
        with pytest.raises(InvalidStatus) as refused:
            ups.channel("UPS_EVIL", origin=EVIL)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        with ups.channel("UPS_LISTED", origin=LISTED):  # type: ignore[arg-type]
            pass

    @pytest.mark.parametrize("method", ["PUT", "DELETE"])
    def test_a_listed_origin_gets_its_preflight(self, ups, method) -> None:
        uid = ups.new()
        r = requests.options(f"{ups.root}/workitems/{uid}/state", timeout=30, headers={
            "Origin": LISTED, "Access-Control-Request-Method": method})
        assert r.status_code == 204, r.text
        assert method in r.headers["access-control-allow-methods"]
        r = requests.options(f"{ups.root}/workitems/{uid}/state", timeout=30, headers={
            "Origin": EVIL, "Access-Control-Request-Method": method})
        assert r.status_code == 403


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("upsrs-auth")
    server = ServerProcess(tmp / "data", extra_args=["--workers", "1"], env={
        "ARCHIVIST_VIEWER_DIR": str(tmp / "no-viewer"),
        "ARCHIVIST_HTTP_USERS": f"alice={hash_password(PASSWORD)}",
    })
    server.start()
    yield server
    server.stop()


def test_with_http_users_every_resource_and_the_channel_need_the_password(
        locked: ServerProcess) -> None:
    anonymous = Client(locked)
    assert anonymous.create(workitem()).status_code == 401
    assert anonymous.search().status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        anonymous.channel("UPS_AUTH")
    assert refused.value.response.status_code == 401
    alice = Client(locked, auth=("alice", PASSWORD))
    uid = alice.new()
    assert alice.subscribe(uid, "UPS_AUTH").status_code == 201
    token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    with alice.channel("UPS_AUTH", additional_headers={"Authorization": f"Basic {token}"}) as ws:
        assert _summary(_events(ws, 1)[0]) == (uid, 1, "SCHEDULED")


def test_a_channel_outlives_the_http_deadlines_and_the_stop_is_prompt(tmp_path) -> None:
    """The deadline for a request head (``http_head_timeout``, here 1 s) is the HTTP
    connection's: once upgraded, the channel stays open past it; the server's stop closes it."""
    server = ServerProcess(tmp_path / "data", extra_args=["--workers", "1"], env={
        "ARCHIVIST_VIEWER_DIR": str(tmp_path / "no-viewer"), "ARCHIVIST_HTTP_HEAD_TIMEOUT": "1"})
    server.start()
    try:
        ups = Client(server)
        uid = ups.new()
        assert ups.subscribe(uid, "UPS_STOP").status_code == 201
        with ups.channel("UPS_STOP") as ws:
            _events(ws, 1)
            with pytest.raises(TimeoutError):
                ws.recv(timeout=2.5)  # nothing to tell for 2.5 s: the channel stays open
            assert ups.cancel(uid).status_code == 202
            assert [_summary(e)[2] for e in _events(ws, 2)] == ["IN PROGRESS", "CANCELED"]
            assert server.stop(timeout=30) == 0
    finally:
        server.kill()
