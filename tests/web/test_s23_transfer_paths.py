"""Transfer-syntax paths a QA round found wrong (s23): 1-bit frames that do not fill whole
bytes (a 17 x 13 segmentation: frame 2 was a 406); a YBR_FULL image stored as JPEG Lossless
(DCMTK's dcmcjpeg +e1: libjpeg asked for a colour transform a lossless process refuses) or RLE
(turned to RGB); lossy pixels sent in a lossless syntax without Lossy Image Compression; a
deflated data set of odd length sent without its pad byte (DCMTK's receivers abort)."""

from __future__ import annotations

import io
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space, pack_bits
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from archivist.archive import jpeg_plugin
from archivist.archive.retrieve import _padded
from archivist.archive.transcode import lossy_method, transcode_dataset
from archivist.testing.http import get, stow
from archivist.testing.server import ServerProcess

SEG_FRAMES = np.random.default_rng(7).integers(0, 2, (3, 13, 17), dtype=np.uint8)


def _base(sop_class: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = "TS1", "OT"
    return ds


def _one_bit() -> Dataset:
    ds = _base("1.2.840.10008.5.1.4.1.1.7")  # Secondary Capture
    ds.Rows, ds.Columns, ds.NumberOfFrames = 13, 17, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = ds.PixelRepresentation = 0
    ds.PixelData = pack_bits(SEG_FRAMES.ravel())
    return ds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Dataset]]:
    tmp = tmp_path_factory.mktemp("paths")
    seg = _one_bit()
    seg.save_as(tmp / "seg.dcm", enforce_file_format=True)
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    assert stow(srv.url, [(tmp / "seg.dcm").read_bytes()])[0] == 200
    yield srv, seg
    srv.stop()


@pytest.mark.parametrize("number", [1, 2, 3])
def test_one_bit_frames_across_bytes(server: tuple[ServerProcess, Dataset], number: int) -> None:
    srv, seg = server
    url = (f"{srv.url}/dicomweb/studies/{seg.StudyInstanceUID}/series/{seg.SeriesInstanceUID}"
           f"/instances/{seg.SOPInstanceUID}/frames/{number}")
    status, body = get(url, 'multipart/related; type="application/octet-stream"')
    assert status == 200, body[:200]
    status, body = get(f"{url}/rendered", "image/png")
    assert status == 200, body[:200]
    shown = np.asarray(Image.open(io.BytesIO(body)))
    assert ((shown > 127) == SEG_FRAMES[number - 1].astype(bool)).all()


def _ybr_full() -> Dataset:
    ds = _base("1.2.840.10008.5.1.4.1.1.7")
    rgb = np.random.default_rng(3).integers(30, 220, (16, 24, 3), dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 16, 24, 3
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "YBR_FULL", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = ybr.tobytes()
    return ds


def test_ybr_full_rle_keeps_its_samples() -> None:
    ds = _ybr_full()
    samples = bytes(ds.PixelData)
    ds.compress(RLELossless, generate_instance_uid=False)
    transcode_dataset(ds, ExplicitVRLittleEndian)
    assert ds.PhotometricInterpretation == "YBR_FULL" and bytes(ds.PixelData) == samples
    assert "LossyImageCompression" not in ds


def test_ybr_full_jpeg_lossless_by_dcmtk_decodes(tmp_path: Path) -> None:
    dcmcjpeg = "/usr/bin/dcmcjpeg"
    if not Path(dcmcjpeg).exists():
        pytest.skip("DCMTK needed")
    ds = _ybr_full()
    samples = bytes(ds.PixelData)
    ds.save_as(tmp_path / "n.dcm", enforce_file_format=True)
    subprocess.run([dcmcjpeg, "+e1", str(tmp_path / "n.dcm"), str(tmp_path / "j.dcm")],
                   check=True, capture_output=True, timeout=60)
    jpeg_plugin.register()
    coded = pydicom.dcmread(tmp_path / "j.dcm")
    assert coded.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    transcode_dataset(coded, ExplicitVRLittleEndian)
    assert coded.PhotometricInterpretation == "YBR_FULL" and bytes(coded.PixelData) == samples


@pytest.mark.parametrize("name, method", [
    ("SC_rgb_jpeg_dcmtk.dcm", "ISO_10918_1"),
    ("JPEGLSNearLossless_08.dcm", "ISO_14495_1"),
    ("JPEG2000.dcm", "ISO_15444_1"),
    ("MR_small_jp2klossless.dcm", None),
    ("MR_small_jpeg_ls_lossless.dcm", None),
])
def test_lossy_history_is_kept(name: str, method: str | None) -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
    assert lossy_method(ds, str(ds.file_meta.TransferSyntaxUID)) == method
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod"):
        if keyword in ds:
            delattr(ds, keyword)
    transcode_dataset(ds, ExplicitVRLittleEndian)
    if method is None:
        assert "LossyImageCompression" not in ds
    else:
        assert ds.LossyImageCompression == "01"
        assert ds.LossyImageCompressionMethod == method


def test_deflated_data_set_of_odd_length_gets_its_pad_byte() -> None:
    deflated = "1.2.840.10008.1.2.1.99"
    raw = zlib.compress(b"x" * 1000)[2:-4]
    odd = raw if len(raw) % 2 else raw + b"y"
    assert _padded(deflated, odd) == odd + b"\0"
    even = odd + b"\0"
    assert _padded(deflated, even) == even
    assert _padded(ExplicitVRLittleEndian, odd) == odd
