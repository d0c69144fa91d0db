"""Rendered images, thumbnails and WADO-URI, against a real `archivist serve` (QA, round 3).

Findings fixed here, each checked against the grey levels of the PS3.4 N.2 pipeline computed
with numpy (and DCMTK's dcmj2pnm, which agrees):

- A VOI LUT Sequence was applied to the stored values, not to the Modality LUT's output, and
  its output stretched to the image's min/max instead of the LUT's range (PS3.3 C.11.2.1.1).
- 16-bit palette entries and 16-bit RGB were scaled by the brightest pixel of the image, not by
  the entries' (samples') range: a dark image came out bright.
- An enhanced multi-frame object's rescale and per-frame window (functional groups) were
  ignored.
- ``frames/1,6/rendered`` of a 5-frame instance answered 200 with frame 1 only; a thumbnail of
  ``frames/1,9`` answered 200.
- An Encapsulated PDF's ``/rendered`` answered application/pdf to a client accepting only
  image/png, and 406 to one accepting application/pdf.
- A study whose first series was a presentation state (or a PDF) had no rendered image nor
  thumbnail (406) though it held images.
- ``window=nan,200`` (or ``windowCenter=nan``) was rendered; WADO-URI ``frameNumber`` past the
  last frame was a 404 (PS3.18 9.5.2: 400).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from archivist.testing.datasets import new_uid
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(180)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
MULTIFRAME_GREY = "1.2.840.10008.5.1.4.1.1.7.2"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"

RAMP = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)


def _instance(sop_class: str = SECONDARY_CAPTURE, *, study: str | None = None,
              series: str | None = None, pixels: np.ndarray | None = None,
              photometric: str = "MONOCHROME2", bits_stored: int | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, new_uid()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or new_uid(), series or new_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "QA-RENDER", "QA^Render", "OT"
    if pixels is not None:
        samples = 3 if pixels.ndim == 3 and pixels.shape[-1] == 3 else 1
        frames = pixels.shape[0] if pixels.ndim == 3 and samples == 1 else 1
        ds.Rows, ds.Columns = pixels.shape[-2:] if samples == 1 else pixels.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
        if samples == 3:
            ds.PlanarConfiguration = 0
        if frames > 1:
            ds.NumberOfFrames = frames
        bits = pixels.dtype.itemsize * 8
        ds.BitsAllocated, ds.BitsStored = bits, bits_stored or bits
        ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
        ds.PixelData = pixels.tobytes()
    return ds


def _voi_lut_after_rescale() -> Dataset:
    """Modality values 1000..5095; the VOI LUT's first value mapped is 1000 and its 16-bit
    output covers 0..65520: the rendered image is the full ramp."""
    ds = _instance(pixels=RAMP, bits_stored=12)
    ds.RescaleSlope, ds.RescaleIntercept = 1, 1000
    item = Dataset()
    item.LUTDescriptor = [4096, 1000, 16]
    item.LUTData = (np.arange(4096) * 16).astype(np.uint16).tobytes()
    ds.VOILUTSequence = Sequence([item])
    return ds


def _voi_lut_half_range() -> Dataset:
    """A 16-bit VOI LUT whose output only reaches 32760: mid grey at most, not white."""
    ds = _instance(pixels=RAMP, bits_stored=12)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = (np.arange(4096) * 8).astype(np.uint16).tobytes()
    ds.VOILUTSequence = Sequence([item])
    return ds


PALETTE_INDEX = np.tile(np.arange(64, dtype=np.uint8), (16, 1))


def _dark_palette() -> Dataset:
    """16-bit palette entries reaching 16128 of 65535: a dark ramp."""
    ds = _instance(pixels=PALETTE_INDEX, photometric="PALETTE COLOR")
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [64, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData",
                (np.arange(64, dtype=np.uint16) * 256).tobytes())
    return ds


RGB = np.zeros((8, 12, 3), np.uint8)
RGB[..., 0], RGB[:, :6, 1], RGB[4:, :, 2] = 100, 50, 120


def _dark_rgb16() -> Dataset:
    return _instance(pixels=RGB.astype(np.uint16) * 256, photometric="RGB")


ENHANCED_VALUES = (np.arange(64 * 64).reshape(64, 64) % 2048).astype(np.uint16)
ENHANCED_WINDOWS = ((-500.0, 200.0), (0.0, 2000.0))


def _enhanced_ct() -> Dataset:
    """Rescale in the shared functional groups, one window per frame."""
    ds = _instance(ENHANCED_CT, pixels=np.stack([ENHANCED_VALUES] * 2), bits_stored=12)
    ds.Modality = "CT"
    transformation = Dataset()
    transformation.RescaleSlope, transformation.RescaleIntercept = 1, -1024
    transformation.RescaleType = "HU"
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transformation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for center, width in ENHANCED_WINDOWS:
        voi, frame = Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        frame.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return ds


def _pdf(study: str | None = None) -> Dataset:
    ds = _instance(ENCAPSULATED_PDF, study=study)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    return ds


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("qarender") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stored(srv: ServerProcess) -> dict[str, Dataset]:
    frames = np.stack([np.full((16, 16), 50 * i, np.uint8) for i in range(5)])
    objects = {
        "voi_rescale": _voi_lut_after_rescale(),
        "voi_half": _voi_lut_half_range(),
        "palette": _dark_palette(),
        "rgb16": _dark_rgb16(),
        "enhanced": _enhanced_ct(),
        "frames": _instance(MULTIFRAME_GREY, pixels=frames),
        "pdf": _pdf(),
        "plain": _instance(pixels=RAMP, bits_stored=12),
    }
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    for ds in objects.values():
        assert "FailedSOPSequence" not in client.store_instances([ds])
    # A study whose first stored series is a presentation state, the second a PDF, then
    # images: one request each, so the index holds them in that order.
    study = new_uid()
    objects["mixed_pr"] = _instance(GSPS, study=study)
    objects["mixed_pdf"] = _pdf(study)
    images = new_uid()
    for value in (40, 80, 120):
        picture = np.full((8, 8), value, np.uint8)
        picture[0, 0] = 255
        objects[f"mixed_{value}"] = _instance(study=study, series=images, pixels=picture)
    for key in ("mixed_pr", "mixed_pdf", "mixed_40", "mixed_80", "mixed_120"):
        assert "FailedSOPSequence" not in client.store_instances([objects[key]])
    return objects


def _url(srv: ServerProcess, ds: Dataset) -> str:
    return (f"{srv.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/"
            f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")


def _png(url: str) -> np.ndarray:
    r = requests.get(url, headers={"Accept": "image/png"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content))).astype(int)


def _linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, to 0-255."""
    out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(np.rint(out), 0, 255).astype(int)


