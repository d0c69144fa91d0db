"""Pixel work for WADO: frames as stored or decoded, transcoding, and rendering to JPEG/PNG.

Frames are cut from the stored file without reading the rest of the pixel data: native frames
by offset, encapsulated frames through the Basic (or Extended) Offset Table. Decoding happens
only when the client cannot take the stored encoding.
"""

from __future__ import annotations

import functools
import io
import logging
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.filereader import read_file_meta_info
from pydicom.pixels import apply_modality_lut, get_decoder, get_encoder, pixel_array
from pydicom.uid import UID

from archivist.archive import jpeg_plugin, part10
from archivist.archive.transcode import (
    BINARY_VRS,
    ENCODABLE,
    JPEG_EXTENDED,
    JPEG_LOSSLESS,
    MAX_DECODE_BYTES,
    MAX_FRAME_BYTES,
    TranscodeRefused,
    check_decode_size,
    check_frame,
    frame_geometry,
    jpeg_frame_array,
    pixel_word_size,
    refusal,
    swap_binary_values,
    swapped,
    transcode_dataset,
    twelve_bit_jpeg,
)
from archivist.web.dicomweb.common import (
    DEFLATED_LE,
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    NATIVE_SYNTAXES,
)
from archivist.web.errors import HTTPProblem

log = logging.getLogger("archivist.web")

PIXEL_DATA = 0x7FE00010
#: Pixel Data, then Float and Double Float Pixel Data (PS3.3 C.7.6.3, C.7.6.24): the first found
#: holds the frames.
PIXEL_TAGS = (PIXEL_DATA, 0x7FE00008, 0x7FE00009)

_F = TypeVar("_F", bound=Callable[..., Any])

#: A rendered frame larger than this many pixels is sampled down to about twice the viewport
#: before its values are turned to grey levels (a float copy of every pixel).
_RENDER_SAMPLE_ABOVE = 4 << 20


class RenderBudget:
    """The memory the frames being rendered at once in this process may take: a render waits
    (it is not refused) until the ones before it leave room, so a burst of full-size renders
    of large frames is served one or two at a time, not all in memory together. A frame
    larger than the whole budget goes alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = threading.Condition()

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        size = max(0, min(size, self.limit))
        with self._room:
            while self.used and self.used + size > self.limit:
                self._room.wait()
            self.used += size
        try:
            yield
        finally:
            with self._room:
                self.used -= size
                self._room.notify_all()


#: Rendering one frame takes about the decoded frame, a float32 copy and the 8-bit result
#: (:func:`_render_cost`); renders share this much per process.
RENDER_BUDGET = RenderBudget(384 << 20)


def _render_cost(ds: Dataset) -> int:
    """Bytes rendering one frame of `ds` takes at most: the decoded samples, then a float32
    and an 8-bit copy of each (the colour paths take no more)."""
    try:
        pixels = int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0)
        samples = int(ds.get("SamplesPerPixel") or 1)
        allocated = max(1, int(ds.get("BitsAllocated") or 8) // 8)
    except (TypeError, ValueError):
        return 0
    return pixels * samples * (allocated + 5)


def read_stored(fh: BinaryIO, *, whole: bool = False, **kwargs: Any) -> Dataset:
    """A stored object read as ``pydicom.dcmread(fh, **kwargs)`` would, a deflated one
    inflated a step at a time (:func:`archivist.archive.part10.read_stored`), and refused with
    a 406 past its limit. `whole`: every value is read into memory, so a deflated data set
    may inflate to :data:`MAX_DECODE_BYTES` at most."""
    try:
        return part10.read_stored(fh, ceiling=MAX_DECODE_BYTES if whole else None, **kwargs)
    except part10.InflateRefused as exc:
        raise HTTPProblem(406, f"this instance is not read here: {exc}") from None


def encapsulated_document(path: Path) -> bytes:
    """The document an Encapsulated Document instance (a PDF...) holds, as it was encapsulated:
    the value of Encapsulated Document (0042,0011) without the byte that pads it to an even
    length when Encapsulated Document Length (0042,0015), the length without that padding
    (PS3.3 C.24.2), says so. A length that disagrees otherwise is not trusted."""
    with open(path, "rb") as fh:
        ds = read_stored(fh, whole=True)
    doc = bytes(ds.EncapsulatedDocument)
    try:
        length = int(ds.get("EncapsulatedDocumentLength"))
    except (TypeError, ValueError):
        return doc
    return doc[:length] if len(doc) - length == 1 else doc


def _stored_path(args: tuple[Any, ...]) -> str:
    """The stored file a pixel function was called on (its first argument: a path or a
    :class:`PixelInfo`), for the log: the blob's own name, never a UID or client text."""
    first = args[0] if args else None
    path = getattr(first, "path", first)
    return str(path) if isinstance(path, Path) else "?"


