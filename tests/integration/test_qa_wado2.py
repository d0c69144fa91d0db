"""WADO-RS retrieve gaps, against a real `archivist serve` with dicomweb-client and requests.

QA findings (second pass):

- A study or series asked for in a named transfer syntax silently lost the instances that
  could not be sent in it (200, no Warning): 12-bit JPEG Extended, which the transcoder
  refused though imagecodecs decodes it, or an instance with no decoder (video). And one such
  instance made the whole study a 406, or, with no syntax named, made every instance go as
  stored (big endian too). PS3.18 Table 10.4.3-1: 206 (Partial Content) when some are
  returned, 406 when none; the syntax is chosen per instance (8.7.8.2).
- ``frames/1,2/rendered`` rendered frame 1 only.
- Bulk data (and InlineBinary) of OW/OF values of a big endian object came big endian.
- WADO-URI ``transferSyntax=*`` was a 406 (not a UID: 400, PS3.18 9.4.2.4).
"""

from __future__ import annotations

import base64
import io
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from archivist.testing.datasets import new_uid, pydicom_test_file
from archivist.testing.multipart import parts_of
from archivist.testing.server import ServerProcess
from conftest import dcmtk_tool

pytestmark = pytest.mark.timeout(180)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_LS = "1.2.840.10008.1.2.4.80"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
MPEG2 = "1.2.840.10008.1.2.4.100"


def _copy(name: str, study: str) -> Dataset:
    path = pydicom_test_file(name)
    assert path is not None, name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, new_uid(), new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _video(study: str) -> Dataset:
    """An instance in MPEG-2, which no installed decoder reads."""
    ds = _copy("CT_small.dcm", study)
    ds.file_meta.TransferSyntaxUID = MPEG2
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(1000)])
    ds["PixelData"].VR = "OB"
    return ds


def _big_endian_with_luts(study: str) -> Dataset:
    """MR_small_bigendian with a VOI LUT Sequence (one LUT Data over the bulk data threshold,
    one inline) and an OF value."""
    ds = _copy("MR_small_bigendian.dcm", study)
    big, small = Dataset(), Dataset()
    big.LUTDescriptor = [1024, 0, 16]
    big.add_new(0x00283006, "OW", np.arange(1024, dtype=">u2").tobytes())
    small.LUTDescriptor = [64, 0, 16]
    small.add_new(0x00283006, "OW", np.arange(64, dtype=">u2").tobytes())
    ds.VOILUTSequence = [big, small]
    ds.add_new(0x00660016, "OF", np.arange(512, dtype=">f4").tobytes())
    return ds


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("qawado2") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stored(srv: ServerProcess) -> dict[str, Dataset]:
    jpeg_study, video_study, be_study, frames_study = new_uid(), new_uid(), new_uid(), new_uid()
    files = {
        "j2k": _copy("JPEG2000.dcm", jpeg_study),
        "jpeg12": _copy("JPGExtended.dcm", jpeg_study),
        "mr_be": _copy("MR_small_bigendian.dcm", video_study),
        "video": _video(video_study),
        "luts_be": _big_endian_with_luts(be_study),
        "rle2": _copy("SC_rgb_rle_2frame.dcm", frames_study),
    }
    result = DICOMwebClient(f"{srv.url}/dicomweb").store_instances(list(files.values()))
    assert "FailedSOPSequence" not in result
    return files


def _accept(syntax: str) -> dict[str, str]:
    return {"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'}


def _parts(r: requests.Response) -> dict[str, tuple[str, Dataset]]:
    """SOP Instance UID -> (part Content-Type, data set) of a multipart DICOM response."""
    out = {}
    for headers, payload in parts_of(r):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(payload))
        out[str(ds.SOPInstanceUID)] = (headers["content-type"], ds)
    return out


