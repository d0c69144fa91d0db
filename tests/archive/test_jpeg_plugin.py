"""JPEG Lossless decoding without GDCM: the imagecodecs plugin gives back exactly the pixels
DCMTK's ``dcmcjpeg`` compressed (signed, 12-bit, colour, several frames, both processes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import archivist.archive.transcode  # noqa: F401 - registers the plugin, as the server does
from archivist.archive import jpeg_plugin


def _dcmcjpeg() -> str:
    venv_bin = os.path.dirname(sys.executable)
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and os.path.abspath(d) != venv_bin]
    found = shutil.which("dcmcjpeg", path=os.pathsep.join(dirs))
    if found is None:
        pytest.fail("dcmcjpeg (DCMTK) is required: apt-get install dcmtk")
    return found


def _ct_signed_16() -> tuple[Dataset, np.ndarray]:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    return ds, ds.pixel_array.copy()


def _ct_with(arr: np.ndarray, **attrs: Any) -> tuple[Dataset, np.ndarray]:
    """CT_small's header around the pixels `arr`, with `attrs` set and no rescale."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.RescaleIntercept, ds.RescaleSlope
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.PixelData = arr.tobytes()
    return ds, arr


def _ct_signed_12() -> tuple[Dataset, np.ndarray]:
    pixels = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    arr = np.clip(pixels.astype(np.int32) - 1500, -2048, 2047).astype(np.int16)
    assert arr.min() < 0
    return _ct_with(arr, BitsStored=12, HighBit=11)


def _rgb_8() -> tuple[Dataset, np.ndarray]:
    arr = np.random.default_rng(7).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    return _ct_with(arr, Rows=32, Columns=48, SamplesPerPixel=3, PhotometricInterpretation="RGB",
                    PlanarConfiguration=0, BitsAllocated=8, BitsStored=8, HighBit=7,
                    PixelRepresentation=0)


def _two_frames_unsigned() -> tuple[Dataset, np.ndarray]:
    arr = np.random.default_rng(3).integers(0, 65536, (2, 16, 24), dtype=np.uint16)
    return _ct_with(arr, Rows=16, Columns=24, NumberOfFrames=2, BitsStored=16, HighBit=15,
                    PixelRepresentation=0)


CASES = {"signed16": _ct_signed_16, "signed12": _ct_signed_12, "rgb8": _rgb_8,
         "frames2": _two_frames_unsigned}


@pytest.mark.parametrize("process", ["+e1", "+el"])  # 14 SV1 (.70), 14 (.57)
@pytest.mark.parametrize("case", sorted(CASES))
def test_lossless_frames_decode_to_the_pixels_that_were_compressed(
        tmp_path: Path, case: str, process: str) -> None:
    ds, expected = CASES[case]()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    native, compressed = tmp_path / "native.dcm", tmp_path / "jpeg.dcm"
    ds.save_as(native, enforce_file_format=True)
    subprocess.run([_dcmcjpeg(), process, str(native), str(compressed)], check=True)
    jpeg = pydicom.dcmread(compressed)
    assert jpeg.file_meta.TransferSyntaxUID == (
        "1.2.840.10008.1.2.4.70" if process == "+e1" else "1.2.840.10008.1.2.4.57")

    # With no plugin named (what the server does), pydicom picks ours: GDCM is not installed.
    got = pixel_array(jpeg)
    assert got.dtype == expected.dtype
    assert np.array_equal(got, expected)
    # A single frame, as the WADO-RS frame route reads it.
    frame = pixel_array(str(compressed), index=0, decoding_plugin=jpeg_plugin.LABEL)
    assert np.array_equal(frame, expected[0] if case == "frames2" else expected)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_frame_cut_short_is_an_error_not_grey_pixels(tmp_path: Path, keep: float) -> None:
    ds, _ = _ct_signed_16()
    native, compressed = tmp_path / "native.dcm", tmp_path / "jpeg.dcm"
    ds.save_as(native, enforce_file_format=True)
    subprocess.run([_dcmcjpeg(), "+e1", str(native), str(compressed)], check=True)
    jpeg = pydicom.dcmread(compressed)
    frame = next(generate_frames(jpeg.PixelData, number_of_frames=1))
    jpeg.PixelData = encapsulate([frame[:int(len(frame) * keep)]])
    # libjpeg alone decodes it, with the missing part grey.
    assert imagecodecs.jpeg8_decode(frame[:int(len(frame) * keep)]).shape == (128, 128)
    with pytest.raises(RuntimeError, match="EOI"):  # pydicom wraps the plugin's ValueError
        pixel_array(jpeg, decoding_plugin=jpeg_plugin.LABEL)


def test_the_plugin_claims_only_jpeg_lossless() -> None:
    assert jpeg_plugin.is_available("1.2.840.10008.1.2.4.70")
    assert jpeg_plugin.is_available("1.2.840.10008.1.2.4.57")
    assert not jpeg_plugin.is_available("1.2.840.10008.1.2.4.50")  # Pillow decodes baseline
    assert not jpeg_plugin.is_available("1.2.840.10008.1.2.4.80")  # pyjpegls decodes JPEG-LS


def _dcmdjpeg() -> str:
    return _dcmcjpeg().replace("dcmcjpeg", "dcmdjpeg")


@pytest.mark.parametrize("target", ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_encoded_here_dcmtk_decodes_the_same_pixels(tmp_path: Path, case: str,
                                                    target: str) -> None:
    """Transcoding to JPEG Lossless (a C-GET requestor that accepted only it, `getscu +xs`;
    WADO-RS with that transfer syntax): DCMTK's ``dcmdjpeg`` gives back the pixels coded."""
    from archivist.archive.transcode import transcode_dataset

    ds, expected = CASES[case]()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    transcode_dataset(ds, target)
    assert ds.file_meta.TransferSyntaxUID == target
    compressed, plain = tmp_path / "jpeg.dcm", tmp_path / "plain.dcm"
    ds.save_as(compressed, enforce_file_format=True)
    subprocess.run([_dcmdjpeg(), str(compressed), str(plain)], check=True)
    assert np.array_equal(pydicom.dcmread(plain).pixel_array, expected)
    assert np.array_equal(pixel_array(str(compressed)), expected)  # and our own decoder


def test_what_jpeg_lossless_cannot_carry_is_refused() -> None:
    from archivist.archive.transcode import TranscodeRefused, transcode_dataset

    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))  # 32 bits allocated
    with pytest.raises(TranscodeRefused, match="32 bits"):
        transcode_dataset(ds, "1.2.840.10008.1.2.4.70")
    ds, _ = _ct_signed_12()
    ds.HighBit = 15  # bits stored 12 but high bit 15: not a layout coded here
    with pytest.raises(TranscodeRefused, match="High Bit"):
        transcode_dataset(ds, "1.2.840.10008.1.2.4.70")