def _unreadable_is_406(fn: _F) -> _F:
    """Pixel data or an image description that pydicom or a decoder cannot make sense of (a
    Pixel Data shorter than Rows x Columns says, Number of Frames '1A', ...) is a 406 with the
    reason, not a 500: the object is as it was stored, this server cannot turn it into pixels.
    Failures to read the file itself (OSError) stay server errors."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (HTTPProblem, OSError, MemoryError):
            raise
        except TranscodeRefused as exc:
            raise HTTPProblem(406, f"the pixel data of this instance is not decoded here: "
                              f"{exc}") from None
        except Exception as exc:  # noqa: BLE001 - decoders fail in many ways on bad data
            log.warning("%s: pixel data of %s unreadable: %s", fn.__name__,
                        _stored_path(args), type(exc).__name__)
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise HTTPProblem(406, f"the pixel data of this instance cannot be read: "
                              f"{reason}") from None

    return wrapper  # type: ignore[return-value]


@dataclass
class PixelInfo:
    """What is needed to cut frames out of a stored file."""

    path: Path
    transfer_syntax: str
    frames: int
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    value_tell: int
    encapsulated: bool
    extended_offsets: tuple[bytes, bytes] | None
    header: Dataset
    in_memory: bytes | None = None
    pixel_vr: str | None = None
    #: The inflated data set of a deflated object (``value_tell`` is a position in it).
    inflated: BinaryIO | None = None
    #: Where each frame's fragments are (:func:`_frame_spans`; [] when not used), found once.
    spans: list[list[tuple[int, int]]] | None = None
    #: The length of a native Pixel Data value read from the file at ``value_tell`` (None:
    #: not known, or the value is ``in_memory``): a frame past it is not in the stored data.
    value_length: int | None = None

    @property
    def frame_bytes(self) -> int:
        samples = self.samples
        if str(self.header.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
            samples = 2  # PS3.3 C.7.6.3.1.2: native 4:2:2 keeps two samples per pixel
        return self.rows * self.columns * samples * self.bits_allocated // 8

    def past_value(self, number: int) -> bool:
        """Whether native frame `number` ends past the stored Pixel Data value (its length
        known, :attr:`value_length`): what follows the value in the file (trailing
        padding...) is no pixel. Frames of fewer than 8 bits a sample are packed, rounded up
        to a whole byte."""
        if self.value_length is None:
            return False
        if self.bits_allocated % 8 == 0:
            end = number * self.frame_bytes
        else:
            bits = number * self.rows * self.columns * self.samples * self.bits_allocated
            end = -(-bits // 8)
        return end > self.value_length


@_unreadable_is_406
def pixel_info(path: Path) -> PixelInfo:
    """Read the header of a stored file and where its Pixel Data value starts."""
    encapsulated = _encapsulated_info(path)
    if encapsulated is not None:
        return encapsulated
    with open(path, "rb") as fh:
        ds = read_stored(fh, defer_size=256)
        ts = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_LE))
        tag = next((t for t in PIXEL_TAGS if t in ds), None)
        if tag is None:
            raise HTTPProblem(404, "this instance has no pixel data (no frames)")
        # A deflated object's deferred values are positions in its inflated data set, which
        # the data set keeps open: frames are cut from it, the value is not loaded whole.
        inflated = ds.buffer if ts == DEFLATED_LE else None
        # keep_deferred: pydicom 3 would otherwise read the whole value, and the frames of a
        # native object would then be decoded instead of cut from the file.
        raw = ds.get_item(tag, keep_deferred=True)
        in_memory = None
        tell = -1
        length = None
        if isinstance(raw, RawDataElement):
            if raw.value is not None:
                in_memory = raw.value  # undefined length (encapsulated) values are read at once
            else:
                tell, length = raw.value_tell, raw.length
        else:
            in_memory = raw.value
        ext = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            ext = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        return PixelInfo(
            path=path, transfer_syntax=ts, frames=int(ds.get("NumberOfFrames") or 1),
            rows=int(ds.get("Rows") or 0), columns=int(ds.get("Columns") or 0),
            samples=int(ds.get("SamplesPerPixel") or 1),
            bits_allocated=int(ds.get("BitsAllocated") or 8),
            value_tell=tell, in_memory=in_memory,
            encapsulated=ts not in NATIVE_SYNTAXES,
            extended_offsets=ext, header=ds, pixel_vr=raw.VR, inflated=inflated,
            value_length=length,
        )


def _encapsulated_info(path: Path) -> PixelInfo | None:
    """The layout of an object stored in an encapsulated (compressed) syntax, its header read
    up to the Pixel Data: pydicom would read through the whole undefined length value to find
    its end (all of a 1 GB cine read from disk to serve one frame). None for anything else
    (native, deflated, an unusual layout): :func:`pixel_info` reads it as before."""
    try:
        with open(path, "rb") as fh:
            # The File Meta walked by part10 (pydicom's parse of it was ~15 % of the CPU of a
            # frame request); pydicom's reader where the walk cannot tell.
            ts = part10.peek_syntax(fh) or str(
                read_file_meta_info(path).get("TransferSyntaxUID", "")).strip("\0 ")
    except Exception:  # noqa: BLE001 - the general path says what is wrong with it
        return None
    if not ts or ts in NATIVE_SYNTAXES:
        return None
    with open(path, "rb") as fh:
        ds = read_stored(fh, stop_before_pixels=True, defer_size=256)
        head = fh.read(12)  # pydicom stops at the start of the Pixel Data element
        value_tell = fh.tell()
    if len(head) != 12 or head[8:12] != b"\xff\xff\xff\xff":
        return None
    group, element = struct.unpack("<HH", head[:4])
    if (group << 16 | element) != PIXEL_DATA:
        return None
    ext = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        ext = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    return PixelInfo(
        path=path, transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", ts)),
        frames=int(ds.get("NumberOfFrames") or 1), rows=int(ds.get("Rows") or 0),
        columns=int(ds.get("Columns") or 0), samples=int(ds.get("SamplesPerPixel") or 1),
        bits_allocated=int(ds.get("BitsAllocated") or 8), value_tell=value_tell,
        encapsulated=True, extended_offsets=ext, header=ds,
        pixel_vr=head[4:6].decode("latin-1"))


_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_END = b"\xfe\xff\xdd\xe0"


def _frame_spans(info: PixelInfo) -> list[list[tuple[int, int]]] | None:
    """Where each frame's fragments are in the file (position and length of each), for
    encapsulated Pixel Data without a Basic or Extended Offset Table; found in one pass over
    the fragment headers and kept with the layout. Without it every frame would be found by
    reading all the fragments before it, so a list of all the frames of a 2,000-frame cine
    took minutes. The frames are told apart as pydicom does (one fragment per frame, or a
    frame ends at the fragment ending with an EOI / EOC marker). None when there is an offset
    table (pydicom seeks through it) or the fragments do not fit that rule."""
    if info.spans is not None:
        return info.spans or None
    spans: list[list[tuple[int, int]]] = []
    if info.in_memory is None and info.value_tell >= 0 and info.extended_offsets is None \
            and info.frames > 1 and info.transfer_syntax != DEFLATED_LE:
        spans = _scan_spans(info) or []
    info.spans = spans
    return spans or None


def _scan_spans(info: PixelInfo) -> list[list[tuple[int, int]]] | None:
    fragments: list[tuple[int, int]] = []
    ends: list[bool] = []
    with open(info.path, "rb") as fh:
        fh.seek(info.value_tell)
        head = fh.read(8)
        if len(head) != 8 or head[:4] != _ITEM or head[4:] != b"\0\0\0\0":
            return None  # a Basic Offset Table (or no item): pydicom's way
        while True:
            head = fh.read(8)
            if len(head) != 8 or head[:4] == _SEQUENCE_END:
                break
            if head[:4] != _ITEM:
                return None
            (length,) = struct.unpack("<L", head[4:])
            start = fh.tell()
            fragments.append((start, length))
            if length >= 2:
                fh.seek(start + length - min(length, 10))
                ends.append(b"\xff\xd9" in fh.read(min(length, 10)))
            else:
                ends.append(False)
            fh.seek(start + length)
    if len(fragments) == info.frames:
        return [[f] for f in fragments]
    if len(fragments) < info.frames:
        return None
    spans: list[list[tuple[int, int]]] = [[]]
    for fragment, last in zip(fragments, ends):
        spans[-1].append(fragment)
        if last:
            spans.append([])
    if not spans[-1]:
        spans.pop()
    return spans if len(spans) == info.frames else None


def check_frames(info: PixelInfo, numbers: list[int]) -> None:
    for n in numbers:
        if n < 1 or n > info.frames:
            raise HTTPProblem(404, f"frame {n} does not exist (this instance has {info.frames})")


@_unreadable_is_406
def stored_frame(info: PixelInfo, number: int) -> bytes:
    """Frame `number` (1-based) exactly as stored: compressed bytes, or native little endian."""
    if info.encapsulated and info.transfer_syntax != DEFLATED_LE:
        spans = _frame_spans(info)
        if spans is not None and number <= len(spans):
            with open(info.path, "rb", buffering=0) as fh:  # the fragments' bytes, no more
                parts = []
                for start, length in spans[number - 1]:
                    fh.seek(start)
                    parts.append(fh.read(length))
            return b"".join(parts)
        if info.in_memory is not None:
            return get_frame(info.in_memory, number - 1, number_of_frames=info.frames,
                             extended_offsets=info.extended_offsets)
        with open(info.path, "rb") as fh:
            fh.seek(info.value_tell)
            return get_frame(fh, number - 1, number_of_frames=info.frames,
                             extended_offsets=info.extended_offsets)
    if _cuttable(info):
        return _native_frame(info, number)
    return decoded_frame(info, number)


def _cuttable(info: PixelInfo) -> bool:
    """Native pixel data in whole bytes per sample, whose frames are cut, not decoded."""
    return info.transfer_syntax in NATIVE_SYNTAXES and info.bits_allocated % 8 == 0 \
        and (info.value_tell >= 0 or info.in_memory is not None)


def _native_frame(info: PixelInfo, number: int) -> bytes:
    """Frame `number` of native pixel data, in little endian byte order.

    Native data (big endian and deflated too) is cut, not decoded: the frame keeps the layout
    the header describes (Planar Configuration, YBR_FULL_422 with two samples per pixel, the
    colour space), only its byte order is turned around, as in Explicit VR Little Endian.
    """
    size = info.frame_bytes
    word = 1
    if info.transfer_syntax == EXPLICIT_BE:
        word = pixel_word_size(info.bits_allocated, info.pixel_vr)
    start = (number - 1) * size
    first = start - start % word  # whole words around the frame, swapped, then cut
    last = start + size + (-(start + size)) % word
    if info.past_value(number):
        data = b""
    elif info.in_memory is not None:  # a small value, read with the header
        data = bytes(info.in_memory[first:last])
    elif info.inflated is not None:
        info.inflated.seek(info.value_tell + first)
        data = info.inflated.read(last - first)
    else:
        with open(info.path, "rb") as fh:
            fh.seek(info.value_tell + first)
            data = fh.read(last - first)
    data = swapped(data, word)[start - first:start - first + size] if data else data
    if len(data) != size:
        raise HTTPProblem(404, f"frame {number} is not in the stored Pixel Data, which is "
                          "shorter than Rows x Columns x Samples x Bits Allocated x frames")
    return data


@_unreadable_is_406
def decoded_frame(info: PixelInfo, number: int) -> bytes:
    """Frame `number` decoded to native little-endian bytes (Explicit VR Little Endian)."""
    ts = info.transfer_syntax
    if _cuttable(info):
        return _native_frame(info, number)  # nothing to decode
    if info.encapsulated and not get_decoder(UID(ts)).is_available:
        raise HTTPProblem(406, f"cannot decode transfer syntax {ts} on this server")
    arr = frame_array(info, number)
    if info.bits_allocated == 1:
        from pydicom.pixels import pack_bits

        return pack_bits(arr, pad=False)
    if arr.ndim == 3 and _planar(info.header):
        # Colour-by-plane, as the header the client reads says (RLE: PS3.5 G.2).
        arr = arr.transpose(2, 0, 1)
    dtype = arr.dtype.newbyteorder("<")
    return np.ascontiguousarray(arr, dtype=dtype).tobytes()


def _planar(header: Dataset) -> bool:
    try:
        return int(header.get("SamplesPerPixel") or 1) > 1 \
            and int(header.get("PlanarConfiguration") or 0) == 1
    except (TypeError, ValueError):
        return False


def frame_array(info: PixelInfo, number: int) -> np.ndarray:
    """Frame `number` (1-based) decoded; 406 when no installed decoder can do it, or when the
    frame would decode to more than :data:`MAX_FRAME_BYTES` or its own header disagrees with
    the data set's (checked before any decoder allocates: :func:`check_before_decoding`)."""
    header = info.header
    check_before_decoding(info, number)
    if twelve_bit_jpeg(header):
        fallback = _jpeg_fallback(info, number)
        if fallback is not None:
            return fallback
        raise HTTPProblem(406, "this server cannot decode 12-bit JPEG Extended pixels")
    try:
        if info.inflated is not None:
            # The inflated data set, a native explicit VR little endian one without File
            # Meta: only the frame asked for is read from it.
            info.inflated.seek(0)
            return pixel_array(info.inflated, index=number - 1,
                               transfer_syntax_uid=UID(EXPLICIT_LE))
        if _frame_spans(info) is not None:
            # Without an offset table pydicom would read every fragment before the frame.
            return _decode_alone(info, number)
        if _packed_across_bytes(header):
            return _one_bit_frame(info, number)
        try:
            # Reads only the frame asked for.
            return pixel_array(str(info.path), index=number - 1)
        except (AssertionError, AttributeError, ValueError, KeyError):
            # Unusual files: parse the whole object instead.
            with open(info.path, "rb") as fh:
                ds = read_stored(fh, whole=True)
            return pixel_array(ds, index=number - 1)
    except (NotImplementedError, RuntimeError) as exc:
        fallback = _jpeg_fallback(info, number)
        if fallback is not None:
            return fallback
        reason = str(exc).splitlines()[-1].strip()[:160] if str(exc) else type(exc).__name__
        raise HTTPProblem(406, f"this server cannot decode these pixels: {reason}") from None


