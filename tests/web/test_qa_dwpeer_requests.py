"""What DICOMweb clients other than dicomweb-client send, against a real ``archivist serve``.

Orthanc's DICOMweb plugin (STOW-RS chunked, with a Content-Length per part and a long boundary),
OHIF and scripts: QIDO-RS ``limit=0`` (a uint, PS3.18 Table 8.3.4-1: no results), a private
tag among keyword and tag includefields (PS3.18 10.6.3.3: returned when supported, else left
out, not a 400), ``Accept-Encoding`` with q-values and any case (RFC 9110 12.5.3), and STOW-RS
bodies sent ``Content-Encoding: gzip`` or ``deflate`` (decoded; other codings 415), study-scoped
STOW-RS of another study's instance (refused alone, 0xC409) and JSON + bulk data (415).
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(120)

MAX_BODY = 4 * 1024 * 1024
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary={}'


def _multipart(parts: list[bytes], boundary: str = "XX", part_length: bool = False) -> bytes:
    out = b""
    for part in parts:
        length = f"Content-Length: {len(part)}\r\n" if part_length else ""
        out += (f"--{boundary}\r\nContent-Type: application/dicom\r\n{length}\r\n".encode()
                + part + b"\r\n")
    return out + f"--{boundary}--\r\n".encode()


class Archive:
    def __init__(self, srv: ServerProcess, tmp: Path) -> None:
        self.srv = srv
        self.tmp = tmp
        self.base = srv.url + "/dicomweb"

    def instance(self, **kw: Any) -> tuple[pydicom.Dataset, bytes]:
        path = self.tmp / f"{new_uid()}.dcm"
        ds = make_instance(path, **kw)
        return ds, path.read_bytes()

    def get(self, path: str, **kw: Any) -> requests.Response:
        r = requests.get(self.base + path, timeout=30, **kw)
        assert r.status_code < 500, r.text[:300]
        return r

    def stow(self, body: bytes | Iterator[bytes], study: str = "", boundary: str = "XX",
             headers: dict[str, str] | None = None) -> requests.Response:
        h = {"Content-Type": STOW_TYPE.format(boundary), "Accept": "application/dicom+json"}
        h.update(headers or {})
        r = requests.post(self.base + "/studies" + (f"/{study}" if study else ""), data=body,
                          headers=h, timeout=60)
        assert r.status_code < 500, r.text[:300]
        return r

    def stored(self, ds: pydicom.Dataset) -> bytes:
        r = self.get(f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                     f"/instances/{ds.SOPInstanceUID}",
                     headers={"Accept": "application/dicom; transfer-syntax=*"})
        assert r.status_code == 200, r.text[:300]
        return r.content


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    tmp = tmp_path_factory.mktemp("dwpeer")
    srv = ServerProcess(tmp / "data", extra_args=["--workers", "1"],
                        env={"ARCHIVIST_HTTP_MAX_BODY": str(MAX_BODY)})
    srv.start()
    a = Archive(srv, tmp)
    parts = [a.instance(patient_name=f"PEER^{i}", patient_id="DWPEER")[1] for i in range(3)]
    assert a.stow(_multipart(parts)).status_code == 200
    try:
        yield a
    finally:
        log = srv.log()
        srv.stop()
        bad = [line for line in log.splitlines()
               if " ERROR archivist" in line or "Exception in ASGI application" in line]
        assert not bad, bad[:5]


def _sop_uids(response: requests.Response, sequence: str = "00081199") -> list[str]:
    return [item["00081155"]["Value"][0]
            for item in response.json().get(sequence, {}).get("Value", [])]


def _failure_reasons(response: requests.Response) -> list[int]:
    return [item["00081197"]["Value"][0]
            for item in response.json().get("00081198", {}).get("Value", [])]


class TestQidoParameters:
    @pytest.mark.parametrize("level", ["studies", "series", "instances"])
    def test_limit_zero_returns_no_results(self, archive: Archive, level: str) -> None:
        assert len(archive.get(f"/{level}?PatientID=DWPEER").json()) >= 1
        r = archive.get(f"/{level}?PatientID=DWPEER&limit=0")
        assert r.status_code == 200 and r.json() == []
        assert "Warning" not in r.headers

    def test_limit_zero_still_checks_the_query(self, archive: Archive) -> None:
        assert archive.get("/studies?limit=0&NoSuchKeyword=1").status_code == 400

    def test_private_tag_in_includefield_is_left_out(self, archive: Archive) -> None:
        r = archive.get("/instances?PatientID=DWPEER&includefield=00091001,PatientAge"
                        "&includefield=0020000E,00431029&limit=1")
        assert r.status_code == 200, r.text
        [item] = r.json()
        assert "00091001" not in item and "00431029" not in item
        assert "0020000E" in item
        # an unknown keyword, or a tag of a standard group that is no attribute, stays a 400
        assert archive.get("/instances?includefield=NotAKeyword").status_code == 400
        assert archive.get("/instances?includefield=0010FFFE").status_code == 400


@pytest.fixture(scope="module")
def url(archive: Archive) -> str:
    """A series metadata resource."""
    item = archive.get("/series?PatientID=DWPEER&limit=1").json()[0]
    return (f"/studies/{item['0020000D']['Value'][0]}/series/"
            f"{item['0020000E']['Value'][0]}/metadata")


class TestMetadataContentCoding:
    def _get(self, archive: Archive, url: str, accept_encoding: str) -> requests.Response:
        # raw: requests would inflate it, hiding what was sent
        r = requests.get(archive.base + url, headers={"Accept-Encoding": accept_encoding},
                         timeout=30, stream=True)
        r.raw.decode_content = False
        r._content = r.raw.read()  # the bytes as sent
        return r

    @pytest.mark.parametrize("accept_encoding", ["gzip;q=0, identity", "identity", "br",
                                                 "*, gzip;q=0"])
    def test_gzip_refused_is_not_sent(self, archive: Archive, url: str,
                                      accept_encoding: str) -> None:
        r = self._get(archive, url, accept_encoding)
        assert r.status_code == 200
        assert "Content-Encoding" not in r.headers
        assert r.content.startswith(b"[")

    @pytest.mark.parametrize("accept_encoding", ["gzip", "GZIP", "deflate, gzip;q=0.5", "*"])
    def test_gzip_accepted_is_sent(self, archive: Archive, url: str,
                                   accept_encoding: str) -> None:
        plain = self._get(archive, url, "identity").content
        r = self._get(archive, url, accept_encoding)
        assert r.headers.get("Content-Encoding") == "gzip"
        assert gzip.decompress(r.content) == plain


class TestStowContentEncoding:
    def test_gzip_body_is_stored(self, archive: Archive) -> None:
        ds, data = archive.instance()
        r = archive.stow(gzip.compress(_multipart([data])), headers={"Content-Encoding": "gzip"})
        assert r.status_code == 200, r.text
        assert _sop_uids(r) == [ds.SOPInstanceUID]
        assert archive.stored(ds) == data

    def test_deflate_body_sent_in_pieces_is_stored(self, archive: Archive) -> None:
        ds1, data1 = archive.instance()
        ds2, data2 = archive.instance()
        packed = zlib.compress(_multipart([data1, data2]))
        pieces = (packed[i:i + 100] for i in range(0, len(packed), 100))  # chunked
        r = archive.stow(pieces, headers={"Content-Encoding": "deflate"})
        assert r.status_code == 200, r.text
        assert _sop_uids(r) == [ds1.SOPInstanceUID, ds2.SOPInstanceUID]
        assert archive.stored(ds2) == data2

    def test_other_coding_is_415(self, archive: Archive) -> None:
        _, data = archive.instance()
        r = archive.stow(_multipart([data]), headers={"Content-Encoding": "br"})
        assert r.status_code == 415
        assert "gzip" in r.headers.get("Accept-Encoding", "")
        assert "br" in r.json()["error"]

    def test_corrupt_or_cut_gzip_is_400(self, archive: Archive) -> None:
        _, data = archive.instance()
        packed = gzip.compress(_multipart([data]))
        for body in (b"\x1f\x8b\x08\x00garbage" * 10, packed[:len(packed) // 2]):
            r = archive.stow(body, headers={"Content-Encoding": "gzip"})
            assert r.status_code == 400, r.text
            assert "gzip" in r.json()["error"]

    def test_inflated_size_counts_against_the_limit(self, archive: Archive) -> None:
        # 8 MiB of zeros in a part: a body of a few KiB over the wire, twice the limit inflated
        bomb = gzip.compress(_multipart([b"\0" * (2 * MAX_BODY)]))
        assert len(bomb) < 64 * 1024
        r = archive.stow(bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413, r.text


class TestStowFromOtherClients:
    def test_orthanc_framing(self, archive: Archive) -> None:
        """Orthanc's plugin: chunked, a Content-Length per part, a boundary of two UUIDs."""
        items = [archive.instance() for _ in range(2)]
        boundary = "cdff5d47-0c3d-4fbc-b60b-7c552468eca9-cdff5d47-0c3d-4fbc-b60b-7c552468eca9"
        body = _multipart([data for _, data in items], boundary, part_length=True)
        r = archive.stow((body[i:i + 8192] for i in range(0, len(body), 8192)),
                         boundary=boundary)
        assert r.status_code == 200, r.text
        for ds, data in items:
            assert archive.stored(ds) == data

    def test_unquoted_type_and_special_boundary(self, archive: Archive) -> None:
        ds, data = archive.instance()
        boundary = "a'()+_,-./:=? z"
        r = requests.post(archive.base + "/studies", data=_multipart([data], boundary),
                          headers={"Content-Type": "multipart/related; type=application/dicom;"
                                                   f' boundary="{boundary}"'}, timeout=30)
        assert r.status_code == 200, r.text
        assert _sop_uids(r) == [ds.SOPInstanceUID]

    def test_study_scoped_store_refuses_the_other_study_alone(self, archive: Archive) -> None:
        ds_in, data_in = archive.instance()
        ds_out, data_out = archive.instance()
        r = archive.stow(_multipart([data_out, data_in]), study=ds_in.StudyInstanceUID)
        assert r.status_code == 202, r.text
        assert _sop_uids(r) == [ds_in.SOPInstanceUID]
        assert _sop_uids(r, "00081198") == [ds_out.SOPInstanceUID]
        assert _failure_reasons(r) == [0xC409]
        assert archive.get(f"/studies/{ds_out.StudyInstanceUID}/metadata").status_code == 404

    def test_json_and_bulk_data_is_a_clean_415(self, archive: Archive) -> None:
        ds, _ = archive.instance()
        meta = ds.to_json(bulk_data_threshold=16,
                          bulk_data_element_handler=lambda _: "http://client/bulk/1")
        body = (b"--XX\r\nContent-Type: application/dicom+json\r\n\r\n[" + meta.encode()
                + b"]\r\n--XX\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Location: http://client/bulk/1\r\n\r\n" + ds.PixelData
                + b"\r\n--XX--\r\n")
        r = requests.post(archive.base + "/studies", data=body, timeout=30, headers={
            "Content-Type": 'multipart/related; type="application/dicom+json"; boundary=XX'})
        assert r.status_code == 415
        assert "application/dicom" in r.json()["error"]


