"""WADO-RS bulk data of Pixel Data and WADO-URI parameters, against a real `archivist serve`.

QA findings:

- The bulk data of a compressed Pixel Data was the frames' compressed bytes run together and
  labelled ``application/octet-stream`` (which is native, uncompressed data: PS3.18 8.7.3.3),
  with no way to tell the frames apart; big endian Pixel Data came byte-swapped.
- WADO-URI ignored ``anonymize=yes`` (the identified object went out), ignored ``region``, and
  let ``imageQuality=500``, a lone ``windowCenter`` or ``rows=0`` through.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.encaps import generate_frames

from archivist.testing.datasets import new_uid, pydicom_test_file
from archivist.testing.multipart import parts_of
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(180)


def _copy(name: str) -> pydicom.Dataset:
    """A bundled file under UIDs of its own (several bundled files share theirs)."""
    path = pydicom_test_file(name)
    assert path is not None, name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = new_uid(), new_uid(), new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("qawado") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stored(srv: ServerProcess) -> dict[str, pydicom.Dataset]:
    files = {n: _copy(n) for n in ("SC_rgb_rle_2frame.dcm", "MR_small_bigendian.dcm",
                                   "CT_small.dcm", "examples_rgb_color.dcm")}
    result = DICOMwebClient(f"{srv.url}/dicomweb").store_instances(list(files.values()))
    assert "FailedSOPSequence" not in result
    return files


def _pixel_uri(srv: ServerProcess, ds: pydicom.Dataset) -> str:
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    meta = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                             ds.SOPInstanceUID)
    return str(meta["7FE00010"]["BulkDataURI"])


def _native(ds: pydicom.Dataset) -> bytes:
    arr = ds.pixel_array
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


class TestPixelDataBulk:
    def test_compressed_pixel_data_as_octet_stream_is_decoded(self, srv, stored) -> None:
        ds = stored["SC_rgb_rle_2frame.dcm"]
        r = requests.get(_pixel_uri(srv, ds), headers={"Accept": "application/octet-stream"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/octet-stream")
        assert r.content == _native(ds)
        # the way dicomweb-client asks by default (multipart, any type)
        (got,) = DICOMwebClient(f"{srv.url}/dicomweb").retrieve_bulkdata(_pixel_uri(srv, ds))
        assert bytes(got) == _native(ds)

    def test_compressed_pixel_data_as_stored_is_one_part_per_frame(self, srv, stored) -> None:
        ds = stored["SC_rgb_rle_2frame.dcm"]
        want = list(generate_frames(ds.PixelData, number_of_frames=2))
        for accept in ('multipart/related; type="image/dicom-rle"',
                       'multipart/related; type="application/octet-stream"; transfer-syntax=*'):
            r = requests.get(_pixel_uri(srv, ds), headers={"Accept": accept})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith(
                'multipart/related; type="image/dicom-rle"')
            parts = parts_of(r)
            assert [p for _, p in parts] == want
            assert all(h["content-type"].startswith("image/dicom-rle") for h, _ in parts)

    def test_big_endian_pixel_data_is_sent_little_endian(self, srv, stored) -> None:
        ds = stored["MR_small_bigendian.dcm"]
        r = requests.get(_pixel_uri(srv, ds), headers={"Accept": "application/octet-stream"})
        assert r.status_code == 200
        assert r.content == _native(ds)
        r = requests.get(_pixel_uri(srv, ds), headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.content == _native(ds)[:10]

    def test_native_little_endian_is_unchanged(self, srv, stored) -> None:
        ds = stored["CT_small.dcm"]
        r = requests.get(_pixel_uri(srv, ds), headers={"Accept": "application/octet-stream"})
        assert r.status_code == 200 and r.content == ds.PixelData


class TestWadoUri:
    @staticmethod
    def _get(srv: ServerProcess, ds: pydicom.Dataset, **params: str) -> requests.Response:
        return requests.get(f"{srv.url}/wado", params={
            "requestType": "WADO", "studyUID": ds.StudyInstanceUID,
            "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID, **params})

    def test_anonymize_is_refused_not_ignored(self, srv, stored) -> None:
        ds = stored["CT_small.dcm"]
        r = self._get(srv, ds, contentType="application/dicom", anonymize="yes")
        assert r.status_code == 400
        assert "anonymize" in r.json()["error"]
        assert str(ds.PatientName).encode() not in r.content

    def test_region_selects_part_of_the_image(self, srv, stored) -> None:
        ds = stored["CT_small.dcm"]  # 128 x 128
        r = self._get(srv, ds, contentType="image/png", region="0.0,0.0,0.5,0.25")
        assert r.status_code == 200
        assert Image.open(io.BytesIO(r.content)).size == (64, 32)

    @pytest.mark.parametrize("params", [
        {"region": "0.5,0,0.2,1"}, {"region": "x"}, {"imageQuality": "500"},
        {"windowCenter": "40"}, {"rows": "0"}, {"rows": "abc"}, {"frameNumber": "0"},
        {"contentType": "application/dicom", "rows": "64"},
    ])
    def test_bad_rendering_parameters_are_a_readable_400(self, srv, stored, params) -> None:
        r = self._get(srv, stored["CT_small.dcm"], **params)
        assert r.status_code == 400
        assert r.json()["error"]

    def test_rows_alone_keeps_the_aspect_ratio(self, srv, stored) -> None:
        ds = stored["examples_rgb_color.dcm"]  # 320 x 240
        r = self._get(srv, ds, rows="120", contentType="image/png")
        assert r.status_code == 200
        assert Image.open(io.BytesIO(r.content)).size == (160, 120)
        r = self._get(srv, ds, columns="80", contentType="image/png")
        assert Image.open(io.BytesIO(r.content)).size == (80, 60)


class TestFrameLists:
    def _frames(self, srv, ds, frame_list: str) -> requests.Response:  # type: ignore[no-untyped-def]
        return requests.get(
            f"{srv.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}/frames/{frame_list}",
            headers={"Accept": 'multipart/related; type="application/octet-stream"'})

    def test_a_frame_listed_many_times_is_refused(self, srv, stored) -> None:
        # A 20 kB URL naming frame 1 ten thousand times made the server build 300 MB.
        ds = stored["SC_rgb_rle_2frame.dcm"]
        r = self._frames(srv, ds, ",".join(["1"] * 5000))
        assert r.status_code == 400 and "more than once" in r.json()["error"]

    def test_negative_frame_is_a_400_and_out_of_range_a_404(self, srv, stored) -> None:
        ds = stored["SC_rgb_rle_2frame.dcm"]
        assert self._frames(srv, ds, "-1").status_code == 400
        assert self._frames(srv, ds, "1,3").status_code == 404
        r = self._frames(srv, ds, "2,1")
        assert r.status_code == 200
        arr = ds.pixel_array
        assert [p for _, p in parts_of(r)] == [arr[1].tobytes(), arr[0].tobytes()]