def _packed_across_bytes(header: Dataset) -> bool:
    """Native 1-bit little endian pixels whose frames do not fill whole bytes (17 x 13): a
    frame starts inside a byte (PS3.5 8.1.1 packs frames with no padding between them), which
    pydicom 3.0's frame index gets wrong."""
    ts = str(header.file_meta.get("TransferSyntaxUID", EXPLICIT_LE))
    if int(header.get("BitsAllocated") or 0) != 1 or ts not in (EXPLICIT_LE, IMPLICIT_LE):
        return False
    size = int(header.get("Rows") or 0) * int(header.get("Columns") or 0) * \
        int(header.get("SamplesPerPixel") or 1)
    return size % 8 != 0


def _one_bit_frame(info: PixelInfo, number: int) -> np.ndarray:
    """Frame `number` of native 1-bit pixels, unpacked from the bits it spans (the first
    pixel in the lowest bit of a byte)."""
    header = info.header
    rows, columns = int(header.Rows), int(header.Columns)
    size = rows * columns * int(header.get("SamplesPerPixel") or 1)
    with open(info.path, "rb") as fh:
        packed = read_stored(fh, whole=True).PixelData
    first = (number - 1) * size
    chunk = np.frombuffer(packed, np.uint8, count=(first + size + 7) // 8 - first // 8,
                          offset=first // 8)
    bits = np.unpackbits(chunk, bitorder="little")[first % 8:first % 8 + size]
    return bits.reshape(rows, columns) if size == rows * columns else \
        bits.reshape(rows, columns, -1)


def _decode_alone(info: PixelInfo, number: int) -> np.ndarray:
    """Frame `number` of encapsulated Pixel Data decoded from its own fragments (found through
    :func:`_frame_spans`), as a one-frame data set with the object's image attributes."""
    from pydicom.encaps import encapsulate

    one = Dataset()
    one.update(info.header)  # the same elements: none of them is changed here
    one.file_meta = info.header.file_meta
    if "NumberOfFrames" in one:
        one.add_new(0x00280008, "IS", 1)  # a new element (the kept header says all frames)
    one.PixelData = encapsulate([stored_frame(info, number)])
    one[PIXEL_DATA].VR = "OB"
    one[PIXEL_DATA].is_undefined_length = True
    return one.pixel_array


def check_before_decoding(info: PixelInfo, number: int) -> None:
    """Refuse (406) to decode frame `number` when it would take more than
    :data:`MAX_FRAME_BYTES`, when its compressed header declares another size, number of
    samples or more bits than the data set (:func:`archivist.archive.transcode.check_frame`),
    or when native Pixel Data ends before it."""
    if not info.encapsulated and info.past_value(number):
        # pydicom would take what follows the value in the file (trailing padding...)
        raise HTTPProblem(406, f"the pixel data of this instance cannot be read: frame "
                          f"{number} is not in the stored Pixel Data ({info.value_length} "
                          "bytes), shorter than Rows x Columns x Samples x Bits Allocated "
                          "x frames")
    try:
        check_decode_size(info.header, 1, MAX_FRAME_BYTES)
        if info.encapsulated:
            check_frame(stored_frame(info, number), info.transfer_syntax, info.header)
    except TranscodeRefused as exc:
        raise HTTPProblem(406, f"the pixel data of this instance is not decoded here: "
                          f"{exc}") from None


_JPEG_FAMILY = ("1.2.840.10008.1.2.4.50", JPEG_EXTENDED, "1.2.840.10008.1.2.4.57",
                "1.2.840.10008.1.2.4.70")


def _jpeg_fallback(info: PixelInfo, number: int) -> np.ndarray | None:
    """Decode a JPEG frame with imagecodecs (libjpeg-turbo 8/12-bit, lossless) when pydicom's
    plugins cannot (12-bit JPEG Extended without the GPL libjpeg plugin)."""
    if info.transfer_syntax not in _JPEG_FAMILY:
        return None
    try:
        return jpeg_frame_array(stored_frame(info, number), info.header)
    except Exception:  # noqa: BLE001 - no decoder could: the caller answers 406
        return None


def can_transcode(stored: str, target: str) -> bool:
    """True when an instance stored in `stored` can be sent in `target`, as far as the two
    syntaxes tell (a decoder and an encoder are installed); :func:`transcode_refusal` also
    reads the object's header."""
    if stored == target:
        return True
    if stored not in NATIVE_SYNTAXES:
        try:
            if not get_decoder(UID(stored)).is_available:
                return False
        except Exception:  # noqa: BLE001 - no decoder at all for this syntax (video)
            return False
    if target in NATIVE_SYNTAXES:
        return True
    if target in JPEG_LOSSLESS:
        return jpeg_plugin.is_available(target)
    if target in ENCODABLE:
        try:
            return bool(get_encoder(UID(target)).is_available)
        except Exception:  # noqa: BLE001
            return False
    return False


def transcode_refusal(path: Path, stored: str, target: str) -> str | None:
    """Why the object stored in `path`, in transfer syntax `stored`, cannot be sent in
    `target`, told before any pixel is decoded (:func:`can_transcode`, then
    :func:`archivist.archive.transcode.refusal` on its header); None when it can be tried.

    The header is read without the pixel data value: up to it for an encapsulated object, with
    the value deferred for a native one (whose pixel data may be Float Pixel Data). Then what
    the stored pixel data shows without decoding it (:func:`_stored_pixels_refusal`).
    """
    if stored == target:
        return None
    if not can_transcode(stored, target):
        return f"this server has no codec to turn {stored} into {target}"
    if stored in NATIVE_SYNTAXES and target in NATIVE_SYNTAXES:
        return None  # byte order or VR encoding only: no pixel is decoded or encoded
    with open(path, "rb") as fh:
        if stored in NATIVE_SYNTAXES:
            header = read_stored(fh, defer_size=1024)
        else:
            header = read_stored(fh, stop_before_pixels=True)
    return refusal(header, target) or _stored_pixels_refusal(path, target)


def _stored_pixels_refusal(path: Path, target: str) -> str | None:
    """Why the stored pixel data cannot be turned into `target`, seen without decoding it: a
    first compressed frame whose own header disagrees with the data set (as
    :func:`check_before_decoding` finds, from the start of the frame only), native Pixel Data
    shorter than its frames (pydicom's encoders refuse it). A study or series retrieve asks
    this before its response starts, so such an instance is named in the 206's Warning; it
    was left out of a 200 once the body had started. None when nothing is seen (an object
    without pixel data too: the decoder or encoder is the judge)."""
    try:
        info = pixel_info(path)
    except HTTPProblem as exc:
        return None if exc.status == 404 else exc.message  # 404: no pixel data
    if info.encapsulated:
        head = _first_fragment_head(info)
        if head is None:
            return None
        try:
            frame_geometry(head, info.transfer_syntax)
        except TranscodeRefused:
            return None  # no frame header in what was read: decoding tells
        try:
            check_frame(head, info.transfer_syntax, info.header)
        except TranscodeRefused as exc:
            return f"the pixel data of this instance is not decoded here: {exc}"
    elif target not in NATIVE_SYNTAXES and _cuttable(info):
        try:
            _native_frame(info, info.frames)  # the last frame is whole, so all are
        except HTTPProblem as exc:
            return exc.message
    return None


def _first_fragment_head(info: PixelInfo, limit: int = 1 << 16) -> bytes | None:
    """The first `limit` bytes of the first fragment of encapsulated Pixel Data (where a JPEG
    or JPEG 2000 frame header is), read from the file; None when the layout is another."""
    if info.in_memory is not None or info.inflated is not None or info.value_tell < 0:
        return None
    with open(info.path, "rb") as fh:
        fh.seek(info.value_tell)
        head = fh.read(8)
        if len(head) != 8 or head[:4] != _ITEM:
            return None
        fh.seek(struct.unpack("<L", head[4:])[0], io.SEEK_CUR)  # the Basic Offset Table
        head = fh.read(8)
        if len(head) != 8 or head[:4] != _ITEM:
            return None
        return fh.read(min(struct.unpack("<L", head[4:])[0], limit))


def transcode(path: Path, target: str) -> bytes:
    """The stored object re-encoded in `target` (a Part 10 file); see
    :func:`archivist.archive.transcode.transcode_dataset`."""
    from pydicom.filewriter import dcmwrite

    with open(path, "rb") as fh:
        ds = read_stored(fh, whole=True)
    try:
        transcode_dataset(ds, target)
    except TranscodeRefused as exc:
        raise HTTPProblem(406, str(exc)) from None
    out = io.BytesIO()
    if target == DEFLATED_LE:
        dcmwrite(out, ds, enforce_file_format=True)
    else:
        dcmwrite(out, ds, enforce_file_format=True, little_endian=target != EXPLICIT_BE,
                 implicit_vr=target == IMPLICIT_LE)
    return out.getvalue()


#: Pixel Data larger than this (decoded) is transcoded a frame at a time
#: (:func:`transcode_file`); smaller objects are transcoded whole, in memory.
FRAMEWISE_ABOVE = 32 << 20
#: A transcoded object is kept in memory up to this size, then in a temporary file.
_SPOOL_BYTES = 8 << 20
_TO_FRAMES = (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE, *ENCODABLE)


def transcode_file(path: Path, target: str, tmp_dir: Path | None = None) -> BinaryIO:
    """The stored object re-encoded in `target` (a Part 10 file), in a temporary file
    positioned at its start (in memory while small), which the caller closes.

    Large pixel data (past :data:`FRAMEWISE_ABOVE` decoded) is transcoded one frame at a
    time (:func:`_write_by_frame`), so memory holds a frame or two whatever the object's size
    (issue 10: a 250 MB multi-frame sent in big endian took 700 MB); the rest, and what that
    path does not cover (deflated objects and targets, bit-packed or YBR_FULL_422 native
    pixels, Float Pixel Data), goes through :func:`transcode`.
    """
    out: Any = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - the caller closes it
        max_size=_SPOOL_BYTES, dir=None if tmp_dir is None else str(tmp_dir))
    try:
        info = _by_frame_layout(path, target)
        if info is None:
            out.write(transcode(path, target))
        else:
            _write_by_frame(info, target, out, tmp_dir)
        out.seek(0)
        return out  # type: ignore[no-any-return]
    except BaseException:
        out.close()
        raise


