"""A video instance's rendered resource is its video, which is what the OHIF viewer plays.

OHIF 3.13.2 (``singlepart: 'bulkdata,video'`` in our app-config.js) puts
``.../instances/{sop}/rendered`` as the ``src`` of a ``<video>`` element for a Video
Photographic/Endoscopic/Microscopic instance; the browser asks for it with no Accept (or
``*/*``) and a ``Range: bytes=0-`` header. The archive answered 406 ("cannot decode transfer
syntax 1.2.840.10008.1.2.4.102 to render it"), so an MPEG-4 video stored in the archive never
played. PS3.18 8.7.4 (Table 8.7.4-1) gives video the rendered media types video/mpeg,
video/mp4 and video/H265: the stored stream is the rendered form. A real ``archivist serve``,
one STOW-RS, plain HTTP requests as the browser sends them.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from archivist.testing.server import ServerProcess

MPEG4_HP41 = "1.2.840.10008.1.2.4.102"
VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
#: Stands in for an MP4 file: the server never decodes it, it passes the stream on.
STREAM = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomavc1" + bytes(range(256)) * 40


def _video(path: Path) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VIDEO_PHOTOGRAPHIC
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = MPEG4_HP41
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = VIDEO_PHOTOGRAPHIC, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = "VIDEO^CLIP", "QA-VIDEO"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = \
        "20250301", "101010", "XC", 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = \
        3, "YBR_PARTIAL_420", 0
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 120, 160, 8, 8, 7
    ds.PixelRepresentation, ds.NumberOfFrames, ds.FrameTime = 0, 40, 40.0
    ds.FrameIncrementPointer = 0x00181063
    # The stream split at arbitrary bytes across fragments (PS3.5 8.2.5), after an empty BOT.
    ds.PixelData = encapsulate([STREAM[i:i + 4000] for i in range(0, len(STREAM), 4000)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return ds


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    tmp = tmp_path_factory.mktemp("video")
    ds = _video(tmp / "video.dcm")
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    try:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + (tmp / "video.dcm").read_bytes() + f"\r\n--{boundary}--\r\n".encode())
        req = urllib.request.Request(
            srv.url + "/dicomweb/studies", data=body, method="POST",
            headers={"Content-Type": f'multipart/related; type="application/dicom"; '
                                     f"boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
        instance = (f"{srv.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/"
                    f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")
        yield srv, instance
    finally:
        srv.stop()


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


@pytest.mark.parametrize("accept", [None, "*/*", "video/mp4", "video/*",
                                    "video/mp4, image/jpeg;q=0.5"])
def test_rendered_video_is_the_stream(stored: tuple[ServerProcess, str],
                                      accept: str | None) -> None:
    _, instance = stored
    status, headers, body = _get(instance + "/rendered", {"Accept": accept} if accept else {})
    assert status == 200, body[:300]
    assert headers["content-type"].split(";")[0] == "video/mp4"
    assert body == STREAM
    assert headers.get("accept-ranges") == "bytes"


def test_a_media_element_reads_it_by_range(stored: tuple[ServerProcess, str]) -> None:
    _, instance = stored
    status, headers, body = _get(instance + "/rendered", {"Range": "bytes=0-"})
    assert status == 206 and body == STREAM
    assert headers["content-range"] == f"bytes 0-{len(STREAM) - 1}/{len(STREAM)}"
    status, headers, body = _get(instance + "/rendered", {"Range": "bytes=100-199"})
    assert status == 206 and body == STREAM[100:200]
    status, headers, _ = _get(instance + "/rendered", {"Range": f"bytes={len(STREAM)}-"})
    assert status == 416


@pytest.mark.parametrize("accept", ["image/png", "video/mpeg", "application/pdf"])
def test_other_rendered_types_are_406(stored: tuple[ServerProcess, str], accept: str) -> None:
    _, instance = stored
    status, headers, body = _get(instance + "/rendered", {"Accept": accept})
    assert status == 406 and headers["content-type"].startswith("application/json")
    assert b"video/mp4" in body


@pytest.mark.parametrize("frames", ["1", "2", "40", "1,40"])
@pytest.mark.parametrize("accept", ["multipart/related; type=video/mp4",
                                    "multipart/related; type=video/mp4; transfer-syntax=*",
                                    "*/*"])
def test_frames_of_a_video_are_the_whole_stream(stored: tuple[ServerProcess, str], frames: str,
                                                accept: str) -> None:
    """A video's frames are not cut out of its stream (PS3.5 8.2.5): any frame of it is
    answered with the whole stream, one part, never a fragment (the stream was cut at 4000
    bytes) labelled video/mp4, nor a 406 for frame 4 and later."""
    _, instance = stored
    status, headers, body = _get(f"{instance}/frames/{frames}", {"Accept": accept})
    assert status == 200, body[:300]
    boundary = headers["content-type"].split("boundary=")[1].strip('"')
    parts = [p for p in body.split(b"--" + boundary.encode()) if p.strip(b"-\r\n")]
    assert len(parts) == 1, len(parts)
    head, _, content = parts[0].partition(b"\r\n\r\n")
    assert b"video/mp4" in head
    assert content.removesuffix(b"\r\n") == STREAM


def test_a_single_part_frame_of_a_video(stored: tuple[ServerProcess, str]) -> None:
    _, instance = stored
    status, headers, body = _get(f"{instance}/frames/3", {"Accept": "video/mp4"})
    assert status == 200 and headers["content-type"].startswith("video/mp4") and body == STREAM
    status, _, _ = _get(f"{instance}/frames/41", {"Accept": "video/mp4"})
    assert status == 404
    status, _, body = _get(f"{instance}/frames/1",
                           {"Accept": "multipart/related; type=application/octet-stream"})
    assert status == 406 and b"video/mp4" in body
