"""``POST /api/studies/{study}/send?to=AET`` on a real ``archivist serve`` (two workers): the job
is queued, a worker sends it to a DCMTK ``storescp``, and ``/api/send-jobs/{job}`` says how it
ended; the study page offers the configured peers."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess, free_port

STORESCP = "/usr/bin/storescp"
pytestmark = pytest.mark.skipif(not os.path.exists(STORESCP), reason="DCMTK storescp needed")
STUDY, SERIES, OTHER_SERIES = new_uid(), new_uid(), new_uid()


def _call(url: str, method: str = "GET", body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            text = resp.read().decode()
            status = resp.status
    except urllib.error.HTTPError as err:
        text, status = err.read().decode(), err.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("sendjobs")
    port = free_port()
    out = tmp / "received"
    out.mkdir()
    receiver = subprocess.Popen([STORESCP, "-aet", "STORESCP", "-od", str(out), str(port)],
                                env={**os.environ, "TCP_NODELAY": "1"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_PEERS": f"STORESCP=127.0.0.1:{port}",
                                           "ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    parts = []
    for n, series in enumerate((SERIES, SERIES, OTHER_SERIES)):
        path = tmp / f"{n}.dcm"
        make_instance(path, study_uid=STUDY, series_uid=series, instance_number=n + 1)
        parts.append(b"--B\r\nContent-Type: application/dicom\r\n\r\n" + path.read_bytes()
                     + b"\r\n")
    status, _ = _call(f"{srv.url}/dicomweb/studies", "POST", b"".join(parts) + b"--B--\r\n",
                      {"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'})
    assert status == 200
    yield {"srv": srv, "out": out}
    srv.stop()
    receiver.terminate()


def _finished(srv: ServerProcess, status_url: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        _, job = _call(srv.url + status_url)
        assert isinstance(job, dict)
        if job["state"] == "done" or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def test_a_series_is_sent_by_a_worker(setup: dict) -> None:
    srv, out = setup["srv"], setup["out"]
    status, body = _call(f"{srv.url}/api/studies/{STUDY}/series/{SERIES}/send?to=STORESCP",
                         "POST")
    assert status == 202 and isinstance(body, dict), body
    assert body["instances"] == 2
    job = _finished(srv, body["status"])
    assert job["state"] == "done", job
    assert (job["sent"], job["total"], job["failed"]) == (2, 2, [])
    assert len(list(out.iterdir())) == 2


def test_refusals(setup: dict) -> None:
    srv = setup["srv"]
    status, body = _call(f"{srv.url}/api/studies/{STUDY}/send?to=NOBODY", "POST")
    assert status == 400 and "STORESCP" in body["detail"]
    status, _ = _call(f"{srv.url}/api/studies/{new_uid()}/send?to=STORESCP", "POST")
    assert status == 404
    status, _ = _call(f"{srv.url}/api/studies/1.x/send?to=STORESCP", "POST")
    assert status == 400
    assert _call(f"{srv.url}/api/send-jobs/../../etc")[0] == 404
    assert _call(f"{srv.url}/api/send-jobs/123-4-5")[0] == 404
    # A web page on another origin cannot make the browser send (cross-site request forgery).
    status, _ = _call(f"{srv.url}/api/studies/{STUDY}/send?to=STORESCP", "POST",
                      headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert status == 403


def test_study_page_offers_the_peers(setup: dict) -> None:
    status, page = _call(f"{setup['srv'].url}/archive/studies/{STUDY}")
    assert status == 200 and isinstance(page, str)
    assert f'data-url="/api/studies/{STUDY}/send"' in page
    assert '<option value="STORESCP">' in page
