"""Deflate bombs and image-size bombs: small objects that would take gigabytes to read or decode
are refused with a reason, in bounded memory (QA robustness report, B5 and B6).

A deflate bomb is a Deflated Explicit VR Little Endian object (PS3.5 A.5) of a few hundred
kilobytes whose data set inflates to hundreds of megabytes; an image-size bomb is a compressed
frame whose own header (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ) declares far more pixels than
the data set's Rows and Columns. Everything is scaled down (hundreds of megabytes, not
gigabytes), and the server's processes run under an address-space limit, so a regression
fails the test instead of taking the machine down.
"""

from __future__ import annotations

import resource
import zlib
from collections.abc import Iterator
from pathlib import Path
from struct import pack

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import generate_uid

from archivist.testing.procs import status_kb, tree
from archivist.testing.server import ServerProcess

DEFLATED = "1.2.840.10008.1.2.1.99"
SC = "1.2.840.10008.5.1.4.1.1.7"
MIB = 1 << 20
#: Each server process may map this much more than it had mapped once started: what the
#: code before the fix needed for these scaled-down bombs (0.5 to 4 GB) does not fit.
HEADROOM = 768 * MIB


# -- Objects -------------------------------------------------------------------------------------

def _image(rows: int = 16, columns: int = 16, samples: int = 1) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SC
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "BOMB^QA"
    ds.PatientID = "QABOMB"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    return ds


def _meta(ds: Dataset, ts: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1234.1"
    return meta


def deflate_bomb(path: Path, inflated: int, uids_from: Dataset | None = None) -> Dataset:
    """A 16 x 16 image in Deflated Explicit VR Little Endian whose data set inflates to about
    `inflated` bytes: a private OB of zeros before the pixel data. Written as a stream (the
    zeros are never held whole)."""
    ds = _image()
    if uids_from is not None:
        for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            setattr(ds, kw, getattr(uids_from, kw))
    head = _buffer()
    write_dataset(head, ds)
    zeros = inflated - head.tell() - 16 * 16
    zeros -= zeros % 2
    creator = b"QA BOMB "
    private = pack("<HH2sH", 0x7FD1, 0x0010, b"LO", len(creator)) + creator
    private += pack("<HH2sHL", 0x7FD1, 0x1000, b"OB", 0, zeros)
    pixels = pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 256) + bytes(range(256))
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        meta = _buffer()
        write_file_meta_info(meta, _meta(ds, DEFLATED))
        fh.write(meta.getvalue())
        fh.write(squeeze.compress(head.getvalue() + private))
        block = bytes(MIB)
        left = zeros
        while left:
            step = min(left, MIB)
            fh.write(squeeze.compress(block[:step]))
            left -= step
        fh.write(squeeze.compress(pixels))
        fh.write(squeeze.flush())
    return ds


def _buffer() -> DicomBytesIO:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False  # explicit VR little endian
    return out


def _patched_frame(ts: str, rows: int, columns: int) -> bytes:
    """A 16 x 16 grey frame compressed in `ts`, whose own header then says `rows` x `columns`."""
    import imagecodecs
    import numpy as np

    image = (np.arange(256, dtype=np.uint8).reshape(16, 16))
    if ts == "1.2.840.10008.1.2.4.50":
        frame = bytearray(imagecodecs.jpeg8_encode(image, level=90))
        marker = b"\xff\xc0"
    elif ts == "1.2.840.10008.1.2.4.80":
        frame = bytearray(imagecodecs.jpegls_encode(image, level=0))
        marker = b"\xff\xf7"
    else:
        frame = bytearray(imagecodecs.jpeg2k_encode(image, level=0, codecformat="J2K"))
        at = frame.index(b"\xff\x4f\xff\x51")
        frame[at + 8:at + 16] = pack(">LL", columns, rows)  # Xsiz, Ysiz
        frame[at + 24:at + 32] = pack(">LL", columns, rows)  # one tile: XTsiz, YTsiz
        return bytes(frame)
    at = frame.index(marker)
    frame[at + 5:at + 9] = pack(">HH", rows, columns)
    return bytes(frame)


def size_bomb(path: Path, ts: str, claimed: int, rows: int = 16) -> Dataset:
    """A Secondary Capture in `ts` whose frame header says `claimed` x `claimed` pixels while
    the data set says `rows` x `rows` (`rows` = `claimed`: an honest but huge image)."""
    ds = _image(rows, rows)
    ds.PixelData = encapsulate([_patched_frame(ts, claimed, claimed)])
    ds["PixelData"].VR = "OB"
    ds.file_meta = _meta(ds, ts)
    if ts != "1.2.840.10008.1.2.4.50":
        ds.LossyImageCompression = "00"
    ds.save_as(path, enforce_file_format=True)
    return ds


