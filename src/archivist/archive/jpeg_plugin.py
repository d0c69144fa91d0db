"""A pydicom decoder plugin for JPEG Lossless (processes 14 and 14 SV1), on imagecodecs.

pydicom's own plugins for these syntaxes are GDCM (which loads a ~30 MB C++ dictionary into
every process at ``import pydicom``, decoder or not) and the GPL libjpeg plugin. imagecodecs'
``jpeg8_decode`` (libjpeg-turbo 3, which has the lossless process) does the work here; JPEG
Baseline stays with Pillow, JPEG-LS with pyjpegls, JPEG 2000 with openjpeg, and 12-bit JPEG
Extended with the imagecodecs fallback of :mod:`archivist.web.dicomweb.pixels`.

:func:`register` adds the plugin to pydicom's decoders (idempotent); the modules that decode
pixels call it when they are imported. This module follows pydicom's plugin interface:
``DECODER_DEPENDENCIES``, ``is_available(uid)`` and ``_decode_frame(src, runner)``.
"""

from __future__ import annotations

from typing import Any

from pydicom import uid

DECODER_DEPENDENCIES = {
    uid.JPEGLossless: ("imagecodecs>=2023.1",),
    uid.JPEGLosslessSV1: ("imagecodecs>=2023.1",),
}

LABEL = "imagecodecs"


def _codec() -> Any:
    try:
        import imagecodecs
    except ImportError:
        return None
    return imagecodecs if imagecodecs.JPEG8.available else None


def is_available(tsyntax: str) -> bool:
    """True when imagecodecs (with libjpeg-turbo) is installed and `tsyntax` is ours."""
    return tsyntax in DECODER_DEPENDENCIES and _codec() is not None


def _decode_frame(src: bytes, runner: Any) -> bytes:
    """One encoded frame decoded to native bytes (pydicom's DecodeRunner reads them).

    libjpeg-turbo returns samples as unsigned integers of the frame's precision, colour by
    pixel, with no colour transform for lossless frames; signed data keeps its two's complement
    bit pattern within BitsStored, which the runner's pixel representation then interprets.
    """
    codec = _codec()
    if codec is None:  # pragma: no cover - is_available said so
        raise RuntimeError("imagecodecs with libjpeg-turbo is not installed")
    # libjpeg only warns at a premature end of data and fills the rest of the frame with grey:
    # a frame cut short must be an error, not an image. A JPEG stream ends with the EOI marker
    # (PS3.5 A.4: the last fragment may add one NUL byte of padding).
    if not src.rstrip(b"\0").endswith(b"\xff\xd9"):
        raise ValueError("the JPEG frame is truncated: it does not end with an EOI marker")
    try:
        arr = codec.jpeg8_decode(src, colorspace=None, outcolorspace=None)
    except Exception as exc:
        if "color conversion" not in str(exc).lower():
            raise
        # A frame labelled YCbCr (a JFIF marker: DCMTK's dcmcjpeg writes one for YBR_FULL):
        # libjpeg asks for a transform to RGB, which a lossless process refuses. Lossless
        # samples are kept as coded, whatever colour space they are in.
        arr = codec.jpeg8_decode(src, colorspace="YCbCr", outcolorspace="YCbCr")
    if arr.ndim == 3 and arr.shape[-1] != runner.samples_per_pixel:
        raise ValueError(f"the frame has {arr.shape[-1]} samples per pixel, the data set says "
                         f"{runner.samples_per_pixel}")
    if arr.shape[:2] != (runner.rows, runner.columns):
        raise ValueError(f"the frame is {arr.shape[1]}x{arr.shape[0]}, the data set says "
                         f"{runner.columns}x{runner.rows}")
    runner.set_option("bits_allocated", 8 * arr.dtype.itemsize)
    if runner.samples_per_pixel > 1:
        runner.set_option("planar_configuration", 0)
    if arr.dtype.byteorder == ">":  # pragma: no cover - imagecodecs returns native order
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr.tobytes()


def encode_frame(frame: bytes, rows: int, columns: int, samples: int, bits_allocated: int,
                 bits_stored: int) -> bytes:
    """One native frame (little endian, colour by pixel) as a JPEG Lossless SV1 bitstream
    (process 14, first-order prediction; valid for both JPEG Lossless syntaxes).

    The samples are coded as unsigned integers of `bits_stored` bits (2 to 16): signed data
    keeps its two's complement bit pattern, and bits above the stored ones are dropped, as
    PS3.5 8.2.1 has it. Colour is coded as it is (no colour transform: lossless). The result is
    decoded again and compared with what was coded.

    Raises
    ------
    ValueError
        A layout libjpeg's lossless process cannot carry, or a bitstream that does not decode
        to the same samples.
    """
    codec = _codec()
    if codec is None:
        raise ValueError("imagecodecs with libjpeg-turbo is not installed")
    if bits_allocated not in (8, 16) or not 2 <= bits_stored <= min(bits_allocated, 16) \
            or samples not in (1, 3):
        raise ValueError(f"JPEG Lossless cannot code {samples} samples of {bits_stored} bits "
                         f"in {bits_allocated}")
    import numpy as np

    dtype = np.dtype("u1" if bits_allocated == 8 else "<u2")
    shape = (rows, columns, samples) if samples > 1 else (rows, columns)
    count = rows * columns * samples
    if len(frame) < count * dtype.itemsize:
        raise ValueError("the frame is shorter than Rows x Columns x Samples per Pixel")
    arr = np.frombuffer(frame, dtype=dtype, count=count).reshape(shape)
    if bits_stored < 8 * dtype.itemsize:
        arr = arr & dtype.type((1 << bits_stored) - 1)
    arr = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("="))
    coded = codec.jpeg8_encode(arr, lossless=True, predictor=1, bitspersample=bits_stored,
                               **({"colorspace": "RGB", "outcolorspace": "RGB"}
                                  if samples == 3 else {}))
    back = codec.jpeg8_decode(coded, colorspace=None, outcolorspace=None)
    if back.shape != arr.shape or not np.array_equal(back, arr):
        raise ValueError("the JPEG Lossless bitstream does not decode to the frame coded")
    return bytes(coded)


def register() -> None:
    """Add the plugin to pydicom's decoders for the syntaxes above (a decoder that has it
    already is left as it is)."""
    from pydicom.pixels import get_decoder

    for tsyntax in DECODER_DEPENDENCIES:
        decoder = get_decoder(tsyntax)
        if LABEL not in decoder.available_plugins and LABEL not in getattr(
                decoder, "_unavailable", {}):
            decoder.add_plugin(LABEL, (__name__, "_decode_frame"))
