"""A Part 10 header walked with ``struct``, for the objects it can read exactly as pydicom would.

Ingest needs, from each object it stores, the File Meta, the data set's elements before the
pixel data, raw (``RawDataElement``, decoded afterwards), and where the pixel data is.
``pydicom.dcmread`` costs ~200-300 us for a 40-element header here, most of it per element
around a file object (``read``, ``tell``, a generator, a namedtuple); the same walk over bytes
in memory costs a fraction of that.

Only the common case is taken: a 128-byte preamble and ``DICM``, an explicit VR little endian
File Meta, a data set in a known little endian transfer syntax that is not deflated (explicit
VR, native or encapsulated, or implicit VR, which pynetdicom's requestors propose first), every
element with a known VR (no sequence in the File Meta, a Transfer Syntax UID of VR UI), the
File Meta and top-level elements in ascending tag order, none repeated, a Specific Character
Set and File Meta group length pydicom can decode, every length inside the object, undefined
lengths only for sequences before the pixel data (walked through their items, then parsed by
pydicom's reader as it parses them in place, to the same end; in implicit VR only those the
data dictionary knows as sequences) and for the encapsulated pixel data of VR OB or OW (walked
through its fragments), values over 1 KiB judged as ingest judges them deferred, and the walk
ending exactly at the object's last byte. Anything else returns None and the caller reads the
object with pydicom, which also explains what is wrong with it: this module never refuses an
object, it only declines to read it.

A deflated object (Deflated Explicit VR Little Endian, PS3.5 A.5) is read here too, by
:func:`read_stored`, for everything that parses a stored or received object: pydicom inflates
the whole data set in memory with one ``zlib.decompress``, so a megabyte on the wire could take
gigabytes (a "deflate bomb"). Here it is inflated a mebibyte at a time into a temporary file
(in memory up to 8 MiB, on disk beyond) and refused once it passes :func:`inflate_limit`.
"""

from __future__ import annotations

import io
import os
import tempfile
import zlib
from struct import Struct
from typing import Any, BinaryIO

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import (
    _read_file_meta_info,
    dcmread,
    read_dataset,
    read_preamble,
    read_sequence,
)
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR
from pydicom.values import convert_string

from archivist.archive.validation import PixelDataInfo

_HEADER = Struct("<HH2sH")  # group, element, VR, 16-bit length
_LONG = Struct("<L")  # the 32-bit length after a long VR's two reserved bytes
_ITEM = Struct("<HHL")  # an item or delimiter: group, element, length

_SHORT_VRS = frozenset(vr.encode() for vr in STANDARD_VR - EXPLICIT_VR_LENGTH_32)
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
_VR_TEXT = {vr.encode(): str(vr) for vr in STANDARD_VR}

_UNDEFINED = 0xFFFFFFFF
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_CHARSET = BaseTag(0x00080005)
_TS_TAG = 0x00020010
_GROUP_LENGTH = BaseTag(0x00020000)
_DEFAULT_ENCODING = "iso8859"
_MAX_DEPTH = 32  # nested sequences deeper than this are pydicom's to refuse
#: Values longer than this are deferred by ingest's pydicom reading (``defer_size=1024``),
#: and some then left unread (ingest's ``_left_unread``); the walk keeps every value, so one
#: such value that decoding would refuse, or that is refused unread, is declined.
DEFER_SIZE = 1024
#: Bytes per value of the number VRs (a deferred one is judged by its length alone).
_NUMBER_SIZE = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "AT": 4, "FD": 8, "SV": 8, "UV": 8}


_Element = DataElement | RawDataElement


class _Decline(Exception):
    """The object is not of the common shape: pydicom reads it."""


