"""Re-encoding a stored data set in another transfer syntax: decompressed to native pixels,
byte order turned around (PS3.5 7.3), or compressed again. One implementation for every way an
object goes out in a syntax other than its own (WADO-RS/WADO-URI, C-MOVE/C-GET sub-operations).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from struct import unpack_from

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from archivist.archive import jpeg_plugin

jpeg_plugin.register()  # JPEG Lossless, which pydicom would otherwise decode with GDCM only

PIXEL_DATA = 0x7FE00010
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
NATIVE_SYNTAXES = frozenset({EXPLICIT_LE, IMPLICIT_LE, DEFLATED_LE, EXPLICIT_BE})
#: JPEG Lossless, process 14 and process 14 SV1: coded here by :mod:`.jpeg_plugin`.
JPEG_LOSSLESS = ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")
#: Syntaxes pixel data can be compressed to here (RLE, JPEG-LS lossless, JPEG 2000 lossless,
#: JPEG Lossless).
ENCODABLE = ("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
             *JPEG_LOSSLESS)
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"


class TranscodeRefused(ValueError):
    """This object is not re-encoded by this server (the message says why)."""


class _CodecAttempt(logging.Filter):
    """pydicom logs each decoder or encoder plugin that fails on a frame with its traceback at
    ERROR, and tries the next; the outcome (coded, or our refusal: a 406, a failed C-GET
    sub-operation, each with its reason) is what matters: keep one line at WARNING, without
    the traceback, so a server log shows no traceback for an image not coded."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_codec_logs() -> None:
    """Install :class:`_CodecAttempt` on pydicom's decoder and encoder loggers, and keep
    OpenJPEG's INFO ("tile number 1 / 1", a line per JPEG 2000 frame coded) out of the log
    (once per process)."""
    for name in ("pydicom.pixels.decoders.base", "pydicom.pixels.encoders.base"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _CodecAttempt) for f in target.filters):
            target.addFilter(_CodecAttempt())
    logging.getLogger("openjpeg").setLevel(logging.WARNING)


#: One frame decoded here may take at most this many bytes (Rows x Columns x Samples per
#: Pixel x Bits Allocated / 8): 4096 x 8192 at 16 bits, beyond real single images (a large
#: mammogram or radiograph is 20-40 MB).
MAX_FRAME_BYTES = 64 << 20
#: An object decoded whole (transcoded) may take at most this many bytes of pixels.
MAX_DECODE_BYTES = 256 << 20

_JPEG_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                            "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
                            "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
_J2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
                           "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93",
                           "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                           "1.2.840.10008.1.2.4.203"})
# Start of frame markers: SOF0-3, 5-7, 9-11, 13-15 (ITU T.81 B.1.1.3) and JPEG-LS SOF55
# (ITU T.87 C.2.2); markers without a length: TEM, RST0-7, SOI, EOI (T.81 B.1.1.4).
_SOF_MARKERS = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC),
                          *range(0xCD, 0xD0), 0xF7})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_J2K_SIZ = b"\xff\x4f\xff\x51"  # SOC, then SIZ (ITU T.800 A.5.1)


@dataclass(frozen=True)
class FrameGeometry:
    """What a compressed frame's own header says it decodes to."""

    rows: int
    columns: int
    samples: int
    precision: int


def frame_geometry(frame: bytes, transfer_syntax: str) -> FrameGeometry | None:
    """The size a compressed frame declares in its own header: JPEG and JPEG-LS from the
    start of frame segment (T.81 B.2.2, T.87 C.2.2), JPEG 2000 and HTJ2K from the SIZ marker
    segment (T.800 A.5.1); None for another transfer syntax.

    Raises
    ------
    TranscodeRefused
        The frame has no such header where its syntax puts it.
    """
    if transfer_syntax in _JPEG_SYNTAXES:
        return _jpeg_geometry(frame)
    if transfer_syntax in _J2K_SYNTAXES:
        at = frame.find(_J2K_SIZ, 0, 1 << 16)  # a JP2 file wraps the codestream in boxes
        if at < 0 or len(frame) < at + 4 + 38:
            raise TranscodeRefused("the frame has no JPEG 2000 SIZ marker segment")
        xsiz, ysiz, xosiz, yosiz = unpack_from(">4L", frame, at + 8)
        (csiz,) = unpack_from(">H", frame, at + 40)
        depths = frame[at + 42:at + 42 + 3 * csiz:3]
        precision = max(((d & 0x7F) + 1 for d in depths), default=0)
        return FrameGeometry(ysiz - yosiz, xsiz - xosiz, csiz, precision)
    return None


