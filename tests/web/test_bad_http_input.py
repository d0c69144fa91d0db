"""Bad HTTP input on every route family of a real ``archivist serve``: a 4xx a person can read.

QIDO-RS, WADO-RS, STOW-RS, WADO-URI and the admin API get malformed UIDs, huge or negative
limit/offset, bad dates, unknown keys, bad Accept headers, broken multipart bodies, wrong media
types, bodies over the cap, path traversal and non-ASCII text. Each answer is a 4xx with a JSON
body naming the problem, or a correct answer (an empty match, the resource ignoring a bad Range);
never a 500, and the server answers the next request.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from archivist.testing.datasets import pydicom_test_file
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(180)

BOUNDARY = "bad-input-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _multipart(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p
                    + b"\r\n" for p in parts)
    return body + f"--{boundary}--\r\n".encode()


class Served:
    def __init__(self, srv: ServerProcess, ct: Path) -> None:
        self.srv = srv
        ds = pydicom.dcmread(ct, stop_before_pixels=True)
        self.study, self.series, self.sop = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                             str(ds.SOPInstanceUID))
        self.ct = ct.read_bytes()

    @property
    def instance(self) -> str:
        return f"/dicomweb/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    @property
    def wado(self) -> str:
        return (f"/wado?requestType=WADO&studyUID={self.study}&seriesUID={self.series}"
                f"&objectUID={self.sop}")

    def request(self, method: str, path: str, **kw: object) -> requests.Response:
        r = requests.request(method, self.srv.url + path, timeout=30, **kw)  # type: ignore[arg-type]
        assert r.status_code < 500, f"{method} {path}: {r.status_code} {r.text[:300]}"
        return r


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ct = pydicom_test_file("CT_small.dcm")
    assert ct is not None
    srv = ServerProcess(tmp_path_factory.mktemp("badhttp") / "data",
                        env={"ARCHIVIST_HTTP_MAX_BODY": str(4 * 1024 * 1024)})
    srv.start()
    s = Served(srv, Path(ct))
    r = s.request("POST", "/dicomweb/studies", data=_multipart(s.ct),
                  headers={"Content-Type": STOW_TYPE})
    assert r.status_code == 200, r.text
    try:
        yield s
    finally:
        log = srv.log()
        srv.stop()
        bad = [line for line in log.splitlines()
               if " ERROR archivist" in line or "Exception in ASGI application" in line]
        assert not bad, bad[:5]


def _refused(r: requests.Response, *statuses: int) -> str:
    """A 4xx (one of `statuses` when given) whose JSON body says what is wrong."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if statuses:
        assert r.status_code in statuses, (r.status_code, r.text[:300])
    body = r.json()
    text = body.get("error") or body.get("detail") or ""
    if "detail" in body:
        text = f"{body.get('error')}: {body['detail']}"
    assert isinstance(text, str) and len(text) > 5, body
    return text


BAD_UIDS = ["abc", "1.2.3.", "1..2", "01.2", "1.2.3" + ".4" * 40, "1.2.3%00", "%C3%BC",
            "1.2.3'--", "%2e%2e", "*"]


class TestMalformedUIDs:
    @pytest.mark.parametrize("uid", BAD_UIDS)
    def test_wado_rs_paths(self, served: Served, uid: str) -> None:
        for path in (f"/dicomweb/studies/{uid}", f"/dicomweb/studies/{uid}/metadata",
                     f"/dicomweb/studies/{served.study}/series/{uid}",
                     (f"/dicomweb/studies/{served.study}/series/{served.series}/instances/{uid}"
                      "/frames/1"),
                     f"/dicomweb/studies/{uid}/rendered", f"/dicomweb/studies/{uid}/thumbnail"):
            _refused(served.request("GET", path), 400, 404)

    @pytest.mark.parametrize("uid", BAD_UIDS)
    def test_qido_scope_wado_uri_and_api(self, served: Served, uid: str) -> None:
        r = served.request("GET", f"/dicomweb/studies/{uid}/series")
        assert r.status_code in (200, 400, 404), r.text[:200]
        if r.status_code == 200:
            assert r.json() == []
        else:
            _refused(r)
        _refused(served.request(
            "GET", f"/wado?requestType=WADO&studyUID={uid}&seriesUID={uid}&objectUID={uid}"),
            400, 404)
        _refused(served.request("GET", f"/api/instances/{uid}/validation"), 400, 404)
        _refused(served.request("DELETE", f"/api/studies/{uid}"), 400, 404)
        r = served.request("GET", f"/dicomweb/studies?StudyInstanceUID={uid}")
        if uid != "*":  # a lone "*" is universal matching (PS3.4 C.2.2.2.3)
            assert r.status_code == 400 or r.json() == [], r.text[:200]

    def test_stow_to_a_study_that_is_no_uid(self, served: Served) -> None:
        r = served.request("POST", "/dicomweb/studies/abc", data=_multipart(served.ct),
                           headers={"Content-Type": STOW_TYPE})
        assert "not a valid UID" in _refused(r, 400)