def _element_header(data: bytes, pos: int, end: int) -> tuple[int, bytes, int, int]:
    """(tag, VR bytes, length, value position) of the explicit VR LE element at `pos`."""
    if pos + 8 > end:
        raise _Decline
    group, element, vr, length = _HEADER.unpack_from(data, pos)
    if vr in _SHORT_VRS:
        return (group << 16) | element, vr, length, pos + 8
    if vr not in _LONG_VRS or pos + 12 > end:
        raise _Decline
    return (group << 16) | element, vr, _LONG.unpack_from(data, pos + 8)[0], pos + 12


_ITEM_TAG = b"\xfe\xff\x00\xe0"
_ITEM_END = b"\xfe\xff\x0d\xe0"
_SEQUENCE_END = b"\xfe\xff\xdd\xe0"


def _skip_items(data: bytes, pos: int, end: int, depth: int, implicit: bool | None) -> int:
    """Past the items and the delimiter of an undefined-length sequence (`implicit`: its
    encoding) or, `implicit` None, of encapsulated pixel data (fragments: defined lengths only)."""
    if depth > _MAX_DEPTH:
        raise _Decline
    while True:
        if pos + 8 > end:
            raise _Decline
        group, element, length = _ITEM.unpack_from(data, pos)
        pos += 8
        if group != 0xFFFE:
            raise _Decline
        if element == 0xE0DD:  # the sequence delimiter
            if length:
                raise _Decline
            return pos
        if element != 0xE000:
            raise _Decline
        if length != _UNDEFINED:
            pos += length
            if pos > end:
                raise _Decline
        elif implicit is None:
            raise _Decline  # a fragment of undefined length
        else:
            pos = _skip_item(data, pos, end, depth, implicit)


def _skip_item(data: bytes, pos: int, end: int, depth: int, implicit: bool) -> int:
    """Past the elements and the delimiter of an undefined-length item starting at `pos`."""
    while True:
        if pos + 8 > end:
            raise _Decline
        if data[pos:pos + 4] == _ITEM_END:
            if _ITEM.unpack_from(data, pos)[2]:
                raise _Decline
            return pos + 8
        if implicit:
            group, element, length = _ITEM.unpack_from(data, pos)
            pos += 8
            nested = False
            if length == _UNDEFINED:
                # pydicom reads an undefined length as a sequence when the data dictionary
                # says so; an element it does not know, when an item follows (the delimiter
                # of an empty sequence ends the value either way); any other up to the first
                # sequence delimiter, wherever that lies: not walked here
                known = _dictionary_vr((group << 16) | element)
                if known is None:
                    nested = data[pos:pos + 4] in (_ITEM_TAG, _SEQUENCE_END)
                else:
                    nested = known == "SQ"
        else:
            _, vr, length, pos = _element_header(data, pos, end)
            nested = vr == b"SQ"
        if length != _UNDEFINED:
            pos += length
            if pos > end:
                raise _Decline
        elif nested:
            pos = _skip_items(data, pos, end, depth + 1, implicit)
        else:
            raise _Decline


def _dictionary_vr(tag: int) -> str | None:
    """The data dictionary's VR of the standard element `tag`; None for a private or unknown
    one."""
    if tag & 0x10000:
        return None
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _known_sequence(tag: int) -> bool:
    """Whether the data dictionary says `tag` (a standard element) is a sequence."""
    return _dictionary_vr(tag) == "SQ"


def _long_values_decode(ds: Dataset, elements: dict[BaseTag, _Element]) -> bool:
    """Whether the values over :data:`DEFER_SIZE` bytes of `ds` (its `elements`, raw) are
    judged as ingest judges them read by pydicom, which defers them: a private one is left
    unread there, so it must decode here (it is decoded, and kept decoded); a number one is
    refused there when its length is not a multiple of its size, which decoding an AT here
    would not do."""
    for key, raw in list(elements.items()):
        if not isinstance(raw, RawDataElement) or raw.length <= DEFER_SIZE:
            continue
        if key.is_private:
            try:
                _ = ds[key].value  # decoded in place, as ingest decodes a private element
            except Exception:  # noqa: BLE001 - pydicom's reading leaves it unread
                return False
            continue
        vr = raw.VR
        if vr is None or vr == "UN":
            vr = _dictionary_vr(key) or vr
        size = _NUMBER_SIZE.get(vr or "")
        if size is not None and raw.length % size:
            return False
    return True


