"""QA (big objects): WADO-RS and WADO-URI keep memory bounded whatever the object's size
(issue 10: peak RSS under 300 MB; issue 4: results stream).

Found with a 2,000-frame 250 MB multi-frame: transcoding it to big endian took 730 MB in the
worker (the object read whole, swapped, written, copied), a list of all its frames 460 MB (the
multipart body built before the first byte), a 100-byte Range of its Pixel Data read all of it;
a JPEG multi-frame without a Basic Offset Table was read whole to serve one frame, and each
frame of a list was found by reading every fragment before it (minutes for 2,000 frames);
instance metadata read a 100 MB private OB only to replace it by a BulkDataURI. Here the same
paths with a 37 MB object, against a real server, watching the worker's RSS from /proc.
"""

from __future__ import annotations

import gzip
import io
import json
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import UID

from archivist.testing.server import ServerProcess
from archivist.web.dicomweb import pixels
from archivist.web.dicomweb.jsonmodel import instance_json

pytestmark = pytest.mark.timeout(120)

ROOT = "1.2.826.0.1.3680043.8.498.771"
STUDY = ROOT + ".1"
NATIVE = (STUDY + ".1", STUDY + ".1.1")  # series, instance
FRAMES, ROWS, COLUMNS = 280, 256, 256     # 16-bit: 37 MB of Pixel Data
BIG_ENDIAN = "1.2.840.10008.1.2.2"
#: What a request may add to the worker's RSS here; before the fixes each took 40 to 130 MB.
ALLOWED_GROWTH = 25 << 20


