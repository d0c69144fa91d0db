"""Transcoding refusals found with held-out objects (QA).

An RT Dose of 32-bit pixels asked for in RLE Lossless: pydicom's encoder refuses the image
attributes with a message that lists them one a line after a heading ending in a colon; the
406 kept the heading only ("...not valid for pixel data encoded with 'RLE Lossless':"). The
refusal is now one line naming the attributes. An object without pixels passes the JPEG
Lossless check (it has nothing to encode), as it passes those of the other syntaxes.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from archivist.archive.transcode import TranscodeRefused, refusal, transcode_dataset


def _dose32() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    ds.SOPInstanceUID = generate_uid()
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4, 5, 3
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(60, dtype="<u4").tobytes()
    return ds


def test_encoder_refusal_is_one_line_naming_the_attributes() -> None:
    with pytest.raises(TranscodeRefused) as caught:
        transcode_dataset(_dose32(), str(RLELossless))
    text = str(caught.value)
    assert "\n" not in text
    assert "RLE Lossless" in text and "Bits Allocated: 32" in text


def test_object_without_pixels_passes_the_jpeg_lossless_check() -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.59"
    ds.ValueType = "CONTAINER"
    assert refusal(ds, "1.2.840.10008.1.2.4.70") is None
    assert refusal(_dose32(), "1.2.840.10008.1.2.4.70") is not None  # 32 bits: still refused