@pytest.fixture(scope="module")
def pixels(archive: Archive) -> tuple[str, bytes]:
    """The Pixel Data BulkDataURI of an instance (from its metadata), and its bytes."""
    url = archive.get("/instances?PatientID=DWPEER&limit=1").json()[0]["00081190"]["Value"][0]
    meta = requests.get(url + "/metadata", timeout=30).json()[0]
    uri = meta["7FE00010"]["BulkDataURI"]
    whole = requests.get(uri, timeout=30)
    assert whole.status_code == 200 and len(whole.content) == 16
    return uri, whole.content


class TestBulkDataRange:
    @pytest.mark.parametrize("header", ["bytes=5-2", "items=0-1", "bytes=x-1",
                                        "bytes=0-1,4-5", "bytes=0-1, 8-"])
    def test_invalid_range_is_ignored(self, pixels: tuple[str, bytes], header: str) -> None:
        uri, whole = pixels
        r = requests.get(uri, headers={"Range": header}, timeout=30)
        assert r.status_code == 200 and r.content == whole

    @pytest.mark.parametrize("header,part", [("bytes=2-5", slice(2, 6)),
                                             ("BYTES=2-5", slice(2, 6)),
                                             ("bytes=-3", slice(13, 16)),
                                             ("bytes=10-", slice(10, 16))])
    def test_range(self, pixels: tuple[str, bytes], header: str, part: slice) -> None:
        uri, whole = pixels
        r = requests.get(uri, headers={"Range": header}, timeout=30)
        assert r.status_code == 206 and r.content == whole[part]
        assert r.headers["Content-Range"] == f"bytes {part.start}-{part.stop - 1}/16"

    @pytest.mark.parametrize("header", ["bytes=16-", "bytes=-0"])
    def test_unsatisfiable_range_is_416(self, pixels: tuple[str, bytes], header: str) -> None:
        r = requests.get(pixels[0], headers={"Range": header}, timeout=30)
        assert r.status_code == 416
        assert r.headers["Content-Range"] == "bytes */16"