def _parsed_sequence(data: bytes, tag: BaseTag, value_at: int, end_at: int, implicit: bool,
                     encoding: str | list[str]) -> DataElement:
    """The undefined-length sequence whose value the walk found at `value_at` to `end_at`,
    parsed by pydicom's reader from the object itself, as it parses one in place (the item
    offsets are the object's; its character set is `encoding`). A sequence pydicom cannot
    parse, or parses to another end than the walk, is declined."""
    fp = io.BytesIO(data)  # the bytes are shared, not copied
    fp.seek(value_at)
    try:
        sequence = read_sequence(fp, implicit, True, _UNDEFINED, encoding)
    except Exception:  # noqa: BLE001 - pydicom refuses it and explains why
        raise _Decline from None
    if fp.tell() != end_at:
        raise _Decline
    return DataElement(tag, "SQ", sequence, value_at, is_undefined_length=True)


def _file_meta(data: bytes, end: int) -> tuple[dict[BaseTag, _Element], str, int]:
    """The File Meta elements (raw), the transfer syntax and where the data set starts."""
    elements: dict[BaseTag, _Element] = {}
    ts = ""
    pos = 132
    last = -1
    while pos + 8 <= end and data[pos:pos + 2] == b"\x02\x00":
        tag, vr, length, value_at = _element_header(data, pos, end)
        if length == _UNDEFINED or value_at + length > end or tag <= last or vr == b"SQ":
            raise _Decline  # pydicom parses a sequence here; a repeated element: its value
        last = tag
        value = data[value_at:value_at + length]
        if tag == _TS_TAG:
            if vr != b"UI":
                raise _Decline  # pydicom reads the value by its VR, not as a UID
            ts = value.decode("ascii", "replace").strip("\x00 ")
        key = BaseTag(tag)
        elements[key] = RawDataElement(key, _VR_TEXT[vr], length, value, value_at, False, True)
        pos = value_at + length
    return elements, ts, pos