def _by_frame_layout(path: Path, target: str) -> PixelInfo | None:
    """The layout of `path` when it is transcoded frame by frame to `target`, else None."""
    if target not in _TO_FRAMES:
        return None
    try:
        info = pixel_info(path)
    except HTTPProblem:
        return None  # no pixel data (a KOS, an SR) or none readable: transcode() decides
    if info.inflated is not None or info.transfer_syntax in (target, DEFLATED_LE) \
            or info.bits_allocated not in (8, 16, 32) \
            or info.frames * info.frame_bytes <= FRAMEWISE_ABOVE:
        return None
    if str(info.header.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422" \
            and not info.encapsulated:
        return None
    if not info.encapsulated and PIXEL_DATA not in info.header:
        return None  # Float or Double Float Pixel Data
    return info


#: What a frame re-encoded alone takes of the object's attributes: the image description
#: (group 0028 without its binary values and sequences, LUT data), which the decoders and
#: encoders read; byte order is turned around on them once, for the whole object.
_FRAME_ATTRIBUTES = 0x0028


@_unreadable_is_406
def _one_frame(info: PixelInfo, head: Dataset, number: int, target: str) -> Dataset:
    """Frame `number` of `info` as a one-frame data set (the image description of `head`,
    copied, and its File Meta) re-encoded in `target` by :func:`transcode_dataset`, so each
    frame goes through exactly what a whole object would."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate

    one = Dataset()
    for elem in head:
        if elem.tag.group == _FRAME_ATTRIBUTES and elem.VR not in BINARY_VRS \
                and elem.VR != "SQ":
            one.add_new(elem.tag, elem.VR, elem.value)  # a copy: transcoding changes some
    one.SOPClassUID = head.get("SOPClassUID", "")
    one.file_meta = FileMetaDataset()
    for elem in head.file_meta:  # a copy too: transcoding sets its Transfer Syntax UID
        one.file_meta.add_new(elem.tag, elem.VR, elem.value)
    if "NumberOfFrames" in one:
        one.NumberOfFrames = 1
    if info.encapsulated:
        one.PixelData = encapsulate([stored_frame(info, number)])
        one[PIXEL_DATA].VR = "OB"
        one[PIXEL_DATA].is_undefined_length = True
    else:
        one.PixelData = _native_frame(info, number)  # little endian, whatever was stored
        one[PIXEL_DATA].VR = "OW" if info.bits_allocated > 8 else "OB"
        if info.transfer_syntax == EXPLICIT_BE:
            one.file_meta.TransferSyntaxUID = UID(EXPLICIT_LE)
    try:
        transcode_dataset(one, target)
    except TranscodeRefused as exc:
        raise HTTPProblem(406, str(exc)) from None
    return one


def _write_by_frame(info: PixelInfo, target: str, out: BinaryIO, tmp_dir: Path | None) -> None:
    """Write the object of `info` in `target` to `out`: the attributes, then the Pixel Data
    one frame at a time (native: each frame's bytes; encapsulated: one fragment per frame,
    with a Basic Offset Table, the coded frames spooled until their offsets are known).
    Elements after the Pixel Data (trailing padding, signatures, which transcoding would
    invalidate anyway) are not carried."""
    from pydicom.encaps import generate_frames
    from pydicom.filewriter import dcmwrite

    with open(info.path, "rb") as fh:
        head = read_stored(fh, stop_before_pixels=True)
    first = _one_frame(info, head, 1, target)
    encapsulated = target not in NATIVE_SYNTAXES
    out_head = Dataset()
    out_head.update(head)
    if (info.transfer_syntax == EXPLICIT_BE) != (target == EXPLICIT_BE):
        swap_binary_values(out_head)  # OW, OL... values are kept in the stored byte order
    for elem in first:
        if elem.tag not in (PIXEL_DATA, 0x00280008):
            out_head[elem.tag] = elem  # what re-encoding changed (Photometric Interpretation...)
    out_head.file_meta = first.file_meta
    dcmwrite(out, out_head, enforce_file_format=True, little_endian=target != EXPLICIT_BE,
             implicit_vr=target == IMPLICIT_LE)
    big = target == EXPLICIT_BE
    endian = ">" if big else "<"

    def frames() -> Iterator[bytes]:
        for n in range(1, info.frames + 1):
            one = first if n == 1 else _one_frame(info, head, n, target)
            if encapsulated:
                yield next(generate_frames(one.PixelData, number_of_frames=1))
            else:
                yield bytes(one.PixelData)[:expected]

    samples = int(first.get("SamplesPerPixel") or 1)
    expected = info.rows * info.columns * samples * (info.bits_allocated // 8)
    if not encapsulated:
        total = expected * info.frames
        vr = b"OW" if info.bits_allocated > 8 else b"OB"
        tag = struct.pack(f"{endian}HH", 0x7FE0, 0x0010)
        length = struct.pack(f"{endian}L", total + total % 2)
        out.write(tag + length if target == IMPLICIT_LE else tag + vr + b"\0\0" + length)
        for frame in frames():
            if len(frame) != expected:
                raise HTTPProblem(406, f"a frame decoded to {len(frame)} bytes, not {expected}")
            out.write(frame)
        if total % 2:
            out.write(b"\0")
        return
    offsets = []
    with tempfile.TemporaryFile(dir=tmp_dir) as coded:
        position = 0
        for frame in frames():
            padded = frame + b"\0" * (len(frame) % 2)
            offsets.append(position)
            coded.write(_ITEM + struct.pack("<L", len(padded)) + padded)
            position += 8 + len(padded)
        if position >= 1 << 32:
            raise HTTPProblem(406, "the coded frames are too large for a Basic Offset Table")
        out.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + b"\xff\xff\xff\xff")
        out.write(_ITEM + struct.pack("<L", 4 * len(offsets)))
        out.write(struct.pack(f"<{len(offsets)}L", *offsets))
        coded.seek(0)
        shutil.copyfileobj(coded, out, 1 << 20)
        out.write(_SEQUENCE_END + b"\0\0\0\0")


# -- Rendering -----------------------------------------------------------------------------------

@dataclass
class RenderOptions:
    media_type: str = "image/jpeg"
    quality: int = 90
    viewport: tuple[int, int] | None = None
    crop: tuple[int, int, int, int] | None = None
    window: tuple[float, float, str] | None = None
    keep_aspect: bool = True


def parse_render_options(params: Any, media_type: str, *, thumbnail: bool = False) -> RenderOptions:
    opts = RenderOptions(media_type=media_type)
    q = params.get("quality")
    if q:
        try:
            opts.quality = int(q)
        except ValueError:
            opts.quality = 0
        if not 1 <= opts.quality <= 100:  # PS3.18 8.3.5.1.2: 1 to 100
            raise HTTPProblem(400, "quality must be an integer between 1 and 100")
    vp = params.get("viewport")
    if vp:
        try:
            nums = [int(float(v)) for v in vp.split(",") if v.strip() != ""]
        except ValueError:
            raise HTTPProblem(400, "viewport must be vw,vh[,sx,sy,sw,sh]") from None
        if len(nums) not in (2, 6) or nums[0] <= 0 or nums[1] <= 0 or max(nums[:2]) > 8192:
            raise HTTPProblem(400, "viewport must be vw,vh[,sx,sy,sw,sh] with 0 < vw,vh <= 8192")
        opts.viewport = (nums[0], nums[1])
        if len(nums) == 6:
            if nums[4] == 0 or nums[5] == 0 or max(abs(n) for n in nums[2:]) > 1 << 16:
                raise HTTPProblem(400, "viewport's source region sx,sy,sw,sh needs sw and sh "
                                  "other than 0 (negative: flipped)")
            opts.crop = (nums[2], nums[3], nums[4], nums[5])
    elif thumbnail:
        opts.viewport = (128, 128)
    win = params.get("window")
    if win:
        parts = win.split(",")
        try:
            center, width = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise HTTPProblem(400, "window must be center,width[,function]") from None
        if not (np.isfinite(center) and np.isfinite(width)) or len(parts) > 3:
            raise HTTPProblem(400, "window must be center,width[,function] with finite "
                              "numbers")
        func = parts[2].strip().lower() if len(parts) > 2 else "linear"
        if width <= 0 or func not in ("linear", "linear_exact", "linear-exact", "sigmoid"):
            raise HTTPProblem(400, "window width must be > 0; function linear, "
                              "linear-exact or sigmoid")
        opts.window = (center, width, func.replace("-", "_").upper())
    return opts


#: Storage SOP Classes whose instances hold no image (PS3.4 B.5): structured reports and key
#: object selections, presentation states, waveforms, raw data and registrations, encapsulated
#: documents, surface scans, RT plans, structures and records, protocols.
_NOT_IMAGES = (
    "1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.", "1.2.840.10008.5.1.4.1.1.9.",
    "1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.5.1.4.1.1.104.", "1.2.840.10008.5.1.4.1.1.68.",
    "1.2.840.10008.5.1.4.1.1.481.", "1.2.840.10008.5.1.4.1.1.200.", "1.2.840.10008.5.1.4.1.1.90.",
    "1.2.840.10008.5.1.4.1.1.4.2", "1.2.840.10008.5.1.4.34.",
)
#: Exceptions to :data:`_NOT_IMAGES`: Segmentation, RT Image and RT Dose carry pixel data.
_IMAGES_AMONG_THEM = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.481.1",
                      "1.2.840.10008.5.1.4.1.1.481.2")


def is_image_class(sop_class_uid: str) -> bool:
    """True unless the SOP Class is one whose instances hold no image to render (a private or
    unknown class counts as an image: rendering it tells)."""
    return sop_class_uid in _IMAGES_AMONG_THEM or not sop_class_uid.startswith(_NOT_IMAGES)


@_unreadable_is_406
def frames_to_render(path: Path) -> int:
    """Number of Frames of the image stored at `path` (1 when absent); 406 when the instance
    has no image to render."""
    return _image_info(path).frames


def _image_info(path: Path) -> PixelInfo:
    """The pixel information of the image stored at `path`; 406 when it has no image."""
    try:
        info = pixel_info(path)
    except HTTPProblem as exc:
        if exc.status != 404:
            raise
        raise HTTPProblem(406, "this instance has no image to render") from None
    if "Rows" not in info.header or "Columns" not in info.header:
        raise HTTPProblem(406, "this instance has no image to render")
    return info


@_unreadable_is_406
def render(path: Path, number: int, opts: RenderOptions) -> bytes:
    """One frame rendered for display (modality LUT, VOI window, photometric) as JPEG, PNG or GIF,
    within the process's :data:`RENDER_BUDGET`."""
    info = _image_info(path)
    ds = info.header
    frames = int(ds.get("NumberOfFrames") or 1)
    if number < 1 or number > frames:
        raise HTTPProblem(404, f"frame {number} does not exist (this instance has {frames})")
    ts = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_LE))
    if ts not in NATIVE_SYNTAXES:
        try:
            ok = get_decoder(UID(ts)).is_available
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            raise HTTPProblem(406, f"cannot decode transfer syntax {ts} to render it")
    with RENDER_BUDGET.hold(_render_cost(ds)):
        return _render_frame(info, number, opts)


