"""What the encoders refuse is told from the header (QA s20), for every way an object goes out
re-encoded: :func:`refusal` before the pixels are read, :func:`transcode_dataset` before they
are decoded. A 32-bit RGB image to JPEG 2000 Lossless was decoded, then OpenJPEG refused it
(more than 24 bits stored) with a RuntimeError, not a :class:`TranscodeRefused`.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from archivist.archive.transcode import (
    TranscodeRefused,
    _encoder_refusal,
    refusal,
    transcode_dataset,
)

RLE, JPEG_LS, J2K = "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"


def _image(photometric: str, samples: int, allocated: int, bits: int, *, side: int = 40,
           stored: str = ExplicitVRLittleEndian) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = stored
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits, bits - 1
    ds.PixelRepresentation = 0
    values = side * side * samples
    if allocated == 1:
        ds.PixelData = bytes(-(-values // 8) + (-(-values // 8)) % 2)
    else:
        raw = (np.arange(values) % (1 << min(bits, 16))).astype(f"<u{allocated // 8}")
        ds.PixelData = raw.tobytes()
    return ds


@pytest.mark.parametrize(("ds", "target", "why"), [
    (_image("MONOCHROME2", 1, 1, 1), RLE, "PS3.5 8.2"),
    (_image("MONOCHROME2", 1, 1, 1), J2K, "PS3.5 8.2"),
    (_image("RGB", 3, 32, 32), J2K, "at most 24 bits stored"),
    (_image("MONOCHROME2", 1, 32, 32), JPEG_LS, "Bits Allocated: 32"),
    (_image("MONOCHROME2", 1, 32, 24, side=16), J2K, "under 32 pixels a side"),
    (_image("YBR_FULL_422", 3, 8, 8), RLE, "Photometric Interpretation: YBR_FULL_422"),
])
def test_what_the_encoder_refuses_is_told_before_decoding(ds: Dataset, target: str,
                                                          why: str) -> None:
    assert why in (refusal(ds, target) or "")
    with pytest.raises(TranscodeRefused, match=why):
        transcode_dataset(ds, target)


@pytest.mark.parametrize(("ds", "target"), [
    (_image("MONOCHROME2", 1, 32, 24), J2K),  # 24 bits stored: OpenJPEG codes it
    (_image("RGB", 3, 16, 16), RLE),
    (_image("MONOCHROME2", 1, 16, 12, side=16), J2K),  # imagecodecs
    (_image("MONOCHROME2", 1, 8, 8), JPEG_LS),
])
def test_what_the_encoder_codes_is_not_refused(ds: Dataset, target: str) -> None:
    assert refusal(ds, target) is None
    transcode_dataset(ds, target)
    assert ds.file_meta.TransferSyntaxUID == target


def test_decoded_colour_is_judged_as_it_comes_out() -> None:
    """YBR stored compressed is decoded to RGB: RLE takes RGB of 16 bits, not YBR_FULL."""
    ds = _image("YBR_FULL", 3, 16, 16, stored=RLELossless)
    assert refusal(ds, JPEG_LS) is None
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # native: YBR_FULL stays
    assert "PS3.5 8.2" in (refusal(ds, RLE) or "")


def test_codec_logs_are_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """pydicom's ERROR with a traceback for a plugin that failed is one WARNING line;
    OpenJPEG's INFO line per frame coded is not logged."""
    import logging

    from archivist.archive.transcode import quiet_codec_logs

    names = ("pydicom.pixels.encoders.base", "pydicom.pixels.decoders.base")
    quiet_codec_logs()
    installed = [len(logging.getLogger(name).filters) for name in names]
    quiet_codec_logs()  # once per process: a second call adds nothing
    assert [len(logging.getLogger(name).filters) for name in names] == installed
    for name in names:
        try:
            raise RuntimeError("Encoding error: The destination buffer is too small")
        except RuntimeError:
            logging.getLogger(name).exception("pyjpegls failed")  # as pydicom logs a plugin's
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)] * 2
    assert not logging.getLogger("openjpeg.encode").isEnabledFor(logging.INFO)


def test_an_encoder_failing_on_the_pixels_is_a_refusal_with_its_reason() -> None:
    """Every plugin of pydicom's encoder failing (its RuntimeError, the plugins' reasons one a
    line after a heading) is a refusal naming them, on one line, as the profiles' refusals
    are. (pyjpegls failed so on a 3 x 3 RGB image; such tiny frames are now coded with
    imagecodecs: tests/archive/test_transcode_jls_small.py.)"""
    exc = RuntimeError("Unable to encode as exceptions were raised by all the available "
                       "plugins:\n  pyjpegls: Encoding error: The destination buffer is too "
                       "small to hold all the output\n")
    text = _encoder_refusal(JPEG_LS, exc)
    assert "\n" not in text
    assert text == ("JPEG-LS Lossless Image Compression could not be coded here: pyjpegls: "
                    "Encoding error: The destination buffer is too small to hold all the "
                    "output"), text
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))
    before = ds.pixel_array.copy()
    assert refusal(ds, JPEG_LS) is None
    transcode_dataset(ds, JPEG_LS)
    assert np.array_equal(ds.pixel_array, before)