class TestQueryParameters:
    @pytest.mark.parametrize("query", [
        "limit=-1", "limit=abc", "offset=-5", "offset=1e9", "limit=" + "9" * 5000,
        "includefield=NotAKeyword", "includefield=all&includefield=foo", "0010001=x",
        "PatientName.x=1", "UnknownKeyword=1",
    ])
    def test_refused_with_a_reason(self, served: Served, query: str) -> None:
        for level in ("studies", "series", "instances"):
            _refused(served.request("GET", f"/dicomweb/{level}?{query}"), 400)

    @pytest.mark.parametrize("query", [
        "limit=99999999999999999999999", "offset=99999999999999999999999999",
        "offset=9223372036854775808", "StudyDate=20241399", "StudyDate=2024-01-01",
        "StudyDate=20240101-20230101", "StudyTime=25", "PatientName=%C3%BC%C3%B1%C3%AF",
        "PatientName=%FF%FE", "PatientName=%E6%97%A5%E6%9C%AC*", "AccessionNumber=" + "A" * 5000,
        "SOPClassesInStudy=garbage", "fuzzymatching=maybe",
    ])
    def test_answered_or_refused_never_500(self, served: Served, query: str) -> None:
        for level in ("studies", "instances"):
            r = served.request("GET", f"/dicomweb/{level}?{query}")
            if r.status_code == 200:
                assert isinstance(r.json(), list)
            else:
                _refused(r, 400)

    def test_huge_offset_is_past_the_end(self, served: Served) -> None:
        r = served.request("GET", "/dicomweb/studies?offset=99999999999999999999999999")
        assert r.status_code == 200 and r.json() == []


class TestAcceptHeaders:
    @pytest.mark.parametrize("accept", [
        "text/html", "application/xml", "garbage", ";;;,,,", "a/b; c",
        'multipart/related; type="application/dicom"; transfer-syntax=9.9.9',
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
    ])
    def test_unservable_accept_is_406(self, served: Served, accept: str) -> None:
        headers = {"Accept": accept}
        _refused(served.request("GET", "/dicomweb/studies", headers=headers), 406)
        _refused(served.request("GET", served.instance, headers=headers), 406)
        _refused(served.request("GET", served.instance + "/metadata", headers=headers), 406)

    def test_bad_accept_on_pixels_is_4xx_or_an_answer(self, served: Served) -> None:
        for accept in ("text/html", "garbage", "*/*; q=abc", 'multipart/related; type="x/y"'):
            for suffix in ("/frames/1", "/rendered", "/thumbnail"):
                r = served.request("GET", served.instance + suffix, headers={"Accept": accept})
                if r.status_code != 200:
                    _refused(r, 400, 406)


class TestWadoParameters:
    @pytest.mark.parametrize("frames", ["0", "-1", "abc", "1,,2", "1-3", "9" * 30, "2"])
    def test_bad_frame_lists(self, served: Served, frames: str) -> None:
        _refused(served.request("GET", served.instance + f"/frames/{frames}"), 400, 404)

    @pytest.mark.parametrize("query", [
        "viewport=0,0", "viewport=abc", "viewport=99999,99999", "window=a,b", "window=1,0",
        "window=1,1,bogus", "quality=abc",
    ])
    def test_bad_render_parameters(self, served: Served, query: str) -> None:
        for suffix in ("/rendered", "/thumbnail"):
            _refused(served.request("GET", served.instance + f"{suffix}?{query}"), 400)

    @pytest.mark.parametrize("tag_path", ["ZZZZ", "00081032/abc/00080100",
                                          "00081032/99/00080100", "..%2F..%2Fetc%2Fpasswd"])
    def test_bad_bulkdata_paths(self, served: Served, tag_path: str) -> None:
        _refused(served.request("GET", served.instance + f"/bulkdata/{tag_path}"), 400, 404)

    def test_unsatisfiable_range_is_416(self, served: Served) -> None:
        r = served.request("GET", served.instance + "/bulkdata/7FE00010",
                           headers={"Range": "bytes=99999999-"})
        assert r.status_code == 416, r.status_code

    @pytest.mark.parametrize("query", [
        "", "requestType=XYZ", "requestType=WADO&studyUID=1.2.3", "&contentType=text/html",
        "&frameNumber=abc", "&frameNumber=0", "&frameNumber=99", "&rows=abc",
        "&windowCenter=a&windowWidth=b", "&imageQuality=abc",
        "&contentType=application/dicom&transferSyntax=9.9",
        "&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.4.50",
    ])
    def test_wado_uri(self, served: Served, query: str) -> None:
        path = served.wado + query if query.startswith("&") else f"/wado?{query}"
        _refused(served.request("GET", path), 400, 404, 406)