def read(data: bytes) -> tuple[FileDataset, UID, PixelDataInfo | None] | None:
    """The header of the Part 10 object `data`, as ingest reads it with pydicom: a FileDataset
    of raw elements up to (not including) the pixel data (an implicit VR element's VR is None,
    an undefined-length sequence parsed, as pydicom's reader gives them), with its File Meta;
    the transfer syntax; the pixel data element's tag, length and value offset. None when the
    object is not of the common shape described above (pydicom must read it)."""
    end = len(data)
    if end < 140 or data[128:132] != b"DICM":
        return None
    try:
        meta_elements, ts_text, pos = _file_meta(data, end)
        ts = UID(ts_text)
        if (not meta_elements or not ts.is_transfer_syntax or not ts.is_little_endian
                or ts.is_deflated):
            return None
        implicit = bool(ts.is_implicit_VR)
        if pos + 6 <= end and (0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B
                               ) == implicit:
            return None  # pydicom would switch to the other VR encoding (with a warning)
        elements: dict[BaseTag, _Element] = {}
        pixel: PixelDataInfo | None = None
        last = -1
        # The character set pydicom's reader parses sequences with: the default, then the
        # Specific Character Set's once it has been read.
        encoding: str | list[str] = _DEFAULT_ENCODING
        while pos < end:
            vr: bytes | None = None  # implicit VR: none in the data
            if implicit:
                if pos + 8 > end:
                    raise _Decline
                group, element, length = _ITEM.unpack_from(data, pos)
                tag, value_at = (group << 16) | element, pos + 8
            else:
                tag, vr, length, value_at = _element_header(data, pos, end)
                group = tag >> 16
            if group <= 0x0002 or group == 0xFFFE:
                raise _Decline  # a command or File Meta group in the data set, a stray item
            if length == _UNDEFINED:
                if pixel is not None:
                    # After the pixel data (a Digital Signatures Sequence...): pydicom parses
                    # its items, which the walk would only skip, and refuses broken ones.
                    raise _Decline
                if implicit:
                    if not _known_sequence(tag):
                        raise _Decline  # a private or unknown one: pydicom looks ahead
                    pos = _skip_items(data, value_at, end, 0, True)
                elif vr == b"SQ" and tag not in _PIXEL_TAGS:
                    # (pixel data of VR SQ: pydicom parses its fragments as items of a
                    # sequence, and explains why they are not)
                    pos = _skip_items(data, value_at, end, 0, False)
                elif tag in _PIXEL_TAGS and pixel is None and vr in (b"OB", b"OW"):
                    pos = _skip_items(data, value_at, end, 0, None)
                else:
                    raise _Decline
            else:
                pos = value_at + length
                if pos > end:
                    raise _Decline
            if tag <= last:
                # Out of order or repeated: pydicom keeps a repeated element's last value at
                # its first place, and its pixel data is the lowest pixel tag wherever it
                # lies, with everything of a higher tag dropped from the header.
                raise _Decline
            last = tag
            if pixel is not None:
                continue  # after the pixel data: walked, not kept
            if tag in _PIXEL_TAGS:
                pixel = PixelDataInfo(tag, length, value_at)
                continue  # its value is never copied
            key = BaseTag(tag)
            if length == _UNDEFINED:
                # A sequence: parsed now, as pydicom's reader parses it in place (a raw value
                # decoded later is read as one of defined length, more leniently).
                elements[key] = _parsed_sequence(data, key, value_at, pos, implicit, encoding)
                continue
            if tag == _CHARSET:
                try:
                    encoding = convert_encodings(convert_string(data[value_at:pos], True))
                except Exception:  # noqa: BLE001 - pydicom's reader fails here: it says why
                    raise _Decline from None
            # An implicit VR element's VR is None, as pydicom's reader gives it.
            vr_text = _VR_TEXT[vr] if vr is not None else None
            elements[key] = RawDataElement(key, vr_text, length, data[value_at:pos], value_at,
                                           implicit, True)
    except _Decline:
        return None
    ds = Dataset(elements)
    try:
        if _CHARSET in elements:
            encoding = ds._character_set
        else:
            encoding = _DEFAULT_ENCODING
    except Exception:  # noqa: BLE001 - an undecodable Specific Character Set: pydicom says why
        return None
    ds.set_original_encoding(implicit, True, encoding)
    if not _long_values_decode(ds, elements):
        return None
    meta = FileMetaDataset(meta_elements)
    meta.set_original_encoding(False, True, _DEFAULT_ENCODING)
    try:
        # pydicom's reader decodes the first File Meta element (to tell explicit from
        # implicit VR) and the group length: one it cannot decode is its to explain.
        _ = meta[next(iter(meta_elements))].value
        if _GROUP_LENGTH in meta_elements:
            _ = meta[_GROUP_LENGTH].value
    except Exception:  # noqa: BLE001
        return None
    out = FileDataset(io.BytesIO(data), ds, data[:128], meta, implicit, True)
    out.set_original_encoding(implicit, True, ds._character_set)
    return out, ts, pixel


#: A deflated data set may always inflate to this many bytes (structured reports and small
#: images, the usual deflated objects, stay far below it)...
INFLATE_FLOOR = 64 << 20
#: ... and beyond that, to this many times its deflated size: real data (text, images with a
#: blank background) deflates by 2 to 50 times; zlib's own ceiling is about 1,000...
INFLATE_RATIO = 200
#: ... but never past this (nor past the archive's maximum object size): the validation on
#: ingest and a transcoding read values whole.
INFLATE_CEILING = 256 << 20
_INFLATE_STEP = 1 << 20
_SPOOL_IN_MEMORY = 8 << 20
_DEFLATED = str(DeflatedExplicitVRLittleEndian)
#: Bytes read to find the transfer syntax without pydicom (:func:`peek_syntax`).
_META_PEEK = 16 << 10
_PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


