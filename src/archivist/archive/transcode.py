"""Re-encoding a stored data set in another transfer syntax: decompressed to native pixels,
byte order turned around (PS3.5 7.3), or compressed again. One implementation for every way an
object goes out in a syntax other than its own (WADO-RS/WADO-URI, C-MOVE/C-GET sub-operations).
"""

from __future__ import annotations

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


def twelve_bit_jpeg(header: Dataset | None) -> bool:
    """JPEG Extended with more than 8 bits: pydicom's free plugins cannot decode it (and log
    a traceback at ERROR for each attempt), so it goes to imagecodecs at once."""
    if header is None:
        return False
    meta = getattr(header, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    try:
        return ts == JPEG_EXTENDED and int(header.get("BitsStored") or 8) > 8
    except (TypeError, ValueError):
        return False


def transcode_dataset(ds: Dataset, target: str) -> None:
    """Re-encode `ds` (read with its File Meta) in `target`, in place; File Meta's Transfer
    Syntax UID is set to `target`.

    Compressed pixel data is decompressed first (YBR colour becomes RGB); between big and little
    endian, values pydicom decodes (US, SS, FL, ...) are re-encoded by the writer, and the byte
    order of OW/OL/OF/OD/OV values, which pydicom keeps as read, is swapped here (native Pixel
    Data per Bits Allocated); for an encodable `target` the pixels are compressed.

    Raises
    ------
    TranscodeRefused
        12-bit JPEG Extended (the free decoders cannot read it); Float Pixel Data to a
        compressed syntax.
    Exception
        Whatever a decoder or encoder raises.
    """
    stored = str(ds.file_meta.TransferSyntaxUID)
    if stored == target:
        return
    if twelve_bit_jpeg(ds) and "PixelData" in ds:
        raise TranscodeRefused("12-bit JPEG Extended is not transcoded by this server (its "
                               "free decoders cannot read it)")
    if target not in NATIVE_SYNTAXES and ("FloatPixelData" in ds
                                          or "DoubleFloatPixelData" in ds):
        raise TranscodeRefused("Float and Double Float Pixel Data have no encapsulated form "
                               "(PS3.5 A.4): only native transfer syntaxes carry them")
    if stored not in NATIVE_SYNTAXES and "PixelData" in ds:
        try:
            ds.decompress(generate_instance_uid=False)  # same object: its UID stays
        except ValueError:
            _decompress_from_array(ds)
        stored = str(ds.file_meta.TransferSyntaxUID)
    if (stored == EXPLICIT_BE) != (target == EXPLICIT_BE):
        _swap_byte_order(ds)
    if target in JPEG_LOSSLESS and "PixelData" in ds:
        _interleave(ds)
        _compress_jpeg_lossless(ds, target)
    elif target in ENCODABLE and "PixelData" in ds:
        _interleave(ds)
        ds.compress(UID(target), generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = UID(target)


def _compress_jpeg_lossless(ds: Dataset, target: str) -> None:
    """Native little-endian Pixel Data (colour by pixel) coded frame by frame as JPEG
    Lossless, encapsulated with a Basic Offset Table; the photometric interpretation stays (a
    lossless coding has no colour transform)."""
    from pydicom.encaps import encapsulate

    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel") or 1)
        allocated = int(ds.BitsAllocated)
        stored = int(ds.get("BitsStored") or allocated)
        high = int(ds.get("HighBit") if ds.get("HighBit") is not None else stored - 1)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise TranscodeRefused(f"the image attributes do not describe the pixels: {exc}") \
            from None
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if high != stored - 1 or photometric not in (
            "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB"):
        raise TranscodeRefused(f"JPEG Lossless is not made here from {photometric or 'pixels'} "
                               f"with High Bit {high} and Bits Stored {stored}")
    size = rows * columns * samples * allocated // 8
    raw = bytes(ds.PixelData)
    try:
        coded = [jpeg_plugin.encode_frame(raw[n * size:(n + 1) * size], rows, columns, samples,
                                          allocated, stored) for n in range(frames)]
    except ValueError as exc:
        raise TranscodeRefused(f"cannot code JPEG Lossless: {exc}") from None
    ds.PixelData = encapsulate(coded, has_bot=True)
    ds[PIXEL_DATA].VR = "OB"
    ds[PIXEL_DATA].is_undefined_length = True
    if samples > 1:
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


def swapped(raw: bytes, size: int) -> bytes:
    """`raw` with the byte order of each `size`-byte value reversed (a trailing partial value
    is left as it is)."""
    return _swapped(raw, size) if size > 1 else raw


def _swapped(raw: bytes, size: int) -> bytes:
    usable = len(raw) - len(raw) % size
    words = np.frombuffer(raw[:usable], dtype=np.dtype(f">u{size}")).byteswap().tobytes()
    return words + raw[usable:]


def _swap_values(ds: Dataset) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap_values(item)
        elif elem.tag != PIXEL_DATA and elem.VR in _WORD_SIZE and isinstance(
                elem.value, (bytes, bytearray)):
            elem.value = _swapped(bytes(elem.value), _WORD_SIZE[elem.VR])