class TestGreyPipeline:
    def test_voi_lut_is_applied_to_modality_values(self, srv, stored) -> None:
        got = _png(f"{_url(srv, stored['voi_rescale'])}/rendered")
        want = np.rint(RAMP.astype(float) * 16 * 255 / 65535).astype(int)
        assert np.abs(got - want).max() <= 1

    def test_voi_lut_output_range_is_its_descriptors(self, srv, stored) -> None:
        got = _png(f"{_url(srv, stored['voi_half'])}/rendered")
        want = np.rint(RAMP.astype(float) * 8 * 255 / 65535).astype(int)
        assert np.abs(got - want).max() <= 1
        assert got.max() <= 128

    @pytest.mark.parametrize("frame", [1, 2])
    def test_enhanced_rescale_and_frame_window(self, srv, stored, frame: int) -> None:
        got = _png(f"{_url(srv, stored['enhanced'])}/frames/{frame}/rendered")
        want = _linear_window(ENHANCED_VALUES.astype(float) - 1024, *ENHANCED_WINDOWS[frame - 1])
        assert np.abs(got - want).max() <= 1


class TestColour:
    def test_sixteen_bit_palette_keeps_its_range(self, srv, stored) -> None:
        got = _png(f"{_url(srv, stored['palette'])}/rendered")
        want = np.rint(PALETTE_INDEX.astype(float) * 256 * 255 / 65535).astype(int)
        for channel in range(3):
            assert np.abs(got[..., channel] - want).max() <= 1

    def test_sixteen_bit_rgb_keeps_its_range(self, srv, stored) -> None:
        got = _png(f"{_url(srv, stored['rgb16'])}/rendered")
        want = np.rint(RGB.astype(float) * 256 * 255 / 65535).astype(int)
        assert np.abs(got - want).max() <= 1