def _dataset(series: str, sop: str, ts: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7.3")
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    ds.file_meta.TransferSyntaxUID = UID(ts)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = series
    ds.PatientID = "BIG"
    ds.PatientName = "Big^Object"
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.PixelRepresentation = 0
    return ds


def _native_pixels() -> np.ndarray:
    frames = np.arange(FRAMES, dtype=np.uint16)[:, None, None] * 7
    return (frames + np.arange(COLUMNS, dtype=np.uint16)[None, None, :]) % 4096 \
        + np.zeros((FRAMES, ROWS, COLUMNS), np.uint16)


def _jpeg_frames(count: int) -> list[bytes]:
    out = []
    for k in range(count):
        a = np.tile((np.arange(64, dtype=np.uint8) * 3)[None, :], (64, 1))
        a[k % 64, :] = 255
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _write_corpus(folder: Path) -> None:
    folder.mkdir()
    ds = _dataset(*NATIVE, "1.2.840.10008.1.2.1")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.NumberOfFrames = FRAMES
    ds.PixelData = _native_pixels().tobytes()
    ds.save_as(folder / "native.dcm", enforce_file_format=True)
    # JPEG, no Basic Offset Table, each frame in three fragments
    ds = _dataset(STUDY + ".2", STUDY + ".2.1", "1.2.840.10008.1.2.4.50")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.Rows = ds.Columns = 64
    ds.NumberOfFrames = 40
    ds.PixelData = encapsulate(_jpeg_frames(40), fragments_per_frame=3, has_bot=False)
    ds.save_as(folder / "jpeg.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("bigstudy")
    _write_corpus(base / "in")
    proc = ServerProcess(base / "data", extra_args=["--workers", "1"]).start()
    try:
        for name in ("native.dcm", "jpeg.dcm"):
            body = (b"--XX\r\nContent-Type: application/dicom\r\n\r\n"
                    + (base / "in" / name).read_bytes() + b"\r\n--XX--\r\n")
            r = requests.post(f"{proc.url}/dicomweb/studies", data=body, timeout=60, headers={
                "Content-Type": 'multipart/related; type="application/dicom"; boundary=XX'})
            assert r.status_code == 200, r.text
        # the first requests import codecs and fill caches: not what is measured
        requests.get(_url(proc, *NATIVE) + "/frames/1", timeout=30)
        requests.get(_url(proc, STUDY + ".2", STUDY + ".2.1") + "/frames/1", timeout=30,
                     headers={"Accept": "application/octet-stream"})
        yield proc
    finally:
        proc.stop()


class _PeakRss:
    """The peak RSS of a process while the block runs, sampled from /proc every 10 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _rss(self) -> int:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.01)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> int:
        return self.peak - self.base


def _parts(response: requests.Response) -> list[bytes]:
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    chunks = response.content.split(b"--" + boundary.encode())[1:-1]
    return [c.split(b"\r\n\r\n", 1)[1][:-2] for c in chunks]


def _url(server: ServerProcess, series: str, sop: str) -> str:
    return f"{server.url}/dicomweb/studies/{STUDY}/series/{series}/instances/{sop}"


def test_transcoding_a_large_object_takes_a_frame_of_memory(server: ServerProcess) -> None:
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={BIG_ENDIAN}'
    assert server.proc is not None
    with _PeakRss(server.proc.pid) as rss:
        r = requests.get(_url(server, *NATIVE), headers={"Accept": accept}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    assert rss.growth < ALLOWED_GROWTH, f"RSS grew {rss.growth >> 20} MB"
    (part,) = _parts(r)
    ds = dcmread(io.BytesIO(part))
    assert ds.file_meta.TransferSyntaxUID == BIG_ENDIAN
    assert np.array_equal(ds.pixel_array, _native_pixels())
    uri = (f"{server.url}/wado?requestType=WADO&studyUID={STUDY}&seriesUID={NATIVE[0]}"
           f"&objectUID={NATIVE[1]}&contentType=application/dicom&transferSyntax={BIG_ENDIAN}")
    with _PeakRss(server.proc.pid) as rss:
        r = requests.get(uri, timeout=60)
    assert r.status_code == 200
    assert rss.growth < ALLOWED_GROWTH, f"WADO-URI: RSS grew {rss.growth >> 20} MB"
    assert np.array_equal(dcmread(io.BytesIO(r.content)).pixel_array, _native_pixels())


def test_a_long_frame_list_streams(server: ServerProcess) -> None:
    numbers = ",".join(str(n) for n in range(1, FRAMES + 1))
    assert server.proc is not None
    with _PeakRss(server.proc.pid) as rss:
        r = requests.get(_url(server, *NATIVE) + f"/frames/{numbers}", timeout=60, headers={
            "Accept": 'multipart/related; type="application/octet-stream"'})
    assert r.status_code == 200
    assert rss.growth < ALLOWED_GROWTH, f"RSS grew {rss.growth >> 20} MB"
    parts = _parts(r)
    assert len(parts) == FRAMES
    expected = _native_pixels()
    for n in (0, 1, FRAMES - 1):
        assert parts[n] == expected[n].tobytes()


def test_a_range_of_large_bulk_data_reads_the_range(server: ServerProcess) -> None:
    assert server.proc is not None
    url = _url(server, *NATIVE) + "/bulkdata/7FE00010"
    whole = _native_pixels().tobytes()
    start = FRAMES * ROWS * COLUMNS  # the middle of the value
    with _PeakRss(server.proc.pid) as rss:
        r = requests.get(url, headers={"Range": f"bytes={start}-{start + 99}"}, timeout=60)
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{start + 99}/{len(whole)}"
    assert r.content == whole[start:start + 100]
    assert rss.growth < ALLOWED_GROWTH, f"RSS grew {rss.growth >> 20} MB"
    r = requests.get(url, headers={"Range": "bytes=-10"}, timeout=60)
    assert r.status_code == 206 and r.content == whole[-10:]
    r = requests.get(url, headers={"Range": f"bytes={len(whole)}-"}, timeout=60)
    assert r.status_code == 416
    with _PeakRss(server.proc.pid) as rss:
        r = requests.get(url, timeout=60)
    assert r.status_code == 200 and r.content == whole
    assert rss.growth < ALLOWED_GROWTH, f"whole value: RSS grew {rss.growth >> 20} MB"


def test_frames_without_an_offset_table(server: ServerProcess) -> None:
    url = _url(server, STUDY + ".2", STUDY + ".2.1")
    frames = _jpeg_frames(40)
    stored = list(generate_frames(encapsulate(frames, fragments_per_frame=3, has_bot=False),
                                  number_of_frames=40))  # each padded to an even length
    r = requests.get(url + "/frames/" + ",".join(str(n) for n in range(40, 0, -1)), timeout=60,
                     headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert r.status_code == 200
    assert _parts(r) == stored[::-1]
    r = requests.get(url + "/frames/40,2", timeout=60, headers={
        "Accept": 'multipart/related; type="application/octet-stream"'})
    assert r.status_code == 200
    last, second = _parts(r)
    assert np.array_equal(np.frombuffer(last, np.uint8).reshape(64, 64),
                          np.asarray(Image.open(io.BytesIO(frames[39]))))
    assert np.array_equal(np.frombuffer(second, np.uint8).reshape(64, 64),
                          np.asarray(Image.open(io.BytesIO(frames[1]))))
    assert requests.get(url + "/frames/41", timeout=30).status_code == 404
    # the compressed object in big endian: each frame decoded and put back, one at a time
    r = requests.get(url, timeout=60, headers={
        "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={BIG_ENDIAN}'})
    assert r.status_code == 200
    ds = dcmread(io.BytesIO(_parts(r)[0]))
    assert ds.pixel_array.shape == (40, 64, 64)


def _bytes_read() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


def test_each_frame_is_read_alone_without_an_offset_table(tmp_path: Path) -> None:
    """All the frames of an object without a Basic Offset Table (fragments spanning frames)
    are served reading the file about once, not once per frame up to it (quadratic: 2,000
    frames of a cine took 80 s as stored, 240 s decoded)."""
    ds = _dataset(STUDY + ".5", STUDY + ".5.1", "1.2.840.10008.1.2.4.50")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.Rows = ds.Columns = 64
    ds.NumberOfFrames = 200
    frames = _jpeg_frames(200)
    ds.PixelData = encapsulate(frames, fragments_per_frame=3, has_bot=False)
    path = tmp_path / "cine.dcm"
    ds.save_as(path, enforce_file_format=True)
    size = path.stat().st_size
    stored = dcmread(path)
    expected = list(generate_frames(stored.PixelData, number_of_frames=200))
    before = _bytes_read()
    info = pixels.pixel_info(path)
    assert [pixels.stored_frame(info, n) for n in range(1, 201)] == expected
    assert _bytes_read() - before < 4 * size, "frames found by reading the fragments before"
    before = _bytes_read()
    decoded = [pixels.decoded_frame(info, n) for n in range(1, 201)]
    assert _bytes_read() - before < 4 * size, "decoded frames found by reading those before"
    assert np.array_equal(np.frombuffer(decoded[6], np.uint8), stored.pixel_array[6].ravel())


@pytest.mark.parametrize("target", [BIG_ENDIAN, "1.2.840.10008.1.2", "1.2.840.10008.1.2.5",
                                    "1.2.840.10008.1.2.4.70"])
def test_by_frame_transcoding_equals_whole(tmp_path: Path, target: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The frame-by-frame path makes the object the whole-object path makes, sequences and
    binary values in the right byte order included (an odd-sized 8-bit image too)."""
    from pydicom.sequence import Sequence

    ds = _dataset(STUDY + ".3", STUDY + ".3.1", BIG_ENDIAN)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.Rows, ds.Columns, ds.NumberOfFrames = 5, 7, 3
    values = (np.arange(3 * 5 * 7, dtype=np.uint16) * 37 % 4096).reshape(3, 5, 7)
    ds.PixelData = values.astype(">u2").tobytes()
    item = Dataset()
    item.LUTDescriptor = [2, 0, 16]
    item.add_new(0x00283006, "OW", np.array([1, 258], ">u2").tobytes())
    ds.ModalityLUTSequence = Sequence([item])
    path = tmp_path / "be.dcm"
    ds.save_as(path, enforce_file_format=True, little_endian=False, implicit_vr=False)
    monkeypatch.setattr(pixels, "FRAMEWISE_ABOVE", 0)
    with pixels.transcode_file(path, target, tmp_path) as fh:
        by_frame = dcmread(fh)
    whole = dcmread(io.BytesIO(pixels.transcode(path, target)))
    assert by_frame.file_meta.TransferSyntaxUID == target
    assert np.array_equal(by_frame.pixel_array, values)
    assert np.array_equal(by_frame.pixel_array, whole.pixel_array)
    assert by_frame.ModalityLUTSequence[0].LUTData == whole.ModalityLUTSequence[0].LUTData
    assert [e.tag for e in by_frame] == [e.tag for e in whole]


def test_metadata_leaves_a_large_private_value_on_disk(tmp_path: Path) -> None:
    ds = _dataset(STUDY + ".4", STUDY + ".4.1", "1.2.840.10008.1.2.1")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.Rows = ds.Columns = 8
    ds.PixelData = bytes(64)
    block = ds.private_block(0x0029, "QA BIGSTUDY", create=True)
    block.add_new(0x10, "OB", bytes(20 << 20))
    path = tmp_path / "private.dcm"
    ds.save_as(path, enforce_file_format=True)
    tracemalloc.start()
    try:
        with open(path, "rb") as fh:
            body = instance_json(fh, "http://x", "1.2.840.10008.1.2.1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert body["00291010"] == {"vr": "OB",
                                "BulkDataURI": "http://x/bulkdata/00291010"}
    assert peak < 4 << 20, f"{peak >> 20} MB allocated"


def test_metadata_cache_keeps_one_version_of_a_series(tmp_path: Path) -> None:
    """A series viewed while it is being stored: each change makes a new version of its
    metadata, and every older one stayed in the worker's memory until 256 MB were held (a
    5,000-instance series viewed between 20 small stores took each worker from 120 to 270 MB)."""
    from archivist.archive.archive import Archive
    from archivist.archive.ingest import Origin
    from archivist.config import load_settings
    from archivist.testing.datasets import make_instance
    from archivist.web.dicomweb import wado

    archive = Archive.open(load_settings(env={}, overrides={"data_dir": tmp_path / "data"}))
    try:
        cache = wado.MetadataCache(archive)
        assert cache.max_bytes <= 64 << 20
        study, series = STUDY + ".6", STUDY + ".6.1"
        for n in range(1, 4):
            make_instance(tmp_path / f"{n}.dcm", study_uid=study, series_uid=series,
                          sop_uid=f"{series}.{n}", instance_number=n)
            archive.ingest.store_file(tmp_path / f"{n}.dcm", Origin("import"))
            (row,) = wado._series_rows(archive, study, series)
            body = cache.series_gz(int(row["series.pk"]), int(row["series.change_seq"]),
                                   study, series, "http://x/dicomweb")
            assert len(json.loads(gzip.decompress(body))) == n
            assert len(cache.templates) == 1 and len(cache.responses) == 1
        assert cache.bytes == sum(map(len, cache.templates.values())) + sum(
            map(len, cache.responses.values()))
    finally:
        archive.close()