def _jpeg_segments(frame: bytes) -> Iterator[tuple[int, int]]:
    """(marker, position) of each marker segment of a JPEG or JPEG-LS frame's header after
    its SOI, up to its first start of scan (SOS) included."""
    pos, end = 2, len(frame)
    while pos + 4 <= end:
        if frame[pos] != 0xFF:
            pos += 1  # bytes between segments: decoders skip them too
            continue
        marker = frame[pos + 1]
        if marker == 0xFF:
            pos += 1  # fill byte
            continue
        if marker in _STANDALONE or marker == 0x00:
            pos += 2
            continue
        yield marker, pos
        if marker == 0xDA:
            return
        (length,) = unpack_from(">H", frame, pos + 2)
        pos += 2 + length


def _jpeg_geometry(frame: bytes) -> FrameGeometry:
    if not frame.startswith(b"\xff\xd8"):
        raise TranscodeRefused("the frame does not start with a JPEG SOI marker")
    for marker, pos in _jpeg_segments(frame):
        if marker in _SOF_MARKERS:
            if pos + 10 > len(frame):
                break
            precision, rows, columns, samples = unpack_from(">BHHB", frame, pos + 4)
            return FrameGeometry(rows, columns, samples, precision)
    # no frame header before the start of scan (or the end)
    raise TranscodeRefused("the frame has no JPEG start of frame (SOF) marker segment")


def check_frame(frame: bytes, transfer_syntax: str, ds: Dataset) -> None:
    """Refuse to decode a compressed frame whose own header disagrees with the data set's
    Rows, Columns and Samples per Pixel, or declares more bits than Bits Allocated: a decoder
    allocates what the frame says (a 16 x 16 image whose JPEG header claims 30000 x 30000
    would take gigabytes).

    Raises
    ------
    TranscodeRefused
        The frame and the data set disagree (the message says how).
    """
    geometry = frame_geometry(frame, transfer_syntax)
    if geometry is None:
        return
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel") or 1)
        allocated = int(ds.get("BitsAllocated") or 0)
    except (AttributeError, TypeError, ValueError):
        raise TranscodeRefused("Rows, Columns or Samples per Pixel is missing or not a "
                               "number") from None
    if (geometry.rows, geometry.columns, geometry.samples) != (rows, columns, samples):
        raise TranscodeRefused(
            f"the compressed frame declares {geometry.columns} x {geometry.rows} pixels of "
            f"{geometry.samples} samples, the data set {columns} x {rows} of {samples} "
            "(Columns x Rows, Samples per Pixel): not decoded")
    if allocated and geometry.precision > allocated:
        raise TranscodeRefused(
            f"the compressed frame declares {geometry.precision} bits per sample, more than "
            f"Bits Allocated ({allocated}): not decoded")