class TestFramesAndResources:
    def test_a_missing_frame_among_several_is_a_404(self, srv, stored) -> None:
        base = _url(srv, stored["frames"])
        multipart = {"Accept": 'multipart/related; type="image/png"'}
        r = requests.get(f"{base}/frames/1,6/rendered", headers=multipart, timeout=30)
        assert r.status_code == 404, r.status_code
        assert "frame 6" in r.json()["error"]
        r = requests.get(f"{base}/frames/1,9/thumbnail", timeout=30)
        assert r.status_code == 404
        r = requests.get(f"{base}/frames/1,5/rendered", headers=multipart, timeout=30)
        assert r.status_code == 200
        assert r.content.count(b"\x89PNG") == 2

    def test_pdf_rendered_honours_accept(self, srv, stored) -> None:
        url = f"{_url(srv, stored['pdf'])}/rendered"
        r = requests.get(url, headers={"Accept": "application/pdf"}, timeout=30)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/pdf"
        assert r.content.startswith(b"%PDF")
        r = requests.get(url, headers={"Accept": "image/png"}, timeout=30)
        assert r.status_code == 406
        assert "application/pdf" in r.json()["error"]

    @pytest.mark.parametrize("resource", ["rendered", "thumbnail"])
    def test_study_with_a_presentation_state_first_renders_an_image(
            self, srv, stored, resource: str) -> None:
        study = stored["mixed_40"].StudyInstanceUID
        got = _png(f"{srv.url}/dicomweb/studies/{study}/{resource}")
        assert got.ndim == 2 and got.max() == 255  # the image's corner, white

    @pytest.mark.parametrize("resource", ["rendered", "thumbnail"])
    def test_study_and_series_render_their_first_image(self, srv, stored,
                                                       resource: str) -> None:
        """Issue 5: the first frame for study/series (it was the middle image of the series).
        A fixed linear window keeps each instance's own grey (40, 80 or 120)."""
        series = stored["mixed_40"].SeriesInstanceUID
        study = stored["mixed_40"].StudyInstanceUID
        for url in (f"{srv.url}/dicomweb/studies/{study}/{resource}",
                    f"{srv.url}/dicomweb/studies/{study}/series/{series}/{resource}"):
            got = _png(f"{url}?window=128,256,linear")
            grey = int(got[got.shape[0] // 2, got.shape[1] // 2])
            assert abs(grey - 40) <= 2, (url, grey)

    def test_window_must_be_finite(self, srv, stored) -> None:
        base = _url(srv, stored["plain"])
        for window in ("nan,200", "100,inf", "1,2,linear,4"):
            r = requests.get(f"{base}/rendered", params={"window": window}, timeout=30)
            assert r.status_code == 400, window
            assert "window" in r.json()["error"]


class TestWadoUri:
    def _get(self, srv: ServerProcess, ds: Dataset, **params: str) -> requests.Response:
        return requests.get(f"{srv.url}/wado", params={
            "requestType": "WADO", "studyUID": ds.StudyInstanceUID,
            "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID, **params},
            timeout=30)

    def test_frame_number_past_the_last_is_a_400(self, srv, stored) -> None:
        assert self._get(srv, stored["frames"], frameNumber="5").status_code == 200
        r = self._get(srv, stored["frames"], frameNumber="6")
        assert r.status_code == 400
        assert "frameNumber" in r.json()["error"]
        assert self._get(srv, stored["plain"], frameNumber="2").status_code == 400

    def test_window_values_must_be_finite(self, srv, stored) -> None:
        r = self._get(srv, stored["plain"], windowCenter="nan", windowWidth="10")
        assert r.status_code == 400
        assert "windowCenter" in r.json()["error"]
        r = self._get(srv, stored["plain"], windowCenter="10", windowWidth="-1")
        assert r.status_code == 400
        assert "windowWidth" in r.json()["error"]

    def test_pdf_as_application_pdf(self, srv, stored) -> None:
        r = self._get(srv, stored["pdf"], contentType="application/pdf")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/pdf"
        assert r.content.startswith(b"%PDF")
        assert self._get(srv, stored["pdf"]).headers["content-type"] == "application/dicom"