class TestStow:
    @pytest.mark.parametrize("ctype,body,status", [
        ('multipart/related; type="application/dicom"', b"x", 400),  # no boundary
        ('multipart/related; type="application/dicom"; boundary=', b"x", 400),
        ('multipart/related; type="application/dicom"; boundary=' + "x" * 500, b"x", 400),
        ("application/json", b"{}", 415),
        ("text/plain", b"x", 415),
        ("multipart/form-data; boundary=" + BOUNDARY, b"x", 415),
        ('multipart/related; type="application/dicom+json"; boundary=' + BOUNDARY, b"x", 415),
        (STOW_TYPE, b"", 400),  # no parts
        (STOW_TYPE, b"--" + BOUNDARY.encode() + b"\r\nNoEndOfHeaders", 400),
    ])
    def test_malformed_requests(self, served: Served, ctype: str, body: bytes,
                                status: int) -> None:
        r = served.request("POST", "/dicomweb/studies", data=body,
                           headers={"Content-Type": ctype})
        _refused(r, status)

    def test_truncated_multipart_keeps_nothing_half_stored(self, served: Served) -> None:
        whole = _multipart(served.ct)
        for cut in (whole[:5000], whole[:-10]):
            r = served.request("POST", "/dicomweb/studies", data=cut,
                               headers={"Content-Type": STOW_TYPE})
            assert r.status_code in (400, 409), r.text[:200]
            if r.status_code == 409:
                failed = r.json()["00081198"]["Value"][0]
                assert failed["00000902"]["Value"][0]
            else:
                _refused(r)

    def test_parts_that_are_not_dicom(self, served: Served) -> None:
        r = served.request("POST", "/dicomweb/studies",
                           data=_multipart(b"garbage", served.ct[:1000]),
                           headers={"Content-Type": STOW_TYPE})
        assert r.status_code == 409, r.text[:200]
        reasons = [item["00000902"]["Value"][0] for item in r.json()["00081198"]["Value"]]
        assert len(reasons) == 2 and all(reasons)

    def test_declared_body_over_the_cap_is_413_before_it_is_read(self, served: Served) -> None:
        with socket.create_connection(("127.0.0.1", served.srv.http_port), timeout=10) as s:
            s.sendall(b"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: " + STOW_TYPE.encode() + b"\r\n"
                      b"Content-Length: 99999999999999\r\n\r\n")
            reply = s.recv(4096).decode("latin-1")
        assert reply.startswith("HTTP/1.1 413"), reply[:200]

    def test_body_growing_past_the_cap_is_413(self, served: Served) -> None:
        def chunks() -> Iterator[bytes]:
            yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            for _ in range(6):
                yield b"\0" * (1024 * 1024)

        r = served.request("POST", "/dicomweb/studies", data=chunks(),
                           headers={"Content-Type": STOW_TYPE})
        _refused(r, 413)


class TestAdminAndPaths:
    @pytest.mark.parametrize("body", [b"{bad json", b'{"level": "bogus"}', b"[1,2]"])
    def test_inventory_job_with_a_bad_body(self, served: Served, body: bytes) -> None:
        _refused(served.request("POST", "/api/inventories", data=body,
                                headers={"Content-Type": "application/json"}), 400)

    def test_inventory_ids_that_are_no_uid(self, served: Served) -> None:
        _refused(served.request("POST", "/api/inventories/jobs/abc/cancel"), 400, 404)
        _refused(served.request("GET", "/api/inventories/jobs/abc"), 400, 404)
        _refused(served.request("GET", "/api/inventories/abc?format=xml"), 400, 404)

    @pytest.mark.parametrize("path", [
        "/archive/static/..%2F..%2Fetc%2Fpasswd", "/..%2F..%2Fetc%2Fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd", "/assets/..%2f..%2f..%2fetc%2fpasswd",
        "/api/inventories/..%2F..%2Fetc?format=json", "/archive/studies/..%2F..%2Fetc",
    ])
    def test_traversal_reaches_no_file(self, served: Served, path: str) -> None:
        # raw request: a client would normalise the dots away
        with socket.create_connection(("127.0.0.1", served.srv.http_port), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        status = int(reply.split(b" ", 2)[1])
        assert status < 500 and b"root:" not in reply, reply[:300]

    @pytest.mark.parametrize("method,path", [
        ("DELETE", "/dicomweb/studies"), ("PUT", "/dicomweb/studies/1.2.3"),
        ("POST", "/dicomweb/studies/1.2.3/series/1.2.3.4/metadata"), ("POST", "/healthz"),
        ("PATCH", "/wado"),
    ])
    def test_a_method_not_allowed_is_a_json_405(self, served: Served, method: str,
                                                path: str) -> None:
        r = served.request(method, path)
        _refused(r, 405)
        assert r.headers.get("Allow"), r.headers

    def test_server_still_answers(self, served: Served) -> None:
        assert served.srv.healthy()
        r = served.request("GET", f"/dicomweb/studies?StudyInstanceUID={served.study}")
        assert len(r.json()) == 1


def test_a_long_failure_reason_is_cut_between_words() -> None:
    from archivist.web.dicomweb.stow import _comment

    text = "the object ends inside an element header (byte 396 of 400): it was cut short"
    cut = _comment(text)
    assert len(cut) <= 64 and cut.endswith("\u2026")
    assert "byte 396 of" not in cut or "400" in cut  # never a number cut in two
    assert _comment("short reason") == "short reason"