class InflateRefused(ValueError):
    """A deflated data set inflates past its limit, or its deflate stream is corrupt (the
    message says which, and the limit). ``meta`` is the object's File Meta when
    :func:`read_stored` read it (the elements of it that decode)."""

    meta: FileMetaDataset = FileMetaDataset()


def inflate_limit(deflated_size: int, ceiling: int | None = None) -> int:
    """How many bytes a data set of `deflated_size` deflated bytes may inflate to:
    :data:`INFLATE_RATIO` times its size, at least :data:`INFLATE_FLOOR`, at most
    :data:`INFLATE_CEILING` and `ceiling` (the archive's maximum object size)."""
    limit = min(max(INFLATE_FLOOR, INFLATE_RATIO * deflated_size), INFLATE_CEILING)
    return min(limit, ceiling) if ceiling else limit


def inflate(fh: BinaryIO, limit: int) -> BinaryIO:
    """The raw deflate stream (RFC 1951, PS3.5 A.5) from `fh`'s position to its end, inflated
    into a temporary file positioned at its start, a mebibyte at a time: memory stays bounded
    whatever the stream holds.

    Raises
    ------
    InflateRefused
        The stream inflates past `limit` bytes (nothing more is inflated), or is corrupt.
    """
    out: Any = tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY)  # noqa: SIM115 - returned open
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0

    def keep(piece: bytes) -> None:
        nonlocal total
        total += len(piece)
        if total > limit:
            raise InflateRefused(
                f"the deflated data set inflates past {limit} bytes, the limit for it here "
                f"({INFLATE_RATIO} times its deflated size, at least {INFLATE_FLOOR >> 20} MiB, "
                f"at most {INFLATE_CEILING >> 20} MiB and the maximum object size)")
        out.write(piece)

    try:
        while not inflater.eof:
            pending = fh.read(_INFLATE_STEP)
            if not pending:
                keep(inflater.flush())  # the input ended: what zlib still holds (little)
                break
            while True:
                # At most a step of output per call; the input left over waits its turn.
                piece = inflater.decompress(pending, _INFLATE_STEP)
                keep(piece)
                pending = inflater.unconsumed_tail
                if inflater.eof or (not pending and len(piece) < _INFLATE_STEP):
                    break
    except zlib.error as exc:
        out.close()
        raise InflateRefused(f"the deflated data set cannot be inflated ({exc})") from None
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out  # type: ignore[no-any-return]


def _remaining(fh: BinaryIO) -> int:
    """Bytes from `fh`'s position to its end."""
    here = fh.tell()
    end = fh.seek(0, os.SEEK_END)
    fh.seek(here)
    return end - here


def _at_pixel_data(tag: int, vr: str | None, length: int) -> bool:
    return tag in _PIXEL_DATA_TAGS


