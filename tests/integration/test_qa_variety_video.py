"""Held-out object kinds through WADO-RS (black-box QA against a real server).

- Video (MPEG-4 AVC, PS3.5 8.2.5): the metadata names the Pixel Data as a BulkDataURI, and that
  URI answered 406 whatever the Accept header: the bulk data resource cut the stream into
  Number of Frames frames through the Basic Offset Table, which a video does not have (one
  stream for all its frames). It is now the stream, as stored (its fragments joined), as
  video/mp4, with Range (players read video by ranges).
- An object without pixels (Key Object Selection, SR, presentation state) asked for in JPEG
  Lossless was a 406 ("'FileDataset' object has no attribute 'BitsAllocated'"), while RLE,
  JPEG-LS and JPEG 2000 sent it; it is sent in that syntax too (its data set as in Explicit VR
  Little Endian, which is what a compressed syntax changes for an object without pixels).
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from archivist.testing.datasets import ORG_ROOT

MPEG4 = "1.2.840.10008.1.2.4.102"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


def _common(ds: Dataset, sop_class: str, modality: str) -> Dataset:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(prefix=ORG_ROOT)
    ds.StudyInstanceUID = generate_uid(prefix=ORG_ROOT)
    ds.SeriesInstanceUID = generate_uid(prefix=ORG_ROOT)
    ds.PatientName = "Video^Test"
    ds.PatientID = "VID1"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    return ds


def _part10(ds: Dataset, syntax: str) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _video(stream: bytes) -> Dataset:
    """A Video Photographic Image of 30 frames: one fragment holding the whole stream."""
    ds = _common(Dataset(), "1.2.840.10008.5.1.4.1.1.77.1.4.1", "XC")
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = 30
    ds.FrameTime = 33.33
    ds.FrameIncrementPointer = 0x00181063
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    return ds


def _key_objects() -> Dataset:
    ds = _common(Dataset(), "1.2.840.10008.5.1.4.1.1.88.59", "KO")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    return ds


def _stow(base: str, *parts: bytes) -> None:
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + p + b"\r\n" for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    req = urllib.request.Request(
        f"{base}/dicomweb/studies", data=body, method="POST",
        headers={"Content-Type": f'multipart/related; type="application/dicom"; '
                                 f"boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200, r.read()


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _instance_url(base: str, ds: Dataset) -> str:
    return (f"{base}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from archivist.testing.server import ServerProcess

    stream = b"\x00\x00\x00\x01\x67\x42\x00\x0a" + bytes(range(256)) * 40 + b"\x01"
    video, kos = _video(stream), _key_objects()
    srv = ServerProcess(Path(tmp_path_factory.mktemp("variety")) / "data",
                        extra_args=["--workers", "1"]).start()
    try:
        _stow(srv.url, _part10(video, MPEG4), _part10(kos, "1.2.840.10008.1.2.1"))
        yield srv.url, video, stream + b"\x00", kos  # the fragment is padded to even length
    finally:
        srv.stop()


def test_video_bulk_data_uri_gives_the_stream(stored) -> None:  # type: ignore[no-untyped-def]
    base, video, stream, _ = stored
    status, _, body = _get(f"{_instance_url(base, video)}/metadata")
    assert status == 200
    uri = json.loads(body)[0]["7FE00010"]["BulkDataURI"]
    for accept in ("*/*", "video/mp4"):
        status, headers, got = _get(uri, Accept=accept)
        assert status == 200, got[:200]
        assert headers["content-type"].startswith("video/mp4")
        assert got == stream
    status, headers, got = _get(uri, Range="bytes=8-107")
    assert status == 206
    assert headers["content-range"] == f"bytes 8-107/{len(stream)}"
    assert got == stream[8:108]


def test_object_without_pixels_in_jpeg_lossless(stored) -> None:  # type: ignore[no-untyped-def]
    base, _, _, kos = stored
    status, _, body = _get(_instance_url(base, kos),
                           Accept=f"application/dicom; transfer-syntax={JPEG_LOSSLESS_SV1}")
    assert status == 200, body[:300]
    got = pydicom.dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == JPEG_LOSSLESS_SV1
    assert got.SOPInstanceUID == kos.SOPInstanceUID
    assert got.ValueType == "CONTAINER"