# -- Server under an address-space limit ---------------------------------------------------------

def _limit(srv: ServerProcess) -> None:
    """Cap the address space of every process of the server at what it maps now plus
    :data:`HEADROOM`: an allocation past it fails (MemoryError) instead of swapping the
    machine to death."""
    assert srv.proc is not None
    for pid in tree(srv.proc.pid):
        mapped = status_kb(pid, "VmSize") * 1024
        if mapped:
            resource.prlimit(pid, resource.RLIMIT_AS, (mapped + HEADROOM, mapped + HEADROOM))


def _peak_kb(srv: ServerProcess) -> int:
    assert srv.proc is not None
    return sum(status_kb(p, "VmHWM") for p in tree(srv.proc.pid))


@pytest.fixture
def capped(make_server) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    srv = make_server("--workers", "1")
    _limit(srv)
    yield srv


def _get(srv: ServerProcess, path: str, accept: str = "*/*") -> requests.Response:
    return requests.get(srv.url + path, headers={"Accept": accept}, timeout=300)


def _stow(srv: ServerProcess, path: Path) -> requests.Response:
    boundary = "qa-bombs-boundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode())
    return requests.post(f"{srv.url}/dicomweb/studies", data=body, timeout=300, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})


def _failure_text(response: requests.Response) -> str:
    """The failed item's reason code and comment of a STOW-RS response (PS3.18 10.5.3)."""
    failed = response.json().get("00081198", {}).get("Value", [])
    assert failed, response.text
    item = failed[0]
    return f"{item['00081197']['Value'][0]:#06x} {item.get('00000902', {}).get('Value', [''])[0]}"


def _c_store(srv: ServerProcess, path: Path) -> Dataset:
    """Send the file `path` as it is (its bytes, in its own transfer syntax) with pynetdicom;
    the C-STORE response."""
    from pynetdicom import AE, _config

    meta = pydicom.filereader.read_file_meta_info(path)
    ae = AE(ae_title="QABOMBS")
    ae.add_requested_context(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=srv.aet)
    assert assoc.is_established
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes, not parsed and encoded again
    try:
        return assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
        assoc.release()


def _blob_of(srv: ServerProcess, original: bytes) -> Path:
    """The stored file holding `original` byte for byte."""
    for path in srv.data_dir.rglob("*"):
        if path.is_file() and path.stat().st_size == len(original) \
                and path.read_bytes() == original:
            return path
    raise AssertionError("the stored object is not in the data directory")


def _pixel_urls(ds: Dataset) -> list[str]:
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    base = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    return [f"{base}/thumbnail", f"{base}/rendered", f"{base}/frames/1",
            f"/dicomweb/studies/{study}/thumbnail",
            (f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
             "&contentType=image/jpeg")]


# -- B5: deflate bombs ---------------------------------------------------------------------------