class TestStowOfAnInstanceAlreadyStoredElsewhere:
    """The same SOP Instance UID sent again under another study: the first copy is kept
    (duplicate policy keep), so the response must say where it is, not where it was sent."""

    def _again_in(self, archive: Archive, data: bytes, study: str) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, new_uid()
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    def test_retrieve_url_is_where_it_is_stored(self, archive: Archive) -> None:
        ds, data = archive.instance()
        assert archive.stow(_multipart([data])).status_code == 200
        r = archive.stow(_multipart([self._again_in(archive, data, new_uid())]))
        assert r.status_code == 202, r.text  # stored with a warning (PS3.18 10.5.3)
        [item] = r.json()["00081199"]["Value"]
        url = item["00081190"]["Value"][0]
        assert f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/" in url
        assert item["00081196"]["Value"] == [0xB000]
        assert requests.get(url, timeout=30).status_code == 200
        assert r.json()["00081190"]["Value"][0].endswith(f"/studies/{ds.StudyInstanceUID}")

    def test_into_another_study_url_is_refused(self, archive: Archive) -> None:
        ds, data = archive.instance()
        assert archive.stow(_multipart([data])).status_code == 200
        other = new_uid()
        r = archive.stow(_multipart([self._again_in(archive, data, other)]), study=other)
        assert r.status_code == 409, r.text
        assert _failure_reasons(r) == [0xC409]
        assert _sop_uids(r, "00081198") == [ds.SOPInstanceUID]

    def test_the_same_again_is_plain_success(self, archive: Archive) -> None:
        ds, data = archive.instance()
        for study in ("", ds.StudyInstanceUID):
            r = archive.stow(_multipart([data]), study=study)
            assert r.status_code == 200, r.text
            [item] = r.json()["00081199"]["Value"]
            assert "00081196" not in item
