"""JPEG-LS Lossless of tiny frames (QA s22): pydicom's encoder (pyjpegls) sets aside twice a
frame's bytes for its code, which the JPEG-LS header alone outgrows for a frame of a few
pixels ("The destination buffer is too small"). A WADO-RS series asked for in JPEG-LS then
left those instances out of a 200 already under way. Frames under 256 bytes are coded with
imagecodecs' CharLS, decoded again and compared; what that path cannot code (Bits Stored
other than 8 or 16) is refused from the header, before any response starts."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from archivist.archive.transcode import TranscodeRefused, refusal, transcode_dataset

JPEG_LS = "1.2.840.10008.1.2.4.80"


def _image(photometric: str, samples: int, allocated: int, bits: int, side: int, *,
           signed: bool = False, frames: int = 1) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    rng = np.random.default_rng(side * 100 + allocated + samples)
    kind = f"<{'i' if signed else 'u'}{allocated // 8}"
    info = np.iinfo(np.dtype(kind))
    values = rng.integers(max(info.min, -(1 << (bits - 1)) if signed else 0),
                          min(info.max, (1 << (bits - 1 if signed else bits)) - 1),
                          size=side * side * samples * frames, endpoint=True)
    raw = values.astype(kind).tobytes()
    ds.PixelData = raw + b"\0" * (len(raw) % 2)
    return ds


def _pixels(ds: Dataset) -> np.ndarray:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue())).pixel_array


@pytest.mark.parametrize(("photometric", "samples", "allocated", "bits", "side", "signed",
                          "frames"), [
    ("MONOCHROME2", 1, 8, 8, 1, False, 1),
    ("MONOCHROME2", 1, 8, 8, 3, False, 1),
    ("MONOCHROME2", 1, 8, 8, 8, False, 2),
    ("MONOCHROME2", 1, 16, 16, 4, False, 1),
    ("MONOCHROME2", 1, 16, 16, 3, True, 1),
    ("RGB", 3, 8, 8, 3, False, 1),
    ("RGB", 3, 8, 8, 4, False, 3),
])
def test_tiny_frames_are_coded_and_decode_to_their_pixels(
        photometric: str, samples: int, allocated: int, bits: int, side: int, signed: bool,
        frames: int) -> None:
    ds = _image(photometric, samples, allocated, bits, side, signed=signed, frames=frames)
    before = _pixels(ds)
    assert refusal(ds, JPEG_LS) is None
    transcode_dataset(ds, JPEG_LS)
    assert ds.file_meta.TransferSyntaxUID == JPEG_LS
    assert np.array_equal(_pixels(ds), before)


def test_a_tiny_frame_of_12_bits_stored_is_refused_from_the_header() -> None:
    ds = _image("MONOCHROME2", 1, 16, 12, 4)
    assert "under 256 bytes a frame" in (refusal(ds, JPEG_LS) or "")
    with pytest.raises(TranscodeRefused, match="under 256 bytes"):
        transcode_dataset(ds, JPEG_LS)


def test_larger_frames_still_go_through_pydicom() -> None:
    ds = _image("MONOCHROME2", 1, 16, 12, 16)  # 512 bytes: pyjpegls codes it
    before = _pixels(ds)
    assert refusal(ds, JPEG_LS) is None
    transcode_dataset(ds, JPEG_LS)
    assert np.array_equal(_pixels(ds), before)