class TestDeflateBomb:
    def test_stow_refuses_it_with_a_reason_in_bounded_memory(self, capped: ServerProcess,
                                                            tmp_path: Path) -> None:
        bomb = tmp_path / "bomb.dcm"
        ds = deflate_bomb(bomb, 300 * MIB)
        assert bomb.stat().st_size < 1 * MIB
        before = _peak_kb(capped)
        r = _stow(capped, bomb)
        grown = (_peak_kb(capped) - before) // 1024
        assert r.status_code == 409, r.text  # the one part failed (PS3.18 10.5.3)
        text = _failure_text(r)
        assert "inflates past" in text, text
        assert ds.SOPInstanceUID in r.text  # named from its File Meta
        assert grown < 100, f"the server's peak memory grew by {grown} MB"
        assert "500 Internal" not in capped.log()
        # Nothing was stored.
        found = _get(capped, f"/dicomweb/studies/{ds.StudyInstanceUID}/instances")
        assert found.status_code in (204, 404) or found.json() == [], found.text

    def test_c_store_refuses_it_with_a_reason_in_bounded_memory(self, capped: ServerProcess,
                                                                tmp_path: Path) -> None:
        bomb = tmp_path / "bomb.dcm"
        deflate_bomb(bomb, 300 * MIB)
        before = _peak_kb(capped)
        status = _c_store(capped, bomb)
        grown = (_peak_kb(capped) - before) // 1024
        assert status.Status == 0xC000, status  # cannot understand
        assert "inflates past" in str(status.get("ErrorComment", ""))
        assert grown < 100, f"the server's peak memory grew by {grown} MB"

    def test_a_large_honest_deflated_object_is_stored_and_served(self, capped: ServerProcess,
                                                                 tmp_path: Path) -> None:
        """Under the limit (48 MiB inflated, the floor is 64 MiB): stored, and every pixel
        and metadata service reads it a step at a time, never whole."""
        obj = tmp_path / "large.dcm"
        ds = deflate_bomb(obj, 48 * MIB)
        before = _peak_kb(capped)
        r = _stow(capped, obj)
        assert r.status_code == 200, r.text
        for url in _pixel_urls(ds):
            got = _get(capped, url)
            assert got.status_code == 200, (url, got.status_code, got.text[:300])
        base = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}")
        meta = _get(capped, f"{base}/metadata", "application/dicom+json")
        assert meta.status_code == 200
        assert "BulkDataURI" in meta.json()[0]["7FD11000"]
        frame = _get(capped, f"{base}/frames/1", "application/octet-stream")
        assert frame.status_code == 200 and frame.content.endswith(bytes(range(256)))
        grown = (_peak_kb(capped) - before) // 1024
        assert grown < 100, f"the server's peak memory grew by {grown} MB"

    def test_a_bomb_already_stored_is_refused_by_every_reader(self, capped: ServerProcess,
                                                              tmp_path: Path) -> None:
        """An object stored before the limit existed (its file replaced here by the bomb)."""
        small = tmp_path / "small.dcm"
        ds = deflate_bomb(small, 4096)
        assert _stow(capped, small).status_code == 200
        stored = _blob_of(capped, small.read_bytes())
        deflate_bomb(stored, 300 * MIB, uids_from=ds)
        base = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}")
        before = _peak_kb(capped)
        for url in [*_pixel_urls(ds), f"{base}/metadata"]:
            got = _get(capped, url)
            assert got.status_code == 406, (url, got.status_code, got.text[:300])
            assert "inflates past" in got.text, (url, got.text[:300])
        grown = (_peak_kb(capped) - before) // 1024
        assert grown < 100, f"the server's peak memory grew by {grown} MB"


# -- B6: frames whose header declares another size -----------------------------------------------

SYNTAXES = {
    "jpeg-baseline": "1.2.840.10008.1.2.4.50",
    "jpeg-ls": "1.2.840.10008.1.2.4.80",
    "jpeg-2000": "1.2.840.10008.1.2.4.90",
}


class TestImageSizeBomb:
    @pytest.mark.parametrize("ts", list(SYNTAXES.values()), ids=list(SYNTAXES))
    def test_a_frame_claiming_another_size_is_refused(self, capped: ServerProcess,
                                                      tmp_path: Path, ts: str) -> None:
        bomb = tmp_path / "bomb.dcm"
        ds = size_bomb(bomb, ts, claimed=12000)
        assert _stow(capped, bomb).status_code == 200  # stored as received, byte for byte
        before = _peak_kb(capped)
        base = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}")
        rendered = [u for u in _pixel_urls(ds) if not u.endswith("/frames/1")]
        for url, accept in [*((u, "*/*") for u in rendered),
                            (f"{base}/frames/1", "application/octet-stream"),
                            (base, ('multipart/related; type="application/dicom"; '
                                    "transfer-syntax=1.2.840.10008.1.2.1"))]:
            got = _get(capped, url, accept)
            assert got.status_code == 406, (url, got.status_code, got.text[:300])
            assert "12000 x 12000" in got.text, (url, got.text[:300])
        grown = (_peak_kb(capped) - before) // 1024
        assert grown < 100, f"the server's peak memory grew by {grown} MB"
        # The object is still there, as stored.
        whole = _get(capped, base, 'multipart/related; type="application/dicom"; '
                                   "transfer-syntax=*")
        assert whole.status_code == 200 and bomb.read_bytes()[132:] in whole.content

    def test_an_honestly_huge_image_is_not_decoded(self, capped: ServerProcess,
                                                   tmp_path: Path) -> None:
        """Rows and Columns 12000 (144 MB decoded, the frame's header agrees): over the
        decoding budget, refused before anything is allocated."""
        bomb = tmp_path / "huge.dcm"
        ds = size_bomb(bomb, "1.2.840.10008.1.2.4.50", claimed=12000, rows=12000)
        assert _stow(capped, bomb).status_code == 200
        before = _peak_kb(capped)
        for url in _pixel_urls(ds):
            if url.endswith("/frames/1"):
                continue  # as stored
            got = _get(capped, url)
            assert got.status_code == 406, (url, got.status_code, got.text[:300])
            assert "more than this server decodes" in got.text, (url, got.text[:300])
        grown = (_peak_kb(capped) - before) // 1024
        assert grown < 100, f"the server's peak memory grew by {grown} MB"
