"""Web security of the HTTP side against a real ``archivist serve`` (found by QA, websec).

A web page the clinician's browser opens, on any origin, must not write to the archive:
neither with a "simple" request that needs no CORS preflight (``text/plain`` or
``multipart/form-data``, which a form or ``fetch`` sends straight away) nor through a preflight
that ``cors_origins = *`` used to grant for POST, PUT and DELETE (the default ``*`` is for reads).
The page's own requests (same origin), origins named in ``cors_origins``, and clients that are
not browsers (no ``Origin``, no ``Sec-Fetch-Site``) are answered as before.

A server on loopback answers only Host names that cannot be re-bound by a DNS answer (IP
addresses, ``localhost``) and those named in ``http_hosts``: otherwise a page whose name
re-binds to 127.0.0.1 is same-origin with the archive and reads everything.

Every answer carries ``X-Content-Type-Options: nosniff``: a DICOM or JSON body holding a patient
name such as ``<script>`` must never be sniffed as HTML.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

EVIL = "http://evil.example"
LISTED = "http://viewer.example"
CROSS_SITE = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("websec")
    server = ServerProcess(tmp / "data", extra_args=["--workers", "1"], env={
        "ARCHIVIST_VIEWER_DIR": str(tmp / "no-viewer"),
        "ARCHIVIST_CORS_ORIGINS": f"*,{LISTED}",
        "ARCHIVIST_HTTP_HOSTS": "pacs.example",
    })
    server.start()
    yield server
    server.stop()


def _stow_body(tmp: Path, patient: str) -> tuple[bytes, str, str]:
    ds = make_instance(tmp / f"{new_uid()}.dcm", patient_name=patient)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    body = (b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + buf.getvalue()
            + b"\r\n--XX--\r\n")
    return body, 'multipart/related; type="application/dicom"; boundary=XX', str(ds.SOPInstanceUID)


def _stored(srv: ServerProcess, sop: str) -> bool:
    r = requests.get(f"{srv.url}/dicomweb/instances", params={"SOPInstanceUID": sop}, timeout=30)
    return r.status_code == 200 and len(r.json()) == 1


def _jobs(srv: ServerProcess) -> int:
    return len(requests.get(f"{srv.url}/api/inventories/jobs", timeout=30).json())


# -- cross-site request forgery ------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    CROSS_SITE,
    {"Origin": EVIL},  # a browser that sends no Sec-Fetch-Site: the Origin is not this server
    {"Origin": "null"},  # a sandboxed frame or a file:// page
    {"Origin": EVIL, "Sec-Fetch-Site": "same-site"},  # another port of the same host
])
def test_foreign_page_cannot_start_an_inventory_with_a_simple_post(srv, headers) -> None:
    before = _jobs(srv)
    r = requests.post(f"{srv.url}/api/inventories", data='{"level": "study"}', timeout=30,
                      headers={**headers, "Content-Type": "text/plain"})
    assert r.status_code == 403, r.text
    assert "cors_origins" in r.json()["error"]
    assert _jobs(srv) == before


def test_foreign_page_cannot_act_on_jobs_or_delete(srv) -> None:
    r = requests.post(f"{srv.url}/api/inventories/jobs/1.2.3/cancel", headers=CROSS_SITE,
                      timeout=30)
    assert r.status_code == 403
    r = requests.delete(f"{srv.url}/api/studies/1.2.3", headers=CROSS_SITE, timeout=30)
    assert r.status_code == 403


def test_foreign_page_gets_no_stow_preflight_and_cannot_store(srv, tmp_path) -> None:
    r = requests.options(f"{srv.url}/dicomweb/studies", timeout=30, headers={
        "Origin": EVIL, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers
    body, ctype, sop = _stow_body(tmp_path, "INJECTED^BY^PAGE")
    r = requests.post(f"{srv.url}/dicomweb/studies", data=body, timeout=30,
                      headers={**CROSS_SITE, "Content-Type": ctype})
    assert r.status_code == 403
    assert not _stored(srv, sop)


def test_reads_stay_open_to_any_origin(srv) -> None:
    """``cors_origins = *`` is for reads (issue 6): a preflight for GET is still granted."""
    r = requests.options(f"{srv.url}/dicomweb/studies", timeout=30, headers={
        "Origin": EVIL, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "accept"})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
    r = requests.get(f"{srv.url}/dicomweb/studies", headers=CROSS_SITE, timeout=30)
    assert r.status_code in (200, 204)
    assert r.headers["access-control-allow-origin"] == "*"


def test_a_listed_origin_may_store(srv, tmp_path) -> None:
    r = requests.options(f"{srv.url}/dicomweb/studies", timeout=30, headers={
        "Origin": LISTED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] in ("*", LISTED)
    body, ctype, sop = _stow_body(tmp_path, "LISTED^ORIGIN")
    r = requests.post(f"{srv.url}/dicomweb/studies", data=body, timeout=30, headers={
        "Origin": LISTED, "Sec-Fetch-Site": "cross-site", "Content-Type": ctype})
    assert r.status_code == 200, r.text
    assert _stored(srv, sop)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_no_preflight_for_methods_no_dicomweb_resource_serves(srv, method) -> None:
    r = requests.options(f"{srv.url}/dicomweb/studies", timeout=30, headers={
        "Origin": LISTED, "Access-Control-Request-Method": method})
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "same-origin"},  # the archive page's upload
    {},  # filled in below: Origin equal to the Host, no Sec-Fetch-Site
    {"Sec-Fetch-Site": "none"},  # typed by the user
])
def test_the_archive_page_and_other_clients_still_store(srv, tmp_path, headers) -> None:
    headers = dict(headers) or {"Origin": srv.url}
    if "Sec-Fetch-Site" in headers:
        headers["Origin"] = srv.url
    body, ctype, sop = _stow_body(tmp_path, "SAME^ORIGIN")
    r = requests.post(f"{srv.url}/dicomweb/studies", data=body, timeout=30,
                      headers={**headers, "Content-Type": ctype})
    assert r.status_code == 200, r.text
    assert _stored(srv, sop)


# -- DNS rebinding -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io",
                                  "attacker.localhost.example",
                                  "pacs.example.evil.example"])
def test_a_name_that_could_rebind_to_loopback_is_refused(srv, host) -> None:
    host = host.format(port=srv.http_port)
    for path in ("/dicomweb/studies", "/api/stats", "/archive/"):
        r = requests.get(f"{srv.url}{path}", headers={"Host": host}, timeout=30)
        assert r.status_code == 403, (path, r.status_code)
        assert "http_hosts" in r.json()["error"]
    assert requests.get(f"{srv.url}/healthz", headers={"Host": host},
                        timeout=30).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST",
                                  "[::1]:{port}", "archive.localhost:{port}", "10.0.0.7:{port}",
                                  "pacs.example", "PACS.Example.:{port}", "x", "pacs:{port}"])
def test_addresses_localhost_and_configured_names_are_answered(srv, host) -> None:
    r = requests.get(f"{srv.url}/api/stats", headers={"Host": host.format(port=srv.http_port)},
                     timeout=30)
    assert r.status_code == 200, r.text


def test_two_host_headers_are_a_bad_request(srv) -> None:
    raw = (f"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1:{srv.http_port}\r\n"
           "Host: evil.example\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=30) as s:
        s.sendall(raw)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


# -- content sniffing ----------------------------------------------------------------------------


def test_every_answer_says_nosniff(srv, tmp_path) -> None:
    body, ctype, _sop = _stow_body(tmp_path, "<script>alert(1)</script>")
    stored = requests.post(f"{srv.url}/dicomweb/studies", data=body, timeout=30,
                           headers={"Content-Type": ctype})
    study = stored.json()["00081199"]["Value"][0]["00081190"]["Value"][0].split("/studies/")[1]
    study = study.split("/")[0]
    urls = [
        "/api/stats", "/api/instances/1.2.3/validation", "/api/%3Cscript%3E",
        f"/dicomweb/studies?StudyInstanceUID={study}",
        f"/dicomweb/studies/{study}/metadata",
        f"/dicomweb/studies/{study}",
        "/dicomweb/studies/%3Cscript%3E",
        "/wado?requestType=WADO&studyUID=%3Cscript%3E&seriesUID=1&objectUID=1",
        "/archive/", "/archive/static/archive.js", "/",
    ]
    for url in urls:
        r = requests.get(f"{srv.url}{url}", timeout=30)
        assert r.headers.get("x-content-type-options") == "nosniff", (url, r.status_code)
    assert stored.headers.get("x-content-type-options") == "nosniff"


def test_our_own_html_pages_carry_a_content_security_policy(srv) -> None:
    for url in ("/", "/archive/", "/archive/studies/1.2.3"):
        r = requests.get(f"{srv.url}{url}", timeout=30)
        assert r.headers["content-type"].startswith("text/html"), url
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'unsafe-inline'" not in csp, url


def test_a_study_page_path_with_a_line_feed_is_not_a_uid(srv) -> None:
    r = requests.get(f"{srv.url}/archive/studies/1.2.3%0A", timeout=30)
    assert r.status_code == 404 and "That is not a Study Instance UID" in r.text
