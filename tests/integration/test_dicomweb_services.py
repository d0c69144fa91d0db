"""DICOMweb against a real `archivist serve`: dicomweb-client and raw HTTP, every route."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image

from archivist.testing.datasets import make_instance as _make_instance
from archivist.testing.datasets import new_uid, pydicom_test_file
from archivist.testing.multipart import parts_of
from archivist.testing.procs import peak_rss_kb
from archivist.testing.server import ServerProcess
from conftest import dcmtk_tool

pytestmark = pytest.mark.timeout(300)


_TMP = Path(tempfile.mkdtemp(prefix="dw-make-"))


def make_instance(**kw):  # type: ignore[no-untyped-def]
    """A generated instance (written under a temporary folder, returned as a dataset)."""
    path = _TMP / f"{new_uid()}.dcm"
    _make_instance(path, **kw)
    return pydicom.dcmread(path)


def multipart_body(parts: list[bytes], boundary: str = "testboundary42",
                   ctype: str = "application/dicom") -> tuple[bytes, str]:
    body = b""
    for p in parts:
        body += f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + p + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "rtdose.dcm",
         "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_jpeg_dcmtk.dcm", "image_dfl.dcm",
         "examples_palette.dcm", "test-SR.dcm"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundled files, each with a SOP Instance UID of its own (some share one upstream)."""
    out = tmp_path_factory.mktemp("dwcorpus")
    files = {}
    for name in FILES:
        src = pydicom_test_file(name)
        assert src is not None, name
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID = new_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = out / name
        ds.save_as(path, enforce_file_format=True)
        files[name] = path
    return files


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    data = tmp_path_factory.mktemp("dwsrv") / "data"
    server = ServerProcess(data, env={"ARCHIVIST_FIND_MAX_RESULTS": "40",
                                      "ARCHIVIST_HTTP_MAX_BODY": str(400 * 1024 * 1024)})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stored(srv: ServerProcess, corpus: dict[str, Path]) -> dict[str, pydicom.Dataset]:
    """The corpus stored: CT by DCMTK storescu, everything else by STOW-RS (dicomweb-client)."""
    ct = corpus["CT_small.dcm"]
    run = subprocess.run([dcmtk_tool("storescu"), "-aec", "ARCHIVIST", "127.0.0.1",
                          str(srv.dicom_port), str(ct)], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    others = [pydicom.dcmread(p) for n, p in corpus.items() if n != "CT_small.dcm"]
    result = client.store_instances(others)
    assert len(result.ReferencedSOPSequence) == len(others)
    assert "FailedSOPSequence" not in result
    return {n: pydicom.dcmread(p) for n, p in corpus.items()}


def url_of(srv: ServerProcess, ds: pydicom.Dataset) -> str:
    return (f"{srv.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


# -- QIDO-RS -------------------------------------------------------------------------------------

def test_qido_finds_what_c_store_and_stow_stored(srv, stored) -> None:
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    studies = client.search_for_studies()
    uids = {s["0020000D"]["Value"][0] for s in studies}
    assert {str(ds.StudyInstanceUID) for ds in stored.values()} <= uids
    ct = stored["CT_small.dcm"]
    found = client.search_for_instances(study_instance_uid=ct.StudyInstanceUID)
    assert [i["00080018"]["Value"][0] for i in found] == [ct.SOPInstanceUID]
    assert found[0]["00081190"]["Value"][0] == url_of(srv, ct)


def test_c_find_finds_what_stow_stored(srv, stored) -> None:
    ds = stored["JPEG2000.dcm"]
    run = subprocess.run([dcmtk_tool("findscu"), "-S", "-aec", "ARCHIVIST", "127.0.0.1",
                          str(srv.dicom_port), "-k", "QueryRetrieveLevel=IMAGE",
                          "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                          "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
                          "-k", "SOPInstanceUID"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert str(ds.SOPInstanceUID) in run.stdout + run.stderr


def test_ohif_request_shapes(srv, stored) -> None:
    """The requests OHIF 3.13 sends (ecosystem.md), verbatim."""
    h = {"Accept": "application/dicom+json"}
    base = f"{srv.url}/dicomweb"
    r = requests.get(f"{base}/studies?limit=101&offset=0&fuzzymatching=false&includefield="
                     "00081030%2C00080060%2C00080090%2C00100030", headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json")
    studies = r.json()
    assert len(studies) >= 5
    ct = stored["CT_small.dcm"]
    row = next(s for s in studies if s["0020000D"]["Value"][0] == ct.StudyInstanceUID)
    assert row["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy although 00080060 was asked
    r = requests.get(f"{base}/studies?limit=101&offset=0&fuzzymatching=false&includefield="
                     f"00081030%2C00080060&StudyInstanceUID={ct.StudyInstanceUID}", headers=h)
    assert [s["0020000D"]["Value"][0] for s in r.json()] == [ct.StudyInstanceUID]
    r = requests.get(f"{base}/studies?00100020={ct.PatientID}&limit=101&offset=0"
                     "&fuzzymatching=false", headers=h)
    assert ct.StudyInstanceUID in [s["0020000D"]["Value"][0] for s in r.json()]
    r = requests.get(f"{base}/studies/{ct.StudyInstanceUID}/series?includefield="
                     "00080021%2C00080031%2C0008103E%2C00200011", headers=h)
    series = r.json()
    assert [s["0020000E"]["Value"][0] for s in series] == [ct.SeriesInstanceUID]
    r = requests.get(f"{base}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
                     "/metadata", headers=h)
    assert r.status_code == 200 and r.json()[0]["00080018"]["Value"] == [ct.SOPInstanceUID]
    r = requests.get(f"{url_of(srv, ct)}/frames/1", headers={
        "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
    assert r.status_code == 200
    (_headers, payload), = parts_of(r)
    assert len(payload) == ct.Rows * ct.Columns * 2
    r = requests.get(f"{url_of(srv, ct)}/thumbnail?accept=image%2Fjpeg", headers={"Accept": "*/*"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size[0] > 0


def test_qido_paging_is_stable_and_complete(srv, stored) -> None:
    base = f"{srv.url}/dicomweb/instances"
    everything = [i["00080018"]["Value"][0] for i in requests.get(base).json()]
    assert len(everything) >= len(stored)
    paged = []
    for offset in range(0, len(everything), 3):
        page = requests.get(base, params={"limit": 3, "offset": offset}).json()
        paged += [i["00080018"]["Value"][0] for i in page]
    assert paged == everything


def test_qido_includefield_all_and_tags(srv, stored) -> None:
    ds = stored["MR_small.dcm"]
    r = requests.get(f"{srv.url}/dicomweb/studies/{ds.StudyInstanceUID}/instances",
                     params={"includefield": "all", "SOPInstanceUID": ds.SOPInstanceUID})
    (item,) = r.json()
    for tag in ("00200013", "00280010", "00280011", "00100010", "00080060"):
        assert tag in item, tag
    r = requests.get(f"{srv.url}/dicomweb/series", params={
        "SeriesInstanceUID": ds.SeriesInstanceUID, "includefield": "SeriesDescription,00180050"})
    (item,) = r.json()
    assert "0008103E" in item
    assert item["0020000D"]["Value"] == [ds.StudyInstanceUID]  # unscoped: study keys too


def test_qido_fuzzy_person_names(srv) -> None:
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    ds = make_instance(patient_name="Núñez^José María", patient_id="FUZZ-1")
    other = make_instance(patient_name="Nunberg^Joseph", patient_id="FUZZ-2")
    client.store_instances([ds, other])

    def ids(**params: str) -> set[str]:
        r = requests.get(f"{srv.url}/dicomweb/studies", params=params)
        assert r.status_code == 200, r.text
        return {s["00100020"]["Value"][0] for s in r.json() if "Value" in s.get("00100020", {})}

    assert ids(PatientName="nunez jose", fuzzymatching="true") == {"FUZZ-1"}
    assert ids(PatientName="jos nun", fuzzymatching="true") == {"FUZZ-1", "FUZZ-2"}
    assert ids(PatientName="maria", fuzzymatching="true") == {"FUZZ-1"}
    assert ids(PatientName="nunez jose", fuzzymatching="false") == set()
    assert "FUZZ-2" in ids(PatientName="Nunb*")


def test_qido_server_limit_says_so(srv, stored) -> None:
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    study, series = new_uid(), new_uid()
    client.store_instances([make_instance(study_uid=study, series_uid=series, rows=4, columns=4)
                            for _ in range(45)])
    r = requests.get(f"{srv.url}/dicomweb/studies/{study}/instances")
    assert len(r.json()) == 40
    assert r.headers["warning"].startswith("299 ")
    r = requests.get(f"{srv.url}/dicomweb/studies/{study}/instances", params={"offset": 40})
    assert len(r.json()) == 5 and "warning" not in r.headers
    r = requests.get(f"{srv.url}/dicomweb/studies/{study}/instances", params={"limit": 10})
    assert len(r.json()) == 10 and "warning" not in r.headers


def test_qido_errors(srv, stored) -> None:
    base = f"{srv.url}/dicomweb"
    r = requests.get(f"{base}/studies", params={"NoSuchKeyword": "x"})
    assert r.status_code == 400 and "NoSuchKeyword" in r.json()["error"]
    r = requests.get(f"{base}/studies", params={"StudyDate": "2020-bad"})
    assert r.status_code == 400
    r = requests.get(f"{base}/studies", params={"limit": "-1"})
    assert r.status_code == 400
    r = requests.get(f"{base}/studies", headers={"Accept": "application/pdf"})
    assert r.status_code == 406
    r = requests.get(f"{base}/studies/1.2.3.4.5/series")
    assert r.status_code == 200 and r.json() == []
    r = requests.get(f"{base}/nothing-here")
    assert r.status_code == 404 and r.json()["error"]


# -- WADO-RS -------------------------------------------------------------------------------------

def test_stow_then_wado_gives_the_same_bytes(srv, stored, corpus) -> None:
    for name in ("MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "image_dfl.dcm"):
        ds = stored[name]
        r = requests.get(url_of(srv, ds), headers={
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert r.status_code == 200, (name, r.text)
        (headers, payload), = parts_of(r)
        assert payload == corpus[name].read_bytes(), name
        assert ds.file_meta.TransferSyntaxUID in headers["content-type"]


def test_wado_study_and_series_retrieve(srv, stored) -> None:
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    ds = stored["rtdose.dcm"]
    got = client.retrieve_study(ds.StudyInstanceUID)
    assert ds.SOPInstanceUID in [d.SOPInstanceUID for d in got]
    got = client.retrieve_series(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert [d.SOPInstanceUID for d in got] == [ds.SOPInstanceUID]


def test_wado_transcodes_when_asked(srv, stored) -> None:
    ds = stored["JPEG2000.dcm"]
    expected = ds.pixel_array
    # No transfer-syntax parameter: Explicit VR Little Endian (PS3.18 default).
    r = requests.get(url_of(srv, ds), headers={
        "Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200
    (_headers, payload), = parts_of(r)
    got = pydicom.dcmread(io.BytesIO(payload))
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(got.pixel_array, expected)
    # The same object in another syntax: its UIDs stay (pydicom would make a new one).
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    assert got.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    ct = stored["CT_small.dcm"]
    for ts in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"):
        r = requests.get(url_of(srv, ct), headers={
            "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ts}'})
        assert r.status_code == 200, (ts, r.text)
        (_headers, payload), = parts_of(r)
        got = pydicom.dcmread(io.BytesIO(payload))
        assert got.file_meta.TransferSyntaxUID == ts
        assert np.array_equal(got.pixel_array, ct.pixel_array), ts
        assert got.SOPInstanceUID == ct.SOPInstanceUID, ts
    r = requests.get(url_of(srv, ct), headers={
        "Accept": 'multipart/related; type="application/dicom"; '
                  'transfer-syntax=1.2.840.10008.1.2.4.50'})
    assert r.status_code == 406 and r.json()["error"]


def _norm(item):  # type: ignore[no-untyped-def]
    """DICOM JSON with empty Value arrays dropped (PS3.18 F.2.5 leaves Value out when empty)."""
    if isinstance(item, dict):
        return {k: _norm(v) for k, v in item.items() if not (k == "Value" and v == [])}
    if isinstance(item, list):
        return [_norm(v) for v in item]
    return item


def test_metadata_matches_the_stored_datasets(srv, stored, corpus) -> None:
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    for name in ("CT_small.dcm", "rtdose.dcm", "test-SR.dcm", "examples_palette.dcm"):
        ds = stored[name]
        (meta,) = client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        original = pydicom.dcmread(corpus[name])
        for elem in original:
            key = f"{elem.tag:08X}"
            if elem.tag.group == 0x0002 or elem.tag.element == 0 or elem.tag == 0xFFFCFFFC:
                continue
            assert key in meta, (name, key)
            if "BulkDataURI" in meta[key]:
                assert elem.VR in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"), (name, key)
                continue
            assert _norm(meta[key]) == _norm(elem.to_json_dict(None, 1024)), (name, key)
        assert "BulkDataURI" in meta.get("7FE00010", {"BulkDataURI": 1}) or "7FE00010" not in meta
        assert meta["00083002"]["Value"] == [original.file_meta.TransferSyntaxUID]
    study = stored["CT_small.dcm"]
    assert len(client.retrieve_study_metadata(study.StudyInstanceUID)) == 1
    inst = client.retrieve_instance_metadata(study.StudyInstanceUID, study.SeriesInstanceUID,
                                             study.SOPInstanceUID)
    assert inst["00080018"]["Value"] == [study.SOPInstanceUID]


def test_metadata_etag_gzip_and_invalidation(srv, stored) -> None:
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    study, series = new_uid(), new_uid()
    client.store_instances([make_instance(study_uid=study, series_uid=series)])
    url = f"{srv.url}/dicomweb/studies/{study}/series/{series}/metadata"
    r1 = requests.get(url, headers={"Accept-Encoding": "gzip"})
    assert r1.status_code == 200 and r1.headers["content-encoding"] == "gzip"
    etag = r1.headers["etag"]
    assert len(r1.json()) == 1
    raw = requests.get(url, headers={"Accept-Encoding": "gzip"}, stream=True).raw.read()
    assert len(json.loads(gzip.decompress(raw))) == 1
    r2 = requests.get(url, headers={"If-None-Match": etag})
    assert r2.status_code == 304 and r2.content == b""
    client.store_instances([make_instance(study_uid=study, series_uid=series)])
    r3 = requests.get(url, headers={"If-None-Match": etag})
    assert r3.status_code == 200 and r3.headers["etag"] != etag and len(r3.json()) == 2


def test_frames_multiframe_native_and_compressed(srv, stored) -> None:
    dose = stored["rtdose.dcm"]
    n = int(dose.NumberOfFrames)
    frame_size = dose.Rows * dose.Columns * dose.BitsAllocated // 8
    r = requests.get(f"{url_of(srv, dose)}/frames/{','.join(str(i) for i in range(1, n + 1))}",
                     headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert r.status_code == 200
    parts = parts_of(r)
    assert len(parts) == n
    arr = dose.pixel_array
    for i, (_, payload) in enumerate(parts):
        assert len(payload) == frame_size
        assert np.array_equal(np.frombuffer(payload, dtype=arr.dtype).reshape(arr.shape[1:]), arr[i])
    assert requests.get(f"{url_of(srv, dose)}/frames/{n + 1}").status_code == 404
    assert requests.get(f"{url_of(srv, dose)}/frames/x").status_code == 400
    j2k = stored["JPEG2000.dcm"]
    r = requests.get(f"{url_of(srv, j2k)}/frames/1", headers={
        "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
    (headers, payload), = parts_of(r)
    assert headers["content-type"].startswith("image/jp2")
    assert payload[:4] in (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0c")
    r = requests.get(f"{url_of(srv, j2k)}/frames/1", headers={
        "Accept": 'multipart/related; type="application/octet-stream"'})
    (headers, payload), = parts_of(r)
    assert headers["content-type"].startswith("application/octet-stream")
    assert np.array_equal(np.frombuffer(payload, dtype=j2k.pixel_array.dtype).reshape(
        j2k.pixel_array.shape), j2k.pixel_array)
    rle = stored["SC_rgb_rle_2frame.dcm"]
    r = requests.get(f"{url_of(srv, rle)}/frames/2", headers={
        "Accept": 'multipart/related; type="image/dicom-rle"'})
    assert r.status_code == 200
    r = requests.get(f"{url_of(srv, rle)}/frames/2", headers={
        "Accept": 'multipart/related; type="image/jls"'})
    assert r.status_code == 406


def test_bulkdata_and_range(srv, stored) -> None:
    ct = stored["CT_small.dcm"]
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    meta = client.retrieve_instance_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID,
                                             ct.SOPInstanceUID)
    uri = meta["7FE00010"]["BulkDataURI"]
    r = requests.get(uri, headers={"Accept": "application/octet-stream"})
    assert r.status_code == 200 and r.content == ct.PixelData
    r = requests.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == ct.PixelData[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(ct.PixelData)}"
    r = requests.get(uri, headers={"Range": f"bytes={len(ct.PixelData) + 5}-"})
    assert r.status_code == 416


def test_rendered_and_thumbnails(srv, stored) -> None:
    ct = stored["CT_small.dcm"]
    r = requests.get(f"{url_of(srv, ct)}/rendered", params={"viewport": "64,64", "quality": 80},
                     headers={"Accept": "image/jpeg"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (64, 64)
    assert np.asarray(img).std() > 5  # an image, not a flat square
    r = requests.get(f"{url_of(srv, ct)}/rendered", params={"window": "40,400,linear"},
                     headers={"Accept": "image/png"})
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (ct.Columns, ct.Rows)
    for path in (f"/dicomweb/studies/{ct.StudyInstanceUID}/thumbnail",
                 f"/dicomweb/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/thumbnail",
                 f"/dicomweb/studies/{ct.StudyInstanceUID}/rendered"):
        r = requests.get(f"{srv.url}{path}", headers={"Accept": "image/jpeg"})
        assert r.status_code == 200, path
        assert max(Image.open(io.BytesIO(r.content)).size) <= (128 if "thumb" in path else 4096)
    for name in ("JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "examples_palette.dcm",
                 "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        ds = stored[name]
        r = requests.get(f"{url_of(srv, ds)}/frames/1/rendered", headers={"Accept": "image/jpeg"})
        assert r.status_code == 200, (name, r.text)
        assert np.asarray(Image.open(io.BytesIO(r.content))).std() > 1, name
    r = requests.get(f"{url_of(srv, ct)}/rendered", params={"viewport": "0,10"})
    assert r.status_code == 400
    r = requests.get(f"{url_of(srv, ct)}/rendered", headers={"Accept": "image/tiff"})
    assert r.status_code == 406
    sr = stored["test-SR.dcm"]
    # A report has no image: its rendered form is text (HTML by default), never a JPEG.
    r = requests.get(f"{url_of(srv, sr)}/rendered")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    r = requests.get(f"{url_of(srv, sr)}/rendered", headers={"Accept": "image/jpeg"})
    assert r.status_code == 406


def test_wado_errors(srv, stored) -> None:
    ct = stored["CT_small.dcm"]
    base = f"{srv.url}/dicomweb"
    r = requests.get(f"{base}/studies/1.2.3.999")
    assert r.status_code == 404 and "no such" in r.json()["error"]
    r = requests.get(f"{base}/studies/not-a-uid/metadata")
    assert r.status_code == 400
    r = requests.get(f"{base}/studies/{ct.StudyInstanceUID}/series/1.2.3/instances/"
                     f"{ct.SOPInstanceUID}")
    assert r.status_code == 404  # the instance is not in that series
    r = requests.get(url_of(srv, ct), headers={"Accept": "application/pdf"})
    assert r.status_code == 406


def test_cors(srv, stored) -> None:
    r = requests.options(f"{srv.url}/dicomweb/studies", headers={
        "Origin": "http://viewer.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "accept"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    r = requests.get(f"{srv.url}/dicomweb/studies", headers={"Origin": "http://viewer.example"})
    assert r.headers["access-control-allow-origin"] == "*"
    r = requests.get(f"{srv.url}/wado", headers={"Origin": "http://viewer.example"})
    assert r.headers["access-control-allow-origin"] == "*" and r.status_code == 400


# -- STOW-RS -------------------------------------------------------------------------------------

def test_stow_bad_part_never_loses_the_good_ones(srv) -> None:
    good = [make_instance() for _ in range(2)]
    blobs = []
    for ds in good:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blobs.append(buf.getvalue())
    body, ctype = multipart_body([blobs[0], b"this is not DICOM at all" * 10, blobs[1]])
    r = requests.post(f"{srv.url}/dicomweb/studies", data=body,
                      headers={"Content-Type": ctype, "Accept": "application/dicom+json"})
    assert r.status_code == 202, r.text
    out = r.json()
    assert len(out["00081199"]["Value"]) == 2
    (failed,) = out["00081198"]["Value"]
    assert failed["00081197"]["Value"][0] == 0xC000
    for ds in good:
        q = requests.get(f"{srv.url}/dicomweb/instances", params={"SOPInstanceUID": ds.SOPInstanceUID})
        assert len(q.json()) == 1


def test_stow_reports_parts_in_their_order(srv) -> None:
    """Parts are stored a few at a time while the next ones arrive; the response lists them in
    the order they were sent, duplicates within the request included, and every one is stored."""
    instances = [make_instance(instance_number=i + 1) for i in range(12)]
    blobs = []
    for ds in instances:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blobs.append(buf.getvalue())
    parts = blobs[:5] + [b"not DICOM" * 20] + blobs[5:] + [blobs[2], b"\x00" * 50]
    body, ctype = multipart_body(parts)
    r = requests.post(f"{srv.url}/dicomweb/studies", data=body,
                      headers={"Content-Type": ctype, "Accept": "application/dicom+json"})
    assert r.status_code == 202, r.text
    out = r.json()
    referenced = [item["00081155"]["Value"][0] for item in out["00081199"]["Value"]]
    expected = [str(ds.SOPInstanceUID) for ds in instances] + [str(instances[2].SOPInstanceUID)]
    assert referenced == expected
    assert len(out["00081198"]["Value"]) == 2
    for ds in instances:
        q = requests.get(f"{srv.url}/dicomweb/instances",
                         params={"SOPInstanceUID": ds.SOPInstanceUID})
        assert len(q.json()) == 1


def test_stow_truncated_body(srv) -> None:
    ds = make_instance()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    body, ctype = multipart_body([buf.getvalue(), buf.getvalue()[:300]])
    cut = body[: body.rfind(b"\r\n--testboundary42")]  # the second part never ends
    r = requests.post(f"{srv.url}/dicomweb/studies", data=cut, headers={"Content-Type": ctype})
    assert r.status_code == 202, r.text
    assert len(r.json()["00081199"]["Value"]) == 1
    assert len(r.json()["00081198"]["Value"]) == 1


def test_stow_refusals(srv) -> None:
    url = f"{srv.url}/dicomweb/studies"
    ds = make_instance()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    body, ctype = multipart_body([buf.getvalue()])
    r = requests.post(url, data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 415 and r.json()["error"]
    r = requests.post(url, data=body, headers={
        "Content-Type": 'multipart/related; type="application/dicom+json"; boundary=testboundary42'})
    assert r.status_code == 415
    r = requests.post(url, data=body, headers={
        "Content-Type": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 400
    r = requests.post(f"{url}/{new_uid()}", data=body, headers={"Content-Type": ctype})
    assert r.status_code == 409
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC409]
    # The refused part is named by what the one ingest read of it.
    assert r.json()["00081198"]["Value"][0]["00081155"]["Value"] == [ds.SOPInstanceUID]
    r = requests.post(f"{url}/{ds.StudyInstanceUID}", data=body, headers={"Content-Type": ctype})
    assert r.status_code == 200


def test_stow_huge_content_length_is_refused_before_reading(srv) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as s:
        s.sendall(b"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\n"
                  b"Content-Length: 99999999999\r\n\r\n--b\r\n")
        reply = ""
        while "exceeds" not in reply:
            data = s.recv(4096)
            if not data:
                break
            reply += data.decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert "exceeds" in reply
    assert requests.get(f"{srv.url}/healthz").status_code == 200


# -- WADO-URI ------------------------------------------------------------------------------------

def test_wado_uri(srv, stored, corpus) -> None:
    ds = stored["MR_small.dcm"]
    params = {"requestType": "WADO", "studyUID": ds.StudyInstanceUID,
              "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID}
    r = requests.get(f"{srv.url}/wado", params={**params, "contentType": "application/dicom"})
    assert r.status_code == 200 and r.content == corpus["MR_small.dcm"].read_bytes()
    r = requests.get(f"{srv.url}/wado", params=params)
    assert r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (ds.Columns, ds.Rows)
    r = requests.get(f"{srv.url}/wado", params={**params, "contentType": "image/png",
                                                "rows": "32", "columns": "32"})
    assert Image.open(io.BytesIO(r.content)).size == (32, 32)
    j2k = stored["JPEG2000.dcm"]
    r = requests.get(f"{srv.url}/wado", params={
        "requestType": "WADO", "studyUID": j2k.StudyInstanceUID,
        "seriesUID": j2k.SeriesInstanceUID, "objectUID": j2k.SOPInstanceUID,
        "contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.1"})
    got = pydicom.dcmread(io.BytesIO(r.content))
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(got.pixel_array, j2k.pixel_array)
    r = requests.get(f"{srv.url}/wado", params={**params, "objectUID": "1.2.3.4"})
    assert r.status_code == 404
    r = requests.get(f"{srv.url}/wado", params={"requestType": "WADO"})
    assert r.status_code == 400 and r.json()["error"]


def test_stow_streams_a_large_object_without_holding_it(srv, tmp_path) -> None:
    """A 200 MB instance through STOW-RS: stored whole, server peak memory barely moves."""
    path = tmp_path / "big.dcm"
    _make_instance(path, rows=1024, columns=1024, frames=200)
    size = path.stat().st_size
    assert size > 200 * 1024 * 1024
    boundary = "bigboundary"

    def body():  # type: ignore[no-untyped-def]
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    pid = srv.proc.pid
    requests.get(f"{srv.url}/dicomweb/studies")  # warm up
    before = peak_rss_kb(pid) * 1024
    r = requests.post(f"{srv.url}/dicomweb/studies", data=body(), headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 200, r.text
    growth = peak_rss_kb(pid) * 1024 - before
    assert growth < 100 * 1024 * 1024, f"peak RSS grew by {growth / 2**20:.0f} MiB"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    frame = requests.get(f"{url_of(srv, ds)}/frames/200",
                         headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    (_, payload), = parts_of(frame)
    assert len(payload) == 1024 * 1024


def test_qido_sequence_matching_on_codes(srv) -> None:
    """A code query finds the study, and the SCT code finds an object stored with SRT."""
    from pydicom.dataset import Dataset

    def coded(value: str, scheme: str, meaning: str) -> Dataset:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        return item

    srt = make_instance(patient_id="CODE-1", extra={
        "AnatomicRegionSequence": [coded("T-62000", "SRT", "Liver")]})
    sct = make_instance(patient_id="CODE-2", extra={
        "AnatomicRegionSequence": [coded("39607008", "SCT", "Lung")]})
    DICOMwebClient(f"{srv.url}/dicomweb").store_instances([srt, sct])

    def patients(level: str, **params: str) -> set[str]:
        r = requests.get(f"{srv.url}/dicomweb/{level}", params={**params, "includefield": "PatientID"})
        assert r.status_code == 200, r.text
        return {i["00100020"]["Value"][0] for i in r.json() if "Value" in i.get("00100020", {})}

    liver_sct = {"00082218.00080100": "10200004", "00082218.00080102": "SCT"}
    assert patients("instances", **liver_sct) == {"CODE-1"}
    assert patients("studies", **liver_sct) == {"CODE-1"}
    assert patients("instances", **{"AnatomicRegionSequence.CodeValue": "T-62000",
                                    "AnatomicRegionSequence.CodingSchemeDesignator": "SRT"}) \
        == {"CODE-1"}
    assert patients("instances", **{"00082218.00080100": "39607008"}) == {"CODE-2"}
    assert patients("instances", **{"00082218.00080100": "999999"}) == set()


def test_single_part_frame_when_asked(srv, stored) -> None:
    ct = stored["CT_small.dcm"]
    r = requests.get(f"{url_of(srv, ct)}/frames/1", headers={"Accept": "application/octet-stream"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/octet-stream")
    assert r.content == ct.PixelData
    j2k = stored["JPEG2000.dcm"]
    r = requests.get(f"{url_of(srv, j2k)}/frames/1", headers={"Accept": "image/jp2"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/jp2")
    from pydicom.encaps import generate_frames

    (expected,) = list(generate_frames(j2k.PixelData, number_of_frames=1))
    assert r.content == expected


def test_series_metadata_is_precomputed_after_a_change(srv) -> None:
    """A few seconds after a series changes, its metadata is built before anyone asks."""
    import time

    cache = srv.data_dir / "cache" / "metadata"
    study, series = new_uid(), new_uid()
    DICOMwebClient(f"{srv.url}/dicomweb").store_instances(
        [make_instance(study_uid=study, series_uid=series) for _ in range(3)])
    deadline = time.monotonic() + 30
    body = None
    while time.monotonic() < deadline and body is None:
        time.sleep(0.5)
        for path in cache.glob("series-*.json.gz") if cache.exists() else []:
            try:
                data = gzip.decompress(path.read_bytes())
            except (OSError, EOFError):
                continue
            if series.encode() in data:
                body = json.loads(data)
    assert body is not None, "the warmer did not build the new series' metadata"
    assert len(body) == 3
    r = requests.get(f"{srv.url}/dicomweb/studies/{study}/series/{series}/metadata")
    assert len(r.json()) == 3
    assert all("urn:archivist" not in json.dumps(item) for item in r.json())


@pytest.mark.slow  # CI time (20 min); covered in a full run: pytest -m slow
def test_metadata_warmer_waits_while_requests_are_answered(make_server) -> None:  # type: ignore[no-untyped-def]
    """The warmer stays out of the way of HTTP requests being answered, then builds.

    One process: the warmer runs in the first worker and yields to the requests of its own
    process (with several workers, the requests another worker answers run beside it on
    another core, and this client's keep-alive connection may be on either worker)."""
    import time

    srv = make_server("--workers", "1")
    cache = srv.data_dir / "cache" / "metadata"
    study, series = new_uid(), new_uid()
    DICOMwebClient(f"{srv.url}/dicomweb").store_instances(
        [make_instance(study_uid=study, series_uid=series) for _ in range(2)])

    def built() -> bool:
        for path in cache.glob("series-*.json.gz") if cache.exists() else []:
            try:
                if series.encode() in gzip.decompress(path.read_bytes()):
                    return True
            except (OSError, EOFError):
                continue
        return False

    busy_until = time.monotonic() + 6  # well past the 2 s of quiet the warmer waits for
    with requests.Session() as http:
        while time.monotonic() < busy_until:
            assert http.get(f"{srv.url}/healthz", timeout=10).status_code == 200
            time.sleep(0.1)
    assert not built(), "the warmer built while requests kept arriving"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not built():
        time.sleep(0.5)
    assert built(), "the warmer never built once the requests stopped"


def test_twelve_bit_jpeg_extended_renders(srv, stored) -> None:
    """pydicom's free plugins cannot decode 12-bit JPEG Extended; imagecodecs does."""
    path = pydicom_test_file("JPGExtended.dcm")
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    DICOMwebClient(f"{srv.url}/dicomweb").store_instances([ds])
    r = requests.get(f"{url_of(srv, ds)}/thumbnail?viewport=256%2C256", headers={"Accept": "*/*"})
    assert r.status_code == 200, r.text
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.std() > 5
    r = requests.get(f"{url_of(srv, ds)}/frames/1", headers={"Accept": "application/octet-stream"})
    assert r.status_code == 200 and len(r.content) == ds.Rows * ds.Columns * 2
    values = np.frombuffer(r.content, dtype="<u2")
    assert 0 < values.max() < 4096
