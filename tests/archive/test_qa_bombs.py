"""Bounded inflation of deflated objects and the frame header check before decoding (QA
robustness report, B5 and B6); the server-level tests are tests/integration/test_qa_bombs_memory.py.
"""

from __future__ import annotations

import io
import os
import tracemalloc
import zlib
from pathlib import Path
from struct import pack

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info

from archivist.archive import part10
from archivist.archive.transcode import (
    MAX_FRAME_BYTES,
    TranscodeRefused,
    check_decode_size,
    check_frame,
    frame_geometry,
    transcode_dataset,
)
from archivist.testing.datasets import make_instance, pydicom_test_file

MIB = 1 << 20


def _deflate(data: bytes) -> bytes:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return squeeze.compress(data) + squeeze.flush()


def _zeros_deflated(size: int) -> bytes:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = bytes(MIB)
    return b"".join(squeeze.compress(block) for _ in range(size // MIB)) + squeeze.flush()


class TestInflate:
    @pytest.mark.parametrize("data", [b"", b"abc" * 1000, os.urandom(3 * MIB),
                                      bytes(5 * MIB) + os.urandom(100)],
                             ids=["empty", "text", "random", "zeros"])
    def test_gives_back_what_was_deflated(self, data: bytes) -> None:
        with part10.inflate(io.BytesIO(_deflate(data)), 64 * MIB) as out:
            assert out.read() == data

    def test_a_bomb_is_refused_in_bounded_memory(self) -> None:
        bomb = _zeros_deflated(300 * MIB)
        assert len(bomb) < MIB
        tracemalloc.start()
        try:
            with pytest.raises(part10.InflateRefused, match="inflates past 67108864 bytes"):
                part10.inflate(io.BytesIO(bomb), part10.inflate_limit(len(bomb)))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 * MIB, peak

    def test_a_corrupt_stream_is_refused(self) -> None:
        with pytest.raises(part10.InflateRefused, match="cannot be inflated"):
            part10.inflate(io.BytesIO(b"\xff" * 64), 64 * MIB)

    def test_the_limit(self) -> None:
        assert part10.inflate_limit(1000) == part10.INFLATE_FLOOR
        assert part10.inflate_limit(MIB) == 200 * MIB
        assert part10.inflate_limit(10 * MIB) == part10.INFLATE_CEILING == 256 * MIB
        assert part10.inflate_limit(MIB, ceiling=100 * MIB) == 100 * MIB


class TestReadStored:
    def test_a_deflated_object_reads_as_pydicom_reads_it(self) -> None:
        path = pydicom_test_file("image_dfl.dcm")
        assert path is not None
        expected = pydicom.dcmread(path)
        with open(path, "rb") as fh:
            got = part10.read_stored(fh, defer_size=256)
        assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
        # Deferred values (Pixel Data) come from the inflated temporary file.
        assert got == expected
        assert got.PixelData == expected.PixelData

    def test_a_bomb_is_refused_with_its_file_meta(self, tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "x.dcm", rows=4, columns=4)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
        meta = DicomBytesIO()
        meta.is_little_endian, meta.is_implicit_VR = True, False
        write_file_meta_info(meta, ds.file_meta)
        head = meta.getvalue()
        path = tmp_path / "bomb.dcm"
        path.write_bytes(b"\0" * 128 + b"DICM" + bytes(head) + _zeros_deflated(100 * MIB))
        with open(path, "rb") as fh, pytest.raises(part10.InflateRefused) as refused:
            part10.read_stored(fh, stop_before_pixels=True)
        assert refused.value.meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def _frame(ts: str, rows: int = 16, columns: int = 16, samples: int = 1) -> bytearray:
    import imagecodecs

    image = np.arange(rows * columns * samples, dtype=np.uint8).reshape(
        (rows, columns, samples) if samples > 1 else (rows, columns))
    if ts == "1.2.840.10008.1.2.4.50":
        return bytearray(imagecodecs.jpeg8_encode(image, level=90))
    if ts == "1.2.840.10008.1.2.4.80":
        return bytearray(imagecodecs.jpegls_encode(image, level=0))
    return bytearray(imagecodecs.jpeg2k_encode(image, level=0, codecformat="J2K"))


SYNTAXES = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"]


def _claim(frame: bytearray, ts: str, rows: int, columns: int) -> bytes:
    if ts == "1.2.840.10008.1.2.4.90":
        at = frame.index(b"\xff\x4f\xff\x51")
        frame[at + 8:at + 16] = pack(">LL", columns, rows)
    else:
        at = frame.index(b"\xff\xc0" if ts.endswith(".50") else b"\xff\xf7")
        frame[at + 5:at + 9] = pack(">HH", rows, columns)
    return bytes(frame)


class TestFrameHeader:
    @pytest.mark.parametrize("ts", SYNTAXES)
    @pytest.mark.parametrize("samples", [1, 3])
    def test_reads_what_the_encoder_wrote(self, ts: str, samples: int) -> None:
        geometry = frame_geometry(bytes(_frame(ts, 24, 40, samples)), ts)
        assert geometry is not None
        assert (geometry.rows, geometry.columns, geometry.samples, geometry.precision) == \
            (24, 40, samples, 8)

    def test_every_compressed_pydicom_file_passes(self) -> None:
        """No false refusal: pydicom's own JPEG, JPEG-LS and JPEG 2000 files (but one whose
        SIZ marker segment holds a sequence delimiter: no decoder reads it either)."""
        import glob

        import pydicom.data

        checked = 0
        shipped = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
        for name in sorted(glob.glob(f"{shipped}/**/*.dcm", recursive=True)):
            if "embedded-sequence-delimiter" in name:
                continue
            try:
                ds = pydicom.dcmread(name)
                ts = str(ds.file_meta.TransferSyntaxUID)
                frames = list(generate_frames(ds.PixelData,
                                              number_of_frames=int(ds.get("NumberOfFrames") or 1)))
            except Exception:  # noqa: BLE001, S112 - not an encapsulated image
                continue
            if frame_geometry(frames[0], ts) is None and not ts.startswith("1.2.840.10008.1.2.4"):
                continue
            for frame in frames:
                check_frame(frame, ts, ds)
                checked += 1
        assert checked > 30

    @pytest.mark.parametrize("ts", SYNTAXES)
    def test_a_frame_claiming_more_is_refused(self, ts: str, tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "x.dcm", rows=16, columns=16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        with pytest.raises(TranscodeRefused, match="declares 30000 x 12000 pixels"):
            check_frame(_claim(_frame(ts), ts, 12000, 30000), ts, ds)

    def test_other_samples_or_more_bits_are_refused(self, tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "x.dcm", rows=16, columns=16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ts = "1.2.840.10008.1.2.4.50"
        with pytest.raises(TranscodeRefused, match="of 3 samples"):
            check_frame(bytes(_frame(ts, samples=3)), ts, ds)
        frame = _frame(ts)
        at = frame.index(b"\xff\xc0")
        frame[at + 4] = 12
        with pytest.raises(TranscodeRefused, match="12 bits per sample"):
            check_frame(bytes(frame), ts, ds)

    def test_no_start_of_frame_is_refused(self) -> None:
        with pytest.raises(TranscodeRefused, match="SOI"):
            frame_geometry(b"\x00" * 64, "1.2.840.10008.1.2.4.50")
        with pytest.raises(TranscodeRefused, match="SIZ"):
            frame_geometry(b"\x00" * 64, "1.2.840.10008.1.2.4.90")


class TestTranscodeLimits:
    """Transcoding (WADO and C-GET / C-MOVE re-encoding) checks before any decoder runs."""

    def test_a_size_bomb_is_not_decoded(self, tmp_path: Path) -> None:
        ts = "1.2.840.10008.1.2.4.50"
        ds = make_instance(tmp_path / "x.dcm", rows=16, columns=16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = encapsulate([_claim(_frame(ts), ts, 12000, 12000)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = ts
        with pytest.raises(TranscodeRefused, match="12000 x 12000"):
            transcode_dataset(ds, "1.2.840.10008.1.2.1")

    def test_an_honestly_huge_frame_is_not_decoded(self, tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "x.dcm", rows=16, columns=16)
        ds.Rows = ds.Columns = 60000
        with pytest.raises(TranscodeRefused, match="more than this server decodes"):
            check_decode_size(ds, 1, MAX_FRAME_BYTES)