def read_stored(fh: BinaryIO, *, defer_size: int | None = None, stop_before_pixels: bool = False,
                specific_tags: list[Any] | None = None,
                ceiling: int | None = None) -> FileDataset:
    """A Part 10 object read as ``pydicom.dcmread(fh, ...)`` reads it, a deflated one inflated
    by :func:`inflate` (bounded) instead of pydicom's whole-object ``zlib.decompress``.

    The data set of a deflated object is read from the inflated temporary file, which the
    returned data set keeps open (its ``buffer``): deferred values are read from it, and it is
    gone with the data set. `ceiling` caps :func:`inflate_limit`.

    Raises
    ------
    InflateRefused
        A deflated data set past its limit, or corrupt.
    Exception
        Whatever ``pydicom.dcmread`` raises for an object it cannot read.
    """
    start = fh.tell()
    if peek_syntax(fh) not in (None, _DEFLATED):  # the common case: pydicom reads it all
        return dcmread(fh, defer_size=defer_size, stop_before_pixels=stop_before_pixels,
                       specific_tags=specific_tags)
    preamble = read_preamble(fh, False)
    meta = _read_file_meta_info(fh)
    ts = str(meta.get("TransferSyntaxUID", "")).strip("\0 ")
    if ts != _DEFLATED:
        fh.seek(start)
        return dcmread(fh, defer_size=defer_size, stop_before_pixels=stop_before_pixels,
                       specific_tags=specific_tags)
    try:
        inflated = inflate(fh, inflate_limit(_remaining(fh), ceiling))
    except InflateRefused as exc:
        exc.meta = _decodable(meta)
        raise
    try:
        dataset = read_dataset(inflated, False, True,
                               stop_when=_at_pixel_data if stop_before_pixels else None,
                               defer_size=defer_size, specific_tags=specific_tags)
    except BaseException:
        inflated.close()
        raise
    out = FileDataset(inflated, dataset, preamble, meta, False, True)
    # Deferred values come from the temporary file (pydicom takes a named file's path first).
    out.filename = None
    out.timestamp = None
    out.set_original_encoding(False, True, dataset._character_set)
    return out


def _decodable(meta: FileMetaDataset) -> FileMetaDataset:
    """The elements of `meta` that decode (an element of another VR, a SOP Class UID as FD,
    is left out): the callers of an :class:`InflateRefused` name the object from it, and
    must not fail on it."""
    out = FileMetaDataset()
    for tag in list(meta._dict):
        try:
            out[tag] = meta[tag]
        except Exception:  # noqa: BLE001, S112 - left out
            continue
    return out


def peek_syntax(fh: BinaryIO) -> str | None:
    """The transfer syntax of the Part 10 object in `fh` (positioned at its start, and left
    there) from its first bytes, by this module's File Meta walk; None when those bytes do not
    tell (no DICM prefix, an unusual or very long File Meta): pydicom's reader must look. It
    spares the callers of :func:`read_stored` a second parse of the File Meta by pydicom
    (~60 us) before ``dcmread`` parses it again."""
    start = fh.tell()
    head = fh.read(_META_PEEK)
    fh.seek(start)
    return meta_syntax(head)


def meta_syntax(head: bytes) -> str | None:
    """The transfer syntax the File Meta Information at the start of `head` (preamble, DICM,
    the group 0002 elements) names, by this module's walk; None when the bytes do not tell (no
    DICM prefix, an unusual File Meta): pydicom's reader must look."""
    if len(head) < 140 or head[128:132] != b"DICM":
        return None
    try:
        _, ts, _ = _file_meta(head, len(head))
    except _Decline:
        return None
    return ts or None


def is_deflated(fh: BinaryIO) -> bool:
    """Whether the Part 10 object in `fh` (positioned at its start, and left there) is in
    Deflated Explicit VR Little Endian."""
    peeked = peek_syntax(fh)
    if peeked is not None:
        return peeked == _DEFLATED
    start = fh.tell()
    try:
        read_preamble(fh, False)
        meta = _read_file_meta_info(fh)
    except Exception:  # noqa: BLE001 - not a Part 10 object: pydicom says what is wrong
        return False
    finally:
        fh.seek(start)
    return str(meta.get("TransferSyntaxUID", "")).strip("\0 ") == _DEFLATED


__all__ = ["DEFER_SIZE", "INFLATE_CEILING", "INFLATE_FLOOR", "INFLATE_RATIO", "InflateRefused",
           "inflate", "inflate_limit", "is_deflated", "meta_syntax", "peek_syntax", "read",
           "read_stored"]