def decoded_size(ds: Dataset, frames: int = 1) -> int:
    """Bytes `frames` frames of `ds` take decoded: Rows x Columns x Samples per Pixel x
    whole bytes of Bits Allocated (0 when the data set does not say)."""
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        samples = int(ds.get("SamplesPerPixel") or 1)
        allocated = int(ds.get("BitsAllocated") or 8)
    except (TypeError, ValueError):
        return 0
    return max(rows, 0) * max(columns, 0) * max(samples, 1) * -(-max(allocated, 1) // 8) \
        * max(frames, 1)


def check_decode_size(ds: Dataset, frames: int = 1, limit: int = MAX_FRAME_BYTES) -> None:
    """Refuse to decode `frames` frames of `ds` into more than `limit` bytes.

    Raises
    ------
    TranscodeRefused
        Rows x Columns x Samples x Bits Allocated x frames passes `limit`.
    """
    size = decoded_size(ds, frames)
    if size > limit:
        what = "a frame" if frames == 1 else f"{frames} frames"
        raise TranscodeRefused(
            f"{what} of {ds.get('Columns')} x {ds.get('Rows')} pixels would take {size} bytes "
            f"decoded, more than this server decodes at once ({limit})")


def _check_before_decoding(ds: Dataset, stored: str) -> None:
    """The whole object's decoded size, then each frame's own header (see
    :func:`check_frame`), before a decoder allocates anything."""
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    check_decode_size(ds, frames, MAX_DECODE_BYTES)
    check_decode_size(ds, 1, MAX_FRAME_BYTES)
    if stored not in _JPEG_SYNTAXES and stored not in _J2K_SYNTAXES:
        return
    from pydicom.encaps import generate_frames

    try:
        for frame in generate_frames(ds.PixelData, number_of_frames=frames):
            check_frame(frame, stored, ds)
    except TranscodeRefused:
        raise
    except Exception:  # noqa: BLE001, S110 - unreadable fragments: the decoder says why
        pass


def twelve_bit_jpeg(header: Dataset | None) -> bool:
    """JPEG Extended with more than 8 bits: pydicom's free plugins cannot decode it (and log
    a traceback at ERROR for each attempt), so it goes to imagecodecs (libjpeg-turbo, 8 and
    12 bits) at once: :func:`jpeg_frame_array`."""
    if header is None:
        return False
    meta = getattr(header, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    try:
        return ts == JPEG_EXTENDED and int(header.get("BitsStored") or 8) > 8
    except (TypeError, ValueError):
        return False


_FLOAT_REFUSAL = ("Float and Double Float Pixel Data have no encapsulated form (PS3.5 A.4): "
                  "only native transfer syntaxes carry them")


def refusal(header: Dataset, target: str) -> str | None:
    """Why the object whose header is `header` is not sent in `target` by
    :func:`transcode_dataset`, judged before any pixel is read; None when nothing in the
    header stands in the way. `header` is read with its File Meta, and up to its pixel data
    element included when that may be Float Pixel Data (a native object: its value deferred).

    This is what can be told up front: the decoded size against the limits, Float Pixel Data
    to an encapsulated syntax, 12-bit JPEG Extended without a decoder, what JPEG Lossless is
    not made from, and what the encoders of the other syntaxes refuse
    (:func:`_compression_refusal`). A compressed frame whose own header disagrees with the
    data set, or a decoder or encoder failing on the pixels themselves, is only found when
    coding.
    """
    stored = str(header.file_meta.get("TransferSyntaxUID", EXPLICIT_LE))
    if stored == target:
        return None
    if target not in NATIVE_SYNTAXES and (0x7FE00008 in header or 0x7FE00009 in header):
        return _FLOAT_REFUSAL
    decode = stored not in NATIVE_SYNTAXES
    encode = target not in NATIVE_SYNTAXES
    if not (decode or encode):
        return None  # a change of byte order or VR encoding: no pixel is decoded
    try:
        frames = int(header.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    try:
        check_decode_size(header, frames, MAX_DECODE_BYTES)
        check_decode_size(header, 1, MAX_FRAME_BYTES)
    except TranscodeRefused as exc:
        return str(exc)
    if decode and twelve_bit_jpeg(header) and not _imagecodecs_jpeg():
        return "12-bit JPEG Extended is decoded with imagecodecs (libjpeg-turbo), not installed"
    if not encode or without_image(header):
        return None
    photometric = str(header.get("PhotometricInterpretation", "")).strip()
    if decode and photometric.startswith("YBR"):
        photometric = "RGB"  # decoded colour comes out RGB
    if target in JPEG_LOSSLESS:
        return _lossless_refusal(header, photometric)
    return _compression_refusal(header, photometric, target)


def without_image(header: Dataset) -> bool:
    """Whether `header` describes no image at all (an SR, a presentation state, a waveform):
    no Pixel Data and none of the Image Pixel Module's attributes. Its data set is written in
    any syntax as in Explicit VR Little Endian, as :func:`transcode_dataset` does."""
    return not any(key in header for key in ("PixelData", "Rows", "Columns", "BitsAllocated"))


def _imagecodecs_jpeg() -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.JPEG8.available)


def _lossless_refusal(ds: Dataset, photometric: str) -> str | None:
    """What keeps native pixels described by `ds` from being coded as JPEG Lossless here
    (first-order prediction of 2 to 16 bits stored, grey or RGB, the high bit at the top)."""
    try:
        samples = int(ds.get("SamplesPerPixel") or 1)
        allocated = int(ds.BitsAllocated)
        stored = int(ds.get("BitsStored") or allocated)
        high = int(ds.get("HighBit") if ds.get("HighBit") is not None else stored - 1)
    except (AttributeError, TypeError, ValueError) as exc:
        return f"the image attributes do not describe the pixels: {exc}"
    if high != stored - 1 or photometric not in (
            "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB"):
        return (f"JPEG Lossless is not made here from {photometric or 'pixels'} with High Bit "
                f"{high} and Bits Stored {stored}")
    if allocated not in (8, 16) or not 2 <= stored <= allocated or samples not in (1, 3):
        return (f"JPEG Lossless is not made here from {samples} samples of {stored} bits in "
                f"{allocated}")
    return None


#: pylibjpeg-openjpeg, pydicom's JPEG 2000 encoder, codes at most 24 bits stored.
_J2K_MAX_BITS_STORED = 24


def _compression_refusal(ds: Dataset, photometric: str, target: str) -> str | None:
    """What keeps native pixels described by `ds` (coming out `photometric`) from being coded
    in `target` (RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless) by the encoder
    :func:`transcode_dataset` calls: the encoding profiles of PS3.5 8.2 (Tables 8.2.2-1,
    8.2.3-1, 8.2.4-1) as pydicom checks them, OpenJPEG's 24 bits stored, and 8 or 16-bit
    samples for an image under 32 pixels a side (:func:`_compress_j2k_small`).

    The encoders refused these only once the pixels were decoded, the refusal as a pydicom
    ERROR with its traceback (OpenJPEG's, a RuntimeError): a C-GET sub-operation failed as an
    unreadable object, and a WADO-RS study left the instance out of a 200 already under way.
    """
    if target not in ENCODABLE or "BitsAllocated" not in ds:
        return None
    from pydicom.pixels.encoders.base import ENCODING_PROFILES

    try:
        samples = int(ds.get("SamplesPerPixel") or 1)
        allocated = int(ds.BitsAllocated)
        bits = int(ds.get("BitsStored") or allocated)
        signed = int(ds.get("PixelRepresentation") or 0)
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        return f"the image attributes do not describe the pixels: {exc}"
    # Named as pydicom's encoder names them (:func:`_encoder_refusal`).
    described = (f"pixels with Samples per Pixel: {samples}, Photometric Interpretation: "
                 f"{photometric or '(none)'}, Bits Allocated: {allocated}, Bits Stored: "
                 f"{bits}, Pixel Representation: {signed}")
    name = UID(target).name
    profiles = ENCODING_PROFILES.get(UID(target), [])
    if profiles and not any(
            photometric == p_photometric and samples == p_samples and signed in p_signed
            and allocated in p_allocated and bits in p_bits
            for p_photometric, p_samples, p_signed, p_allocated, p_bits in profiles):
        return f"{name} is not made from {described} (PS3.5 8.2)"
    if (target == JLS_LOSSLESS and rows * columns * samples * allocated // 8 < _JLS_SMALL_FRAME
            and bits != allocated):
        return (f"{name} is not made here from {described}, under {_JLS_SMALL_FRAME} bytes a "
                "frame")
    if target == J2K_LOSSLESS:
        if min(rows, columns) < _J2K_MIN_SIDE and allocated not in (8, 16):
            return f"{name} is not made here from {described}, under 32 pixels a side"
        if bits > _J2K_MAX_BITS_STORED:
            return f"{name} is not made here from {described} (at most 24 bits stored)"
    return None


def jpeg_frame_array(frame: bytes, ds: Dataset) -> np.ndarray:
    """One JPEG frame decoded with imagecodecs (libjpeg-turbo: 8 and 12-bit, lossless), the
    samples signed as Pixel Representation says (libjpeg-turbo returns them unsigned, with
    their two's complement bit pattern within Bits Stored).

    Raises
    ------
    TranscodeRefused
        imagecodecs (with libjpeg-turbo) is not installed.
    Exception
        Whatever the decoder raises on a frame it cannot read.
    """
    try:
        import imagecodecs
    except ImportError:
        raise TranscodeRefused("imagecodecs (libjpeg-turbo) is not installed") from None
    arr: np.ndarray = imagecodecs.jpeg8_decode(frame)
    allocated = int(ds.get("BitsAllocated") or 8)
    bits = int(ds.get("BitsStored") or allocated)
    if int(ds.get("PixelRepresentation") or 0) == 1 and arr.dtype.kind == "u":
        wide = arr.astype(np.int32)
        sign = 1 << (bits - 1)
        wide &= (1 << bits) - 1
        arr = ((wide ^ sign) - sign).astype(np.int16 if allocated > 8 else np.int8)
    return arr


def _decompress_jpeg_frames(ds: Dataset) -> None:
    """Native Pixel Data from JPEG frames decoded by :func:`jpeg_frame_array` (12-bit JPEG
    Extended, which pydicom's free plugins cannot read), with the attributes
    ``Dataset.decompress`` would set (colour comes out RGB, by pixel)."""
    from pydicom.encaps import generate_frames

    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel") or 1)
    allocated = int(ds.get("BitsAllocated") or 8)
    frames = int(ds.get("NumberOfFrames") or 1)
    dtype = np.dtype(f"<{'i' if int(ds.get('PixelRepresentation') or 0) else 'u'}"
                     f"{-(-allocated // 8)}")
    shape = (rows, columns, samples) if samples > 1 else (rows, columns)
    out = bytearray()
    for frame in generate_frames(ds.PixelData, number_of_frames=frames):
        arr = jpeg_frame_array(frame, ds)
        if arr.shape != shape:
            raise TranscodeRefused(f"a JPEG frame decoded to {arr.shape}, not {shape}")
        out += np.ascontiguousarray(arr, dtype=dtype).tobytes()
    if samples == 3:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    ds.PixelData = bytes(out) + (b"\0" if len(out) % 2 else b"")
    ds[PIXEL_DATA].VR = "OW" if allocated > 8 else "OB"
    ds[PIXEL_DATA].is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_LE)


def transcode_dataset(ds: Dataset, target: str) -> None:
    """Re-encode `ds` (read with its File Meta) in `target`, in place; File Meta's Transfer
    Syntax UID is set to `target`.

    Compressed pixel data is decompressed first (YBR colour becomes RGB; 12-bit JPEG Extended
    with imagecodecs, :func:`jpeg_frame_array`); between big and little endian, values pydicom
    decodes (US, SS, FL, ...) are re-encoded by the writer, and the byte
    order of OW/OL/OF/OD/OV values, which pydicom keeps as read, is swapped here (native Pixel
    Data per Bits Allocated); for an encodable `target` the pixels are compressed.

    Raises
    ------
    TranscodeRefused
        Float Pixel Data to a compressed syntax; what :func:`refusal` finds; pixels too large
        to decode here, or whose compressed header disagrees with the data set; pydicom's
        encoder refusing them (every plugin failing included).
    Exception
        Whatever a decoder raises, or an encoder otherwise.
    """
    stored = str(ds.file_meta.TransferSyntaxUID)
    if stored == target:
        return
    _known_vrs(ds)
    why = refusal(ds, target)  # before any pixel is decoded
    if why is not None:
        raise TranscodeRefused(why)
    if stored not in NATIVE_SYNTAXES and "PixelData" in ds:
        _check_before_decoding(ds, stored)
        lossy = lossy_method(ds, stored)
        if twelve_bit_jpeg(ds):
            _decompress_jpeg_frames(ds)
        else:
            # YBR_FULL stored losslessly keeps its samples (a lossless path stays exact);
            # other YBR colour comes out RGB.
            keep = str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL" and \
                stored in _LOSSLESS_AS_CODED
            try:
                ds.decompress(generate_instance_uid=False, as_rgb=not keep)
            except ValueError:
                _decompress_from_array(ds)
        if lossy is not None and str(ds.get("LossyImageCompression", "")) != "01":
            # Once lossy, always said so (PS3.3 C.7.6.1.1.5), whatever syntax it goes in now.
            ds.LossyImageCompression = "01"
            if "LossyImageCompressionMethod" not in ds:
                ds.LossyImageCompressionMethod = lossy
        stored = str(ds.file_meta.TransferSyntaxUID)
    if (stored == EXPLICIT_BE) != (target == EXPLICIT_BE):
        _swap_byte_order(ds)
    if target in JPEG_LOSSLESS and "PixelData" in ds:
        _interleave(ds)
        _compress_jpeg_lossless(ds, target)
    elif target in ENCODABLE and "PixelData" in ds:
        _interleave(ds)
        if target == J2K_LOSSLESS and min(int(ds.get("Rows") or 0),
                                          int(ds.get("Columns") or 0)) < _J2K_MIN_SIDE:
            _compress_j2k_small(ds)
        elif target == JLS_LOSSLESS and _jls_frame_bytes(ds) < _JLS_SMALL_FRAME:
            _compress_jls_small(ds)
        else:
            try:
                ds.compress(UID(target), generate_instance_uid=False)
            except (ValueError, RuntimeError) as exc:  # RuntimeError: every plugin failed
                raise TranscodeRefused(_encoder_refusal(target, exc)) from None
    else:
        ds.file_meta.TransferSyntaxUID = UID(target)


#: Lossless syntaxes whose decoders give the samples as coded (no colour transform).
_LOSSLESS_AS_CODED = frozenset({"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80",
                                "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.57",
                                "1.2.840.10008.1.2.4.70"})
#: Syntaxes whose compression is lossy, with the Lossy Image Compression Method it names
#: (PS3.3 C.7.6.1.1.5.1); JPEG-LS near-lossless and JPEG 2000 only when the stream says so.
_LOSSY_SYNTAXES = {"1.2.840.10008.1.2.4.50": "ISO_10918_1", JPEG_EXTENDED: "ISO_10918_1"}
_JLS_NEAR = "1.2.840.10008.1.2.4.81"
_J2K_ANY = "1.2.840.10008.1.2.4.91"


def lossy_method(ds: Dataset, stored: str) -> str | None:
    """The Lossy Image Compression Method of pixel data stored in `stored` when its coding
    lost information, else None: JPEG baseline and extended always; JPEG-LS near-lossless
    with a NEAR above 0 (its first scan header); JPEG 2000 with the irreversible wavelet (its
    first coding style segment)."""
    if stored in _LOSSY_SYNTAXES:
        return _LOSSY_SYNTAXES[stored]
    if stored not in (_JLS_NEAR, _J2K_ANY):
        return None
    try:
        from pydicom.encaps import generate_fragments

        fragments = generate_fragments(ds.PixelData)
        next(fragments)  # the Basic Offset Table's item
        head = bytes(next(fragments)[:4096])
    except Exception:  # noqa: BLE001 - unreadable here: the decoder says what is wrong
        return None
    if stored == _JLS_NEAR:
        if not head.startswith(b"\xff\xd8"):
            return None
        for marker, at in _jpeg_segments(head):
            if marker == 0xDA and at + 5 <= len(head):  # SOS: Ls, Ns, (Ci, Tmi) x Ns, NEAR
                near_at = at + 5 + 2 * head[at + 4]
                return "ISO_14495_1" if near_at < len(head) and head[near_at] > 0 else None
        return None
    at = head.find(b"\xff\x52")  # COD: Lcod, Scod, SGcod (4), SPcod: levels, xcb, ycb,
    #                                 style, transformation (0: the 9-7 irreversible wavelet)
    if at < 0 or at + 13 >= len(head):
        return None
    return "ISO_15444_1" if head[at + 13] == 0 else None


def _known_vrs(ds: Dataset) -> None:
    """Give standard elements stored with VR UN (as GDCM's ``gdcmconv`` writes an object it
    does not know the dictionary of) their dictionary VR, at any depth, before the object is
    re-encoded: pydicom converts an element when it is read, and writes one never read as it
    was stored, so a receiver got SOP Class UID and every other element as UN (DCMTK's
    ``storescp`` then refuses the object: no SOP Class UID it can read)."""
    for elem in ds.iterall():  # reading each element converts it (replace_un_with_known_vr)
        del elem


def _encoder_refusal(target: str, exc: Exception) -> str:
    """pydicom's encoder refusing the image attributes, or each of its plugins failing on the
    pixels, on one line: its message lists the attributes ("(0028,0100) Bits Allocated: 32")
    or the plugins' reasons ("pyjpegls: Encoding error: ...") one a line, after a heading that
    ends in a colon. A plugin failing is not the stored object being unreadable: the object is
    not sent in `target`, with the encoder's reason (a 3 x 3 RGB image to JPEG-LS, on which
    pyjpegls finds its buffer too small)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    listed = [line for line in lines if line.startswith("(")]
    if listed:
        return (f"{UID(target).name} is not made here from pixels with "
                + ", ".join(line.split(") ", 1)[-1] for line in listed))
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{UID(target).name} could not be coded here: " + "; ".join(lines[1:])
    return lines[0] if lines else f"pixel data cannot be encoded in {target}"


J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
#: pydicom's JPEG 2000 encoder (OpenJPEG) always uses 6 resolution levels, which need at least
#: 32 pixels on each side; a smaller image is coded with imagecodecs' OpenJPEG and fewer.
_J2K_MIN_SIDE = 32


def _compress_j2k_small(ds: Dataset) -> None:
    """Native little-endian Pixel Data of an image under 32 pixels on a side coded frame by
    frame as JPEG 2000 lossless (reversible 5-3, as many resolution levels as the size allows,
    no colour transform: the photometric interpretation stays), each frame decoded again and
    compared; encapsulated with a Basic Offset Table."""
    try:
        import imagecodecs
    except ImportError as exc:
        raise TranscodeRefused(f"cannot code JPEG 2000 here: {exc}") from None
    rows, columns, samples, allocated, stored, frames = _geometry(ds)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    if allocated not in (8, 16):
        raise TranscodeRefused(f"JPEG 2000 is not made here from {allocated}-bit samples")
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    shape = (rows, columns, samples) if samples > 1 else (rows, columns)
    levels = max(1, min(6, min(rows, columns).bit_length()))

    def encode(arr: np.ndarray) -> bytes:
        return bytes(imagecodecs.jpeg2k_encode(
            arr, level=0, codecformat=imagecodecs.JPEG2K.CODEC.J2K, reversible=True,
            resolutions=levels, bitspersample=stored, mct=False))

    coded = _code_frames(ds, dtype, shape, frames, encode, imagecodecs.jpeg2k_decode,
                         "JPEG 2000")
    _set_encapsulated(ds, coded, J2K_LOSSLESS)


def _code_frames(ds: Dataset, dtype: np.dtype, shape: tuple[int, ...], frames: int,
                 encode: Callable[[np.ndarray], bytes], decode: Callable[[bytes], np.ndarray],
                 name: str) -> list[bytes]:
    """Each frame of native little-endian Pixel Data (`frames` of `shape` in `dtype`) coded
    by `encode`, decoded again by `decode` and compared with the pixels it came from.

    Raises
    ------
    TranscodeRefused
        The codec failed on a frame, or a frame did not decode to its pixels.
    """
    size = int(np.prod(shape)) * dtype.itemsize
    raw = bytes(ds.PixelData)
    coded = []
    for n in range(frames):
        arr = np.frombuffer(raw[n * size:(n + 1) * size], dtype).reshape(shape)
        try:
            frame = encode(arr)
            same = np.array_equal(decode(frame), arr)
        except Exception as exc:  # noqa: BLE001 - the codec's reason
            raise TranscodeRefused(f"cannot code {name}: {exc}") from None
        if not same:
            raise TranscodeRefused(f"{name} coding of this image did not decode to its pixels")
        coded.append(bytes(frame))
    return coded


JLS_LOSSLESS = "1.2.840.10008.1.2.4.80"
#: pydicom's JPEG-LS encoder (pyjpegls) sets aside twice a frame's bytes for its code, which
#: the JPEG-LS header alone can outgrow for a tiny frame ("The destination buffer is too
#: small"); a frame under this many bytes is coded with imagecodecs' CharLS instead.
_JLS_SMALL_FRAME = 256


def _jls_frame_bytes(ds: Dataset) -> int:
    rows, columns, samples, allocated, _, _ = _geometry(ds)
    return rows * columns * samples * allocated // 8


def _compress_jls_small(ds: Dataset) -> None:
    """Native little-endian Pixel Data of frames under :data:`_JLS_SMALL_FRAME` bytes coded
    frame by frame as JPEG-LS lossless with imagecodecs (CharLS, as pydicom's encoder), each
    decoded again and compared; encapsulated with a Basic Offset Table. imagecodecs codes a
    sample in all the bits of its type, so only Bits Stored 8 or 16 is coded here (the sample
    precision of the JPEG-LS header is then Bits Stored); signed samples are coded as their
    two's complement bit pattern, as JPEG-LS keeps no sign (PS3.5 A.4.3)."""
    try:
        import imagecodecs
    except ImportError as exc:
        raise TranscodeRefused(f"cannot code JPEG-LS here: {exc}") from None
    rows, columns, samples, allocated, stored, frames = _geometry(ds)
    if allocated not in (8, 16) or stored != allocated:
        raise TranscodeRefused(f"JPEG-LS is not made here from a frame under "
                               f"{_JLS_SMALL_FRAME} bytes of {stored} bits stored in "
                               f"{allocated}")
    dtype = np.dtype(f"<u{allocated // 8}")
    shape = (rows, columns, samples) if samples > 1 else (rows, columns)
    coded = _code_frames(ds, dtype, shape, frames,
                         lambda arr: bytes(imagecodecs.jpegls_encode(arr, level=0)),
                         imagecodecs.jpegls_decode, "JPEG-LS")
    _set_encapsulated(ds, coded, JLS_LOSSLESS)


def _compress_jpeg_lossless(ds: Dataset, target: str) -> None:
    """Native little-endian Pixel Data (colour by pixel) coded frame by frame as JPEG
    Lossless, encapsulated with a Basic Offset Table; the photometric interpretation stays (a
    lossless coding has no colour transform)."""
    rows, columns, samples, allocated, stored, frames = _geometry(ds)
    why = _lossless_refusal(ds, str(ds.get("PhotometricInterpretation", "")))
    if why is not None:
        raise TranscodeRefused(why)
    size = rows * columns * samples * allocated // 8
    raw = bytes(ds.PixelData)
    try:
        coded = [jpeg_plugin.encode_frame(raw[n * size:(n + 1) * size], rows, columns, samples,
                                          allocated, stored) for n in range(frames)]
    except ValueError as exc:
        raise TranscodeRefused(f"cannot code JPEG Lossless: {exc}") from None
    _set_encapsulated(ds, coded, target)


def _geometry(ds: Dataset) -> tuple[int, int, int, int, int, int]:
    """(Rows, Columns, Samples per Pixel, Bits Allocated, Bits Stored, Number of Frames) of
    native Pixel Data to be coded frame by frame.

    Raises
    ------
    TranscodeRefused
        The image attributes are missing or not numbers.
    """
    try:
        allocated = int(ds.BitsAllocated)
        return (int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel") or 1), allocated,
                int(ds.get("BitsStored") or allocated), int(ds.get("NumberOfFrames") or 1))
    except (AttributeError, TypeError, ValueError) as exc:
        raise TranscodeRefused(f"the image attributes do not describe the pixels: {exc}") \
            from None


def _set_encapsulated(ds: Dataset, coded: list[bytes], target: str) -> None:
    """Pixel Data from frames coded one by one in `target`, encapsulated with a Basic Offset
    Table; colour is by pixel, as it was coded."""
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate(coded, has_bot=True)
    ds[PIXEL_DATA].VR = "OB"
    ds[PIXEL_DATA].is_undefined_length = True
    if int(ds.get("SamplesPerPixel") or 1) > 1:
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = UID(target)


def _interleave(ds: Dataset) -> None:
    """Native colour-by-plane pixel data (Planar Configuration 1) made colour-by-pixel, in
    place, before compression: pydicom 3.0's encoders read native bytes as colour-by-pixel,
    so an RLE made from planes held other colours (the image was lost)."""
    try:
        samples = int(ds.get("SamplesPerPixel") or 1)
        planar = int(ds.get("PlanarConfiguration") or 0)
        bits = int(ds.get("BitsAllocated") or 8)
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        return
    if samples < 2 or planar != 1 or bits not in (8, 16, 32):
        return
    dtype = np.dtype({8: "u1", 16: "<u2", 32: "<u4"}[bits])
    count = frames * samples * rows * cols
    raw = bytes(ds.PixelData)
    if len(raw) < count * dtype.itemsize:
        return  # short data: the encoder says what is wrong
    planes = np.frombuffer(raw, dtype=dtype, count=count).reshape(frames, samples, rows, cols)
    data = np.ascontiguousarray(planes.transpose(0, 2, 3, 1)).tobytes()
    ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    ds.PlanarConfiguration = 0


def _decompress_from_array(ds: Dataset) -> None:
    """Native Pixel Data from ``pixel_array``, for what ``Dataset.decompress`` trips on (pydicom
    3.0's sign correction of a JPEG 2000 whose signedness differs from Pixel Representation
    writes into a read-only array), with the attributes decompress would set."""
    arr = ds.pixel_array  # as_rgb: YBR colour comes out RGB
    samples = int(ds.get("SamplesPerPixel") or 1)
    if samples == 3:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    data = little.tobytes()
    ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    ds[PIXEL_DATA].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    ds[PIXEL_DATA].is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_LE)


# Bytes per value of the binary VRs pydicom leaves undecoded (PS3.5 Table 6.2-1).
_WORD_SIZE = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _swap_byte_order(ds: Dataset) -> None:
    """Turn the undecoded binary values of `ds` around (big <-> little endian, PS3.5 7.3).

    Native Pixel Data is swapped per value of Bits Allocated (16, 32, 64 bits); 8- and 1-bit
    data encoded as OW are 16-bit words, swapped in pairs; OB is a byte stream, left alone.
    """
    if PIXEL_DATA in ds and not getattr(ds[PIXEL_DATA], "is_undefined_length", False):
        elem = ds[PIXEL_DATA]
        size = pixel_word_size(int(ds.get("BitsAllocated") or 8), elem.VR)
        if size > 1 and isinstance(elem.value, (bytes, bytearray)):
            elem.value = _swapped(bytes(elem.value), size)
    _swap_values(ds)


def pixel_word_size(bits_allocated: int, vr: str | None) -> int:
    """Bytes per value whose order big endian reverses in native pixel data: per Bits
    Allocated (16, 32, 64 bits); 8- and 1-bit data encoded as OW are 16-bit words; OB is a
    byte stream (1)."""
    if bits_allocated in (16, 32, 64):
        return bits_allocated // 8
    return 2 if vr == "OW" else 1


def value_word_size(vr: str | None) -> int:
    """Bytes per value whose order big endian reverses in an undecoded binary value of VR
    `vr` (OW 2, OL and OF 4, OD and OV 8; 1 for OB, UN and the rest: byte streams)."""
    return _WORD_SIZE.get(vr or "", 1)


def swapped(raw: bytes, size: int) -> bytes:
    """`raw` with the byte order of each `size`-byte value reversed (a trailing partial value
    is left as it is)."""
    return _swapped(raw, size) if size > 1 else raw


def _swapped(raw: bytes, size: int) -> bytes:
    usable = len(raw) - len(raw) % size
    words = np.frombuffer(raw[:usable], dtype=np.dtype(f">u{size}")).byteswap().tobytes()
    return words + raw[usable:]


#: The VRs whose values pydicom leaves as bytes (PS3.5 Table 6.2-1).
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def swap_binary_values(ds: Dataset) -> None:
    """Turn the undecoded OW, OL, OF, OD and OV values of `ds` around (big <-> little
    endian), sequences included, Pixel Data left alone."""
    _swap_values(ds)


def _swap_values(ds: Dataset) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap_values(item)
        elif elem.tag != PIXEL_DATA and elem.VR in _WORD_SIZE and isinstance(
                elem.value, (bytes, bytearray)):
            elem.value = _swapped(bytes(elem.value), _WORD_SIZE[elem.VR])