class TestRetrieveInATransferSyntax:
    def test_twelve_bit_jpeg_is_transcoded(self, srv, stored, tmp_path: Path) -> None:
        """imagecodecs decodes 12-bit JPEG Extended: it is sent in the syntax asked for, with
        the pixels DCMTK's dcmdjpeg decodes."""
        jpeg12 = stored["jpeg12"]
        source, plain = tmp_path / "jpeg12.dcm", tmp_path / "plain.dcm"
        jpeg12.save_as(source, enforce_file_format=True)
        subprocess.run([dcmtk_tool("dcmdjpeg"), str(source), str(plain)], check=True)
        want = pydicom.dcmread(plain).pixel_array
        client = DICOMwebClient(f"{srv.url}/dicomweb")
        for syntax in (EXPLICIT_LE, JPEG_LS):
            got = client.retrieve_study(jpeg12.StudyInstanceUID,
                                        media_types=(("application/dicom", syntax),))
            by_uid = {str(ds.SOPInstanceUID): ds for ds in got}
            assert set(by_uid) == {jpeg12.SOPInstanceUID, stored["j2k"].SOPInstanceUID}
            ds = by_uid[jpeg12.SOPInstanceUID]
            assert ds.file_meta.TransferSyntaxUID == syntax
            assert np.array_equal(ds.pixel_array, want)

    def test_some_instances_not_sendable_is_206_naming_them(self, srv, stored) -> None:
        video, mr = stored["video"], stored["mr_be"]
        r = requests.get(f"{srv.url}/dicomweb/studies/{video.StudyInstanceUID}",
                         headers=_accept(EXPLICIT_LE))
        assert r.status_code == 206, r.text[:300]
        warning = r.headers["warning"]
        assert warning.startswith("299 ") and video.SOPInstanceUID in warning
        assert "1 of 2 instances are not included" in warning
        parts = _parts(r)
        assert list(parts) == [mr.SOPInstanceUID]
        assert parts[mr.SOPInstanceUID][1].file_meta.TransferSyntaxUID == EXPLICIT_LE
        # dicomweb-client gets what could be sent (and logs the Warning)
        got = DICOMwebClient(f"{srv.url}/dicomweb").retrieve_study(
            video.StudyInstanceUID, media_types=(("application/dicom", EXPLICIT_LE),))
        assert [str(ds.SOPInstanceUID) for ds in got] == [mr.SOPInstanceUID]

    def test_none_sendable_is_a_readable_406_before_any_part(self, srv, stored) -> None:
        video = stored["video"]
        r = requests.get(f"{srv.url}/dicomweb/studies/{video.StudyInstanceUID}",
                         headers=_accept(JPEG_BASELINE))
        assert r.status_code == 406
        assert r.headers["content-type"] == "application/json"
        error = r.json()["error"]
        assert "none of the 2 instances" in error and JPEG_BASELINE in error
        with pytest.raises(requests.HTTPError, match="406"):
            DICOMwebClient(f"{srv.url}/dicomweb").retrieve_study(
                video.StudyInstanceUID, media_types=(("application/dicom", JPEG_BASELINE),))

    def test_the_syntax_is_chosen_per_instance(self, srv, stored) -> None:
        """Explicit VR Little Endian where it can be made, else as stored when ``*`` is also
        accepted; with no syntax named, one undecodable instance no longer sends the others
        as stored (big endian)."""
        video, mr = stored["video"], stored["mr_be"]
        url = f"{srv.url}/dicomweb/studies/{video.StudyInstanceUID}"
        preference = {"Accept": f'multipart/related; type="application/dicom"; '
                                f'transfer-syntax={EXPLICIT_LE}, multipart/related; '
                                f'type="application/dicom"; transfer-syntax=*; q=0.5'}
        for headers in (preference, {"Accept": 'multipart/related; type="application/dicom"'}):
            r = requests.get(url, headers=headers)
            assert r.status_code == 200, r.text[:300]
            assert "warning" not in r.headers
            parts = _parts(r)
            assert parts[mr.SOPInstanceUID][1].file_meta.TransferSyntaxUID == EXPLICIT_LE
            assert parts[mr.SOPInstanceUID][0].endswith(f"transfer-syntax={EXPLICIT_LE}")
            assert parts[video.SOPInstanceUID][1].file_meta.TransferSyntaxUID == MPEG2
            assert np.array_equal(parts[mr.SOPInstanceUID][1].pixel_array, mr.pixel_array)


class TestRenderedFrames:
    def _url(self, srv: ServerProcess, ds: Dataset, frames: str) -> str:
        return (f"{srv.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/"
                f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/{frames}/rendered")

    def test_several_frames_are_one_rendered_part_each(self, srv, stored) -> None:
        ds = stored["rle2"]
        for media in ("image/jpeg", "image/png"):
            single = [requests.get(self._url(srv, ds, str(n)), headers={"Accept": media})
                      for n in (1, 2)]
            assert all(s.status_code == 200 for s in single)
            r = requests.get(self._url(srv, ds, "2,1"),
                             headers={"Accept": f'multipart/related; type="{media}"'})
            assert r.status_code == 200, r.text[:300]
            assert r.headers["content-type"].startswith(f'multipart/related; type="{media}"')
            parts = parts_of(r)
            assert [h["content-type"] for h, _ in parts] == [media, media]
            assert [p for _, p in parts] == [single[1].content, single[0].content]
            assert Image.open(io.BytesIO(parts[0][1])).size == (ds.Columns, ds.Rows)

    def test_several_frames_as_a_single_image_is_a_readable_406(self, srv, stored) -> None:
        r = requests.get(self._url(srv, stored["rle2"], "1,2"), headers={"Accept": "image/jpeg"})
        assert r.status_code == 406
        assert "multipart/related" in r.json()["error"]


class TestBigEndianBulkData:
    def test_ow_and_of_values_are_little_endian(self, srv, stored) -> None:
        ds = stored["luts_be"]
        client = DICOMwebClient(f"{srv.url}/dicomweb")
        meta = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                                 ds.SOPInstanceUID)
        luts = meta["00283010"]["Value"]
        big_uri = luts[0]["00283006"]["BulkDataURI"]
        r = requests.get(big_uri, headers={"Accept": "application/octet-stream"})
        assert r.status_code == 200
        assert r.content == np.arange(1024, dtype="<u2").tobytes()
        (got,) = client.retrieve_bulkdata(big_uri)
        assert bytes(got) == np.arange(1024, dtype="<u2").tobytes()
        r = requests.get(meta["00660016"]["BulkDataURI"])
        assert r.content == np.arange(512, dtype="<f4").tobytes()
        inline = base64.b64decode(luts[1]["00283006"]["InlineBinary"])
        assert inline == np.arange(64, dtype="<u2").tobytes()


class TestWadoUriTransferSyntax:
    @pytest.mark.parametrize(("value", "status", "text"), [
        ("*", 400, "not a UID"),
        ("1.2.3.abc", 400, "not a UID"),
        ("9.9.9", 400, "not a Transfer Syntax UID"),
        (JPEG_BASELINE, 406, JPEG_BASELINE),
    ])
    def test_transfer_syntax_value(self, srv, stored, value, status, text) -> None:
        ds = stored["mr_be"]
        r = requests.get(f"{srv.url}/wado", params={
            "requestType": "WADO", "studyUID": ds.StudyInstanceUID,
            "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID,
            "contentType": "application/dicom", "transferSyntax": value})
        assert r.status_code == status
        assert text in r.json()["error"]
