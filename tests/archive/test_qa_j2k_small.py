"""JPEG 2000 lossless of an image under 32 pixels on a side: pydicom's encoder (OpenJPEG, six
resolution levels) failed ("Number of resolutions is too high in comparison to the size of
tiles"), so C-GET with getscu +xv lost such objects and WADO-RS answered 406. It is coded with
fewer levels now; pydicom decodes it to the same pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from archivist.archive.transcode import transcode_dataset
from archivist.testing.datasets import make_instance


@pytest.mark.parametrize("rows, columns, samples, bits, signed", [
    (16, 12, 1, 12, False),   # the bench's tiny size
    (20, 20, 1, 16, True),
    (10, 8, 3, 8, False),     # RGB
    (31, 64, 1, 8, False),
    (1, 1, 1, 16, False),
])
def test_a_small_image_is_coded_losslessly(tmp_path: Path, rows: int, columns: int,
                                           samples: int, bits: int, signed: bool) -> None:
    path = tmp_path / "small.dcm"
    ds = make_instance(path, rows=rows, columns=columns)
    rng = np.random.default_rng(rows * columns)
    allocated = 16 if bits > 8 else 8
    if signed:
        arr = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (rows, columns)).astype(np.int16)
    else:
        shape = (rows, columns, samples) if samples > 1 else (rows, columns)
        arr = rng.integers(0, 2 ** bits, shape).astype(np.uint16 if allocated == 16
                                                       else np.uint8)
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits, bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = arr.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    transcode_dataset(ds, "1.2.840.10008.1.2.4.90")
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    got = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert np.array_equal(got.pixel_array, arr)