_PALETTE_CHANNELS = ("Red", "Green", "Blue", "Alpha")


def _palette_rgb(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Palette colour indices through the object's Palette Color LUTs (PS3.3 C.7.6.3).

    pydicom's ``apply_color_lut`` reads (non-segmented) LUT Data in the machine's byte order
    whatever the transfer syntax, so for a big endian object it is given the words turned
    around to little endian, in a data set of its own (the header is cached and shared)."""
    from pydicom.pixels import apply_color_lut

    big = str(ds.file_meta.get("TransferSyntaxUID", "")) == EXPLICIT_BE
    if big and "RedPaletteColorLookupTableData" in ds:
        luts = Dataset()
        for channel in _PALETTE_CHANNELS:
            descriptor = f"{channel}PaletteColorLookupTableDescriptor"
            data = f"{channel}PaletteColorLookupTableData"
            if descriptor in ds:
                luts[descriptor] = ds[descriptor]
            if data in ds:
                setattr(luts, data, swapped(bytes(ds[data].value), 2))  # OW: 16-bit words
        ds = luts
    return apply_color_lut(arr, ds)


def _render_frame(info: PixelInfo, number: int, opts: RenderOptions) -> bytes:
    from PIL import Image

    ds = info.header
    arr = frame_array(info, number)
    if opts.viewport and not opts.crop and arr.shape[0] * arr.shape[1] > _RENDER_SAMPLE_ABOVE:
        # Every pixel would become a float: a frame far larger than the viewport is sampled
        # down first, to about twice the viewport (resized with Lanczos below).
        step = int(min(arr.shape[0] / opts.viewport[1], arr.shape[1] / opts.viewport[0]) // 2)
        if step > 1:
            arr = arr[::step, ::step]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel") or 1)
    if samples == 1 and photometric != "PALETTE COLOR":
        img8 = _grey_to_8bit(arr, ds, opts, photometric, number)
        image = Image.fromarray(img8, mode="L")
    elif photometric == "PALETTE COLOR":
        rgb = _palette_rgb(arr, ds)
        # The entries' size is the third value of the descriptors (PS3.3 C.7.6.3.1.5).
        bits = max(int(ds.get(f"{c}PaletteColorLookupTableDescriptor", [0, 0, 8])[2])
                   for c in ("Red", "Green", "Blue"))
        image = Image.fromarray(_to_8bit_rgb(rgb, bits), mode="RGB")
    else:
        stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
        image = Image.fromarray(_to_8bit_rgb(arr, stored), mode="RGB")
    if opts.crop:
        # The source region; a negative width or height flips it (PS3.18 8.3.5.1.3).
        sx, sy, sw, sh = opts.crop
        image = image.crop((min(sx, sx + sw), min(sy, sy + sh), max(sx, sx + sw),
                            max(sy, sy + sh)))
        if sw < 0:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if sh < 0:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if opts.viewport:
        vw, vh = opts.viewport
        if opts.keep_aspect:
            # Fit inside the viewport, keeping the aspect ratio (PS3.18 8.3.5.1.3).
            scale = min(vw / image.width, vh / image.height)
            image = image.resize((max(1, round(image.width * scale)),
                                  max(1, round(image.height * scale))),
                                 Image.Resampling.LANCZOS)
        else:
            image = image.resize((vw, vh), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if opts.media_type == "image/png":
        image.save(out, format="PNG")
    elif opts.media_type == "image/gif":
        # 256 colours at most: a colour image gets a palette of its own (grey is exact).
        if image.mode == "RGB":
            image = image.quantize(256)
        image.save(out, format="GIF")
    else:
        image.save(out, format="JPEG", quality=opts.quality)
    return out.getvalue()


def _grey_to_8bit(arr: np.ndarray, ds: Dataset, opts: RenderOptions, photometric: str,
                  number: int = 1) -> Any:
    """Grey levels of one frame (PS3.4 N.2.1: Modality LUT, then VOI LUT, then MONOCHROME1
    inverted), in float32 computed in place: a 64 MiB frame needs one float copy, not several.

    The VOI transformation is the `window` asked for, else the object's first Window Center /
    Width, else its first VOI LUT (applied to the Modality LUT's output, its output range
    being the LUT Descriptor's bits), else the range of the modality values. An enhanced
    multi-frame object's rescale and window are read from its functional groups
    (PS3.3 C.7.6.16.2.9, C.7.6.16.2.10) when the data set carries none of its own.
    """
    frame_attrs = _frame_pixel_attributes(ds, number)
    data = _modality(arr, ds, frame_attrs)
    window: tuple[float, float, str] | None = opts.window
    if window is None and "WindowCenter" in frame_attrs and "WindowWidth" in frame_attrs:
        try:
            center = float(_first(frame_attrs.WindowCenter))
            width = float(_first(frame_attrs.WindowWidth))
            func = str(frame_attrs.get("VOILUTFunction", "LINEAR")).strip().upper()
            if width > 0 and np.isfinite(center) and np.isfinite(width):
                window = (center, width, func)
        except (TypeError, ValueError):
            window = None
    with np.errstate(all="ignore"):
        if window is not None:
            _window(data, *window)
        elif ds.get("VOILUTSequence"):
            data = _voi_lut(data, ds)
        else:
            _minmax(data)
        np.rint(data, out=data)
        np.clip(data, 0, 255, out=data)
    out = data.astype(np.uint8)
    if photometric == "MONOCHROME1":
        np.subtract(255, out, out=out)
    return out


#: Rescale and window attributes, and the functional group macros that carry them in an
#: enhanced multi-frame object (PS3.3 C.7.6.16.2.9 Pixel Value Transformation, C.7.6.16.2.10
#: Frame VOI LUT).
_FRAME_GROUPS = {
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
}


def _frame_pixel_attributes(ds: Dataset, number: int) -> Dataset:
    """The rescale and window attributes that apply to frame `number`: the data set's own,
    else those of its Per-frame, then Shared Functional Groups."""
    view = Dataset()
    for seq, keywords in _FRAME_GROUPS.items():
        if any(k in ds for k in keywords):
            for k in keywords:
                if k in ds:
                    view[k] = ds[k]
            continue
        for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            try:
                items = ds.get(groups) or []
                item = items[number - 1] if groups.startswith("PerFrame") else items[0]
                macro = (item.get(seq) or [None])[0]
            except (IndexError, TypeError, AttributeError):
                macro = None
            if macro is not None and any(k in macro for k in keywords):
                for k in keywords:
                    if k in macro:
                        view[k] = macro[k]
                break
    return view


def _modality(arr: np.ndarray, ds: Dataset, frame_attrs: Dataset) -> np.ndarray:
    """Modality LUT output (PS3.3 C.11.1) as a float32 array: the Modality LUT Sequence, else
    Rescale Slope and Intercept (1 and 0 when absent or unreadable)."""
    if ds.get("ModalityLUTSequence"):
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    data = arr.astype(np.float32)
    try:
        slope = frame_attrs.get("RescaleSlope")
        slope = 1.0 if slope is None or slope == "" else float(slope)
        intercept = frame_attrs.get("RescaleIntercept")
        intercept = 0.0 if intercept is None or intercept == "" else float(intercept)
    except (TypeError, ValueError):
        slope, intercept = 1.0, 0.0
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        slope, intercept = 1.0, 0.0
    if slope != 1.0:
        data *= slope
    if intercept != 0.0:
        data += intercept
    return data


def _voi_lut(data: np.ndarray, ds: Dataset) -> np.ndarray:
    """The first VOI LUT of the VOI LUT Sequence (PS3.3 C.11.2.1.1) applied to modality
    values, scaled from its output range (0 to 2^n - 1, n the Descriptor's third value) to
    0-255. Values below the first one mapped take the first entry, above the last the last."""
    item = ds.VOILUTSequence[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    raw = item.LUTData
    if isinstance(raw, bytes):
        big = str(ds.file_meta.get("TransferSyntaxUID", "")) == EXPLICIT_BE
        if len(raw) >= 2 * entries:
            lut = np.frombuffer(raw, dtype=">u2" if big else "<u2", count=entries)
        else:  # 8-bit entries packed two to a word
            lut = np.frombuffer(raw, dtype=np.uint8, count=min(entries, len(raw)))
    else:
        lut = np.asarray(raw if isinstance(raw, (list, tuple)) else [raw], dtype=np.int64)
    if lut.size == 0:
        raise ValueError("the VOI LUT has no LUT Data")
    if first >= 1 << 15 and float(np.min(data)) < 0:
        first -= 1 << 16  # a signed first value mapped read as US (its VR is US or SS)
    index = data - first
    np.clip(index, 0, lut.size - 1, out=index)
    out = lut[index.astype(np.int32)].astype(np.float32)
    top = float((1 << max(1, min(16, bits))) - 1)
    top = max(top, float(lut.max()))  # a Descriptor declaring fewer bits than the data hold
    out *= 255.0 / top
    return out


def _first(value: Any) -> Any:
    try:
        return value[0] if not isinstance(value, (str, bytes)) else value
    except (TypeError, IndexError):
        return value


def _window(data: np.ndarray, center: float, width: float, func: str) -> None:
    """The VOI window (PS3.3 C.11.2.1.2 and C.11.2.1.3) to 0-255, computed in place."""
    if func == "SIGMOID":
        data -= center
        data *= -4.0 / width
        np.exp(data, out=data)
        data += 1.0
        np.divide(255.0, data, out=data)
    elif func == "LINEAR_EXACT":
        data -= center - width / 2.0
        data *= 255.0 / width
    elif width > 1:
        data -= center - 0.5
        data *= 255.0 / (width - 1.0)
        data += 127.5
    else:
        # Width 1 (C.11.2.1.2.1): at most c - 0.5 is the minimum, above it the maximum.
        np.copyto(data, np.where(data > center - 0.5, 255.0, 0.0))


def _minmax(data: np.ndarray) -> None:
    """The range of the values to 0-255, in place (Float Pixel Data: not-a-number and
    -infinity become 0, +infinity 255)."""
    finite = np.isfinite(data)
    if not finite.all():
        if not finite.any():
            data.fill(0)
            return
        np.nan_to_num(data, copy=False, nan=np.min(data[finite]), posinf=np.max(data[finite]),
                      neginf=np.min(data[finite]))
    lo, hi = float(np.min(data)), float(np.max(data))
    if hi <= lo:
        data.fill(0)
        return
    data -= lo
    data *= 255.0 / (hi - lo)


def _to_8bit_rgb(arr: np.ndarray, bits: int) -> Any:
    """Colour samples of `bits` bits (Bits Stored, or a palette's entry size) to 8 bits: the
    full range of the samples maps to 0-255, whatever the image holds."""
    if arr.dtype == np.uint8 and bits <= 8:
        return arr
    top = float((1 << max(1, min(32, bits))) - 1)
    peak = float(np.max(arr)) if arr.size else 0.0
    top = max(top, peak)  # samples over the declared range: the header understates it
    out = arr.astype(np.float32)
    out *= 255.0 / top
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)
