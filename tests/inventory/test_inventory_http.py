# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""Admin HTTP API for inventories on a real ``archivist serve``: create (a job), status, list,
download as JSON, CSV and DICOM, and readable errors."""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pydicom
from inventory_helpers import fill, make_server, open_archive  # noqa: F401


def _call(url: str, method: str = "GET", body: Any = None) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_create_status_list_download(open_archive, make_server, tmp_path: Path) -> None:
    data = tmp_path / "srv"
    archive = open_archive(data)
    made = fill(archive, tmp_path / "in", studies=3, series=2, instances=2, modality="MR")
    fill(archive, tmp_path / "ct", studies=2, modality="CT", patient_prefix="C")
    archive.close()
    srv = make_server(data=data)
    base = f"{srv.url}/api/inventories"

    status, headers, body = _call(base, "POST", {"level": "instance",
                                                 "scope": {"ModalitiesInStudy": "MR"},
                                                 "purpose": "audit"})
    assert status == 202, body
    job = json.loads(body)
    assert headers["location"] == job["status_url"] and job["state"] == "PROCESSING"
    deadline = time.monotonic() + 30
    while job["state"] != "COMPLETE":
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = json.loads(_call(srv.url + job["status_url"])[2])
    assert job["studies_total"] == 3 and job["studies_done"] == 3 and job["root"]

    status, _, body = _call(base)
    listed = json.loads(body)
    assert status == 200 and [i["SOPInstanceUID"] for i in listed] == [job["root"]]
    assert listed[0]["InventoryPurpose"] == "audit" and listed[0]["TotalNumberOfStudyRecords"] == 3
    jobs = json.loads(_call(base + "/jobs")[2])
    assert [j["transaction_uid"] for j in jobs] == [job["transaction_uid"]]

    status, _, body = _call(srv.url + job["download_url"])
    inv = json.loads(body)
    uids = {i["SOPInstanceUID"] for st in inv["studies"] for se in st["series"]
            for i in se["instances"]}
    assert uids == {m["sop"] for m in made}
    status, headers, body = _call(srv.url + job["download_url"] + "?format=csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert len(list(csv.DictReader(io.StringIO(body.decode())))) == 12
    status, headers, body = _call(srv.url + job["download_url"] + "?format=dicom")
    assert status == 200 and headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(body))
    assert ds.SOPInstanceUID == job["root"] and ds.TransactionUID == job["transaction_uid"]

    # Errors a person can read.
    for url, method, payload, code in (
        (base, "POST", {"scope": {"NotAKeyword": "x"}}, 400),
        (base, "POST", {"level": "patient"}, 400),
        (base, "POST", {"scope": ["Modality", "CT"]}, 400),
        (base + "/jobs/1.2.3", "GET", None, 404),
        (base + "/jobs/not-a-uid", "GET", None, 400),
        (base + "/jobs/" + job["transaction_uid"] + "/pause", "POST", None, 409),
        (base + "/1.2.3.4", "GET", None, 404),
        (srv.url + job["download_url"] + "?format=xml", "GET", None, 400),
    ):
        status, _, body = _call(url, method, payload)
        assert status == code, (url, body)
        assert json.loads(body)["error"]
