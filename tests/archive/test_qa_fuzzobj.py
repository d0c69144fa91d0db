"""The struct walk of Part 10 headers (archive/part10.py), the value cache (archive/decode.py) and
the index extraction (index/extract.py) against pydicom, on mutated objects (QA round 5, fuzzobj).

A seeded mutation fuzzer (flipped bytes, changed lengths and VRs, truncations, repeated, moved
and dropped elements, inserted delimiters, other transfer syntaxes) found objects the walk read
otherwise than ingest's pydicom reading: undefined-length sequences pydicom refuses to parse in
place (stored), an implicit VR element the dictionary does not make a sequence walked as one
(another header stored), a broken sequence after the pixel data, an element placed before the
pixel data with a higher tag, a repeated Pixel Data or last element, SQ pixel data, a Transfer
Syntax UID or group length of another VR, long values judged otherwise than deferred ones; an
undecodable Specific Character Set, and a corrupt deflated object with an undecodable File
Meta, leaked pydicom's exceptions out of ingest (STOW-RS "internal error", ``archivist import``
aborted); the index extraction leaked IndexError, OverflowError and pydicom's errors for indexed
attributes of another VR, and wrote NaN/Infinity, which no JSON parser takes, into the attributes
QIDO-RS answers with. The differential fuzz below runs 2,000 mutants with a fixed seed; the
tests after it are the regressions.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import struct
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from archivist.archive import decode, ingest, part10
from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.errors import InvalidObject
from archivist.index.extract import extract
from archivist.testing.datasets import pydicom_test_file
from archivist.testing.server import ServerProcess

ROOT = "1.2.826.0.1.3680043.10.1235.79."
_LONG = {b"OB", b"OD", b"OF", b"OL", b"OW", b"OV", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
         b"UV"}
_SHORT = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
          b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
_VRS = sorted(_LONG | _SHORT) + [b"XX", b"ob"]
_SYNTAXES = [b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2.2",
             b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.1.99", b"1.2.3.4", b"",
             b" 1.2.840.10008.1.2.1", b"1.2.840.10008.1.2\0"]


# --- objects ------------------------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _dataset(n: int, charset: str | None = None) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = f"{ROOT}{n}.1"
    ds.StudyInstanceUID = f"{ROOT}{n}.2"
    ds.SeriesInstanceUID = f"{ROOT}{n}.3"
    ds.PatientName = "Müller^Jürgen" if charset else "FUZZ^OBJ"
    ds.PatientID = f"FZ{n}"
    ds.StudyDate, ds.StudyTime, ds.Modality = "20240102", "101500", "OT"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelSpacing = [0.5, 0.25]
    ds.InstanceNumber = 3
    ds.add_new(0x00081000, "AE", "RETIRED")  # retired
    ds.add_new(0x00080090, "PN", "")  # zero length
    inner = _code("T-D1100", "SRT", "Head")
    middle = Dataset()
    middle.ReferencedSOPInstanceUID = f"{ROOT}{n}.4"
    middle.PurposeOfReferenceCodeSequence = Sequence([inner])
    outer = Dataset()
    outer.ReferencedSeriesSequence = Sequence([middle, middle])
    ds.ReferencedStudySequence = Sequence([outer])  # three levels
    ds.AnatomicRegionSequence = Sequence([_code("12738006", "SCT", "Brain")])
    block = ds.private_block(0x0009, "FUZZOBJ", create=True)
    block.add_new(0x10, "LO", "private")
    block.add_new(0x11, "US", [1, 2, 3])
    ds.add_new(0x00211001, "UN", b"\x01\x02\x03\x04")
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.SamplesPerPixel, ds.PixelRepresentation = 7, 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def _save(ds: Dataset, ts: str, undefined: bool = False) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = f"{ROOT}0"
    ds.file_meta = meta
    if undefined:
        for elem in ds.iterall():
            if elem.VR == "SQ":
                elem.is_undefined_length = True
                for item in elem.value:
                    item.is_undefined_length_sequence_item = True
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=ts == ImplicitVRLittleEndian)
    return out.getvalue()


def _seeds() -> list[bytes]:
    seeds = []
    for n, (ts, undefined, charset) in enumerate([
            (ExplicitVRLittleEndian, False, None), (ExplicitVRLittleEndian, True, "ISO_IR 192"),
            (ImplicitVRLittleEndian, False, "ISO_IR 100"), (ImplicitVRLittleEndian, True, None)]):
        ds = _dataset(n, charset)
        ds.PixelData = b"\x00\x10\x20\x30"
        if ts == ImplicitVRLittleEndian and undefined:
            del ds[0x00090010], ds[0x00091010], ds[0x00091011]  # no private undefined SQ
        seeds.append(_save(ds, ts, undefined))
    ds = _dataset(9)
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x01" * 30 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    seeds.append(_save(ds, JPEGBaseline8Bit, True))
    for name in ("CT_small.dcm", "MR_small_implicit.dcm", "chrH31.dcm", "UN_sequence.dcm",
                 "JPEG2000-embedded-sequence-delimiter.dcm", "reportsi_with_empty_number_tags.dcm"):
        path = pydicom_test_file(name)
        if path is not None:
            seeds.append(Path(path).read_bytes())
    return seeds


# --- mutations ----------------------------------------------------------------------------


def _elements(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """(header, tag, length position, length size, end) of the File Meta and top-level
    elements, walked loosely (explicit or implicit VR little endian; stops at what it cannot
    read)."""
    out: list[tuple[int, int, int, int, int]] = []
    pos, implicit = 132, False
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4:pos + 6]
        if group != 2 and not out[-1:]:
            break
        if group != 2 and implicit or group != 2 and vr not in _LONG | _SHORT:
            implicit = True
            size, at, value = 4, pos + 4, pos + 8
        elif vr in _LONG:
            size, at, value = 4, pos + 8, pos + 12
        elif vr in _SHORT:
            size, at, value = 2, pos + 6, pos + 8
        else:
            break
        if value > len(data):
            break
        length = struct.unpack_from("<L" if size == 4 else "<H", data, at)[0]
        if group == 2 and element == 0x10:
            implicit = data[value:value + length].rstrip(b"\0 ") == b"1.2.840.10008.1.2"
        if length == 0xFFFFFFFF:
            end = data.find(b"\xfe\xff\xdd\xe0\0\0\0\0", value)
            end = len(data) if end < 0 else end + 8
        else:
            end = min(len(data), value + length)
        out.append((pos, (group << 16) | element, at, size, end))
        pos = end
    return out


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        elements = _elements(bytes(buf))
        kind = rng.randrange(9)
        if not elements or kind == 0:
            i = rng.randrange(min(len(buf), 2048))
            buf[i] ^= 1 << rng.randrange(8)
            continue
        hdr, _, at, size, end = rng.choice(elements)
        if kind == 1:  # a length off by a little, or far
            old = int.from_bytes(buf[at:at + size], "little")
            new = rng.choice((old + 1, old - 1, old + 2, 0, 0xFFFFFFFF, 0x7FFFFFFF,
                              len(buf) - at, old + 8)) & ((1 << 8 * size) - 1)
            buf[at:at + size] = new.to_bytes(size, "little")
        elif kind == 2:
            del buf[rng.choice((hdr, hdr + 3, end - 1, end + 1, rng.randrange(len(buf)))):]
        elif kind == 3:  # repeated
            where = rng.choice((end, len(buf)))
            buf[where:where] = bytes(buf[hdr:end])
        elif kind == 4:  # moved
            chunk = bytes(buf[hdr:end])
            del buf[hdr:end]
            where = rng.choice([e[0] for e in elements if e[0] < hdr] + [len(buf)])
            buf[where:where] = chunk
        elif kind == 5 and bytes(buf[hdr + 4:hdr + 6]) in _LONG | _SHORT:  # another VR
            buf[hdr + 4:hdr + 6] = rng.choice(_VRS)
        elif kind == 6:  # a delimiter
            where = rng.choice((hdr, end))
            buf[where:where] = rng.choice((b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0",
                                           b"\xfe\xff\xdd\xe0")) + rng.choice(
                (b"\0\0\0\0", b"\xff\xff\xff\xff", b"\x04\0\0\0"))
        elif kind == 7:
            ts = next((e for e in elements if e[1] == 0x00020010), None)
            if ts is not None:
                new = rng.choice(_SYNTAXES)
                value = ts[2] + 2
                buf[value:ts[4]] = new
                buf[ts[2]:ts[2] + 2] = len(new).to_bytes(2, "little")
        else:
            del buf[hdr:end]
    return bytes(buf)


def _mutants(count: int, seed: int) -> Iterator[bytes]:
    seeds = _seeds()
    for i in range(count):
        rng = random.Random(f"{seed}-{i}")
        yield _mutate(rng.choice(seeds), rng)


# --- the two readings ---------------------------------------------------------------------


def _ours(archive: Archive, data: bytes) -> tuple[Dataset, Any, Any]:
    return archive.ingest._read_header(data)


def _pydicom(archive: Archive, data: bytes) -> tuple[Dataset, Any, Any]:
    """Ingest's pydicom path alone, every value decoded afresh (no cache)."""
    saved = decode.MAX_CACHED_VALUE
    decode.MAX_CACHED_VALUE = -1
    try:
        ds, ts, pixel, size = archive.ingest._pydicom_header(data)
        archive.ingest._decode_values(ds)
        ingest._check_complete(data, size, ds, ts, pixel)
    finally:
        decode.MAX_CACHED_VALUE = saved
    return ds, ts, pixel


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return "ok", fn(*args)
        except InvalidObject as exc:
            return "refused", str(exc)


def _norm(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return tuple(_norm(v) for v in value)
    return type(value).__name__, str(value)


def _view(ds: Dataset, top: bool = True) -> tuple[Any, ...]:
    """Elements as (tag, VR, value, offset); offsets at the top level only (pydicom gives
    items parsed from a raw sequence value offsets relative to it)."""
    out = []
    for tag in list(ds._dict):
        try:
            elem = ds[tag]
        except Exception as exc:  # noqa: BLE001 - both readings must fail alike
            out.append((tag, type(exc).__name__))
            continue
        if isinstance(elem.value, Sequence):
            value: Any = tuple(_view(item, False) for item in elem.value)
        else:
            value = _norm(elem.value)
        out.append((tag, elem.VR, value, elem.file_tell if top else None))
    return tuple(out)


def _header(read: tuple[Dataset, Any, Any]) -> dict[str, Any]:
    ds, ts, pixel = read
    return {"ts": str(ts), "pixel": pixel, "body": _view(ds), "meta": _view(ds.file_meta),
            "charset": str(ds.original_character_set)}


def _strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def _same_reading(archive: Archive, data: bytes) -> tuple[str, bool]:
    """Ingest's reading of `data` is pydicom's: both refuse it (InvalidObject only), or both
    give the same header, index rows and strict-JSON attributes. Returns the outcome and
    whether the struct walk took it."""
    taken = part10.read(data) is not None
    mine, theirs = _outcome(_ours, archive, data), _outcome(_pydicom, archive, data)
    assert mine[0] == theirs[0], (mine, theirs, taken)
    if mine[0] == "ok":
        assert _header(mine[1]) == _header(theirs[1]), taken
        rows, ref = _outcome(extract, mine[1][0]), _outcome(extract, theirs[1][0])
        assert rows[0] == ref[0]
        if rows[0] == "ok":
            assert (rows[1].patient, rows[1].study, rows[1].series, rows[1].instance,
                    rows[1].attrs_json) == (ref[1].patient, ref[1].study, ref[1].series,
                                            ref[1].instance, ref[1].attrs_json)
            _strict(rows[1].attrs_json)
    return mine[0], taken


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    from archivist.config import load_settings

    settings = load_settings(env={}, overrides={
        "data_dir": tmp_path_factory.mktemp("fuzzobj") / "data"})
    opened = Archive.open(settings)
    yield opened
    opened.close()


def test_mutants_are_read_as_pydicom_reads_them(archive: Archive) -> None:
    """2,000 mutants of a fixed seed: whatever ingest takes, by the struct walk or by
    pydicom, is what pydicom reads; whatever it refuses is refused with InvalidObject (any
    other exception fails the test)."""
    decode.clear()
    counts = {"ok": 0, "refused": 0, "taken": 0}
    log = logging.getLogger("pydicom")  # its errors and warnings about broken objects
    log.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for data in _mutants(2000, seed=5):
                outcome, taken = _same_reading(archive, data)
                counts[outcome] += 1
                counts["taken"] += taken
    finally:
        log.disabled = False
    # The mutants exercise both: objects read (most by the walk) and objects refused.
    assert counts["ok"] > 500 and counts["refused"] > 300 and counts["taken"] > 200, counts


# --- regressions --------------------------------------------------------------------------


def _object(n: int) -> bytes:
    ds = _dataset(100 + n)
    ds.PixelData = b"\x00\x10\x20\x30"
    return _save(ds, ExplicitVRLittleEndian)


def _element_at(data: bytes, tag: int) -> tuple[int, int]:
    """(start, end) of the explicit VR top-level element `tag`."""
    for hdr, found, _, _, end in _elements(data):
        if found == tag:
            return hdr, end
    raise AssertionError(f"{tag:08X} not found")


def test_an_element_before_the_pixel_data_with_a_higher_tag(archive: Archive) -> None:
    """(7FE0,0020) written before Pixel Data (7FE0,0010): pydicom's header stops at the pixel
    data by tag, so it is not in it; the walk kept it."""
    data = _object(1)
    hdr, _ = _element_at(data, 0x7FE00010)
    stray = struct.pack("<HH2sHL", 0x7FE0, 0x0020, b"OW", 0, 2) + b"\x01\x02"
    mutant = data[:hdr] + stray + data[hdr:]
    assert _same_reading(archive, mutant) == ("ok", False)
    ds, _, pixel = archive.ingest._read_header(mutant)
    assert 0x7FE00020 not in ds and pixel.offset == hdr + len(stray) + 12


def test_a_repeated_pixel_data_element(archive: Archive) -> None:
    """Two Pixel Data elements: pydicom's (and so the frames served) is the last; the walk
    reported the first."""
    data = _object(2)
    hdr, end = _element_at(data, 0x7FE00010)
    mutant = data + data[hdr:end]
    assert _same_reading(archive, mutant) == ("ok", False)
    assert archive.ingest._read_header(mutant)[2].offset == len(data) + 12


def test_a_repeated_last_element(archive: Archive) -> None:
    """An element repeated at the end: the walk took the object, pydicom's reading refuses
    it (its dictionary keeps the repeated element at its first place)."""
    ds = _dataset(103)
    data = _save(ds, ExplicitVRLittleEndian)
    hdr, end = _element_at(data, 0x00211001)
    mutant = data + data[hdr:end]
    assert _same_reading(archive, mutant)[1] is False


def test_encapsulated_pixel_data_of_vr_sq(archive: Archive) -> None:
    """Encapsulated Pixel Data whose VR reads SQ: the walk skipped its fragments as items;
    pydicom parses them as data sets and refuses the object."""
    ds = _dataset(7)
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x01" * 30 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    data = bytearray(_save(ds, JPEGBaseline8Bit))
    hdr, _ = _element_at(bytes(data), 0x7FE00010)
    data[hdr + 4:hdr + 6] = b"SQ"
    assert _same_reading(archive, bytes(data)) == ("refused", False)


@pytest.mark.parametrize("content", [b"\x08\x00\x60\x00CS\xff\x00OT", b"abc",
                                     b"\x08\x00\x60\x00OB\x00\x00\xff\xff\xff\xff"])
def test_a_broken_sequence_after_the_pixel_data(archive: Archive, content: bytes) -> None:
    """An undefined-length Digital Signatures Sequence after the pixel data, its item broken
    inside: the walk skipped the item by its length and took the object; pydicom parses the
    item and refuses it."""
    tail = (struct.pack("<HH2sHL", 0xFFFA, 0xFFFA, b"SQ", 0, 0xFFFFFFFF)
            + struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content
            + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
    assert _same_reading(archive, _object(8) + tail) == ("refused", False)
    sound = struct.pack("<HH2sH", 0x0008, 0x0060, b"CS", 2) + b"OT"
    tail = (struct.pack("<HH2sHL", 0xFFFA, 0xFFFA, b"SQ", 0, 0xFFFFFFFF)
            + struct.pack("<HHL", 0xFFFE, 0xE000, len(sound)) + sound
            + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
    assert _same_reading(archive, _object(9) + tail)[0] == "ok"


def _implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF,
                       len(value) if length is None else length) + value


def _explicit(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    n = len(value) if length is None else length
    if vr in _LONG:
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, n) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, n) + value


_UNDEFINED = 0xFFFFFFFF
_ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
_SEQ_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def _item(body: bytes, undefined: bool = False) -> bytes:
    if undefined:
        return struct.pack("<HHL", 0xFFFE, 0xE000, _UNDEFINED) + body + _ITEM_END
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(body)) + body


def _with_sequence(n: int, sequence: bytes, implicit: bool) -> bytes:
    """A small object with `sequence` (an encoded Referenced Image Sequence) among its
    elements."""
    ds = _dataset(500 + n)
    del ds.ReferencedStudySequence, ds.AnatomicRegionSequence
    ds.PixelData = b"\x00\x10\x20\x30"
    data = _save(ds, ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)
    at = next(e[0] for e in _elements(data) if e[1] > 0x00081140)
    return data[:at] + sequence + data[at:]


def test_an_implicit_vr_element_the_dictionary_does_not_make_a_sequence(
        archive: Archive) -> None:
    """Implicit VR: Code Value (0008,0100), an LO, of undefined length holding items, inside
    an item of Referenced Image Sequence. The walk took it as a nested sequence; pydicom reads
    its value raw up to the first sequence delimiter, the inner sequence's: the rest of the
    item, and the data set after it, then parse otherwise (pydicom's header lost Patient ID
    and the UIDs the walk's had)."""
    inner = _implicit(0x0040A170, _item(_implicit(0x00080100, b"C1")) + _SEQ_END, _UNDEFINED)
    code = _implicit(0x00080100, _item(inner, True) + _SEQ_END, _UNDEFINED)
    sequence = _implicit(0x00081140, _item(code, True) + _SEQ_END, _UNDEFINED)
    mutant = _with_sequence(1, sequence, implicit=True)
    assert _same_reading(archive, mutant)[1] is False


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("inside", ["undefined OB", "item delimiter"])
def test_a_sequence_pydicom_cannot_parse_in_place(
        archive: Archive, implicit: bool, inside: str) -> None:
    """An undefined-length sequence whose defined-length item holds an undefined-length value
    (or an item delimiter): pydicom, parsing it in place, reads past the item and refuses the
    object; the walk skipped the item by its length and its raw value, decoded later as one of
    defined length, passed: the object was stored."""
    if inside == "undefined OB":
        body = (_implicit(0x00080104, b"", _UNDEFINED) if implicit
                else _explicit(0x00091010, b"OB", b"", _UNDEFINED))
    else:
        body = ((_implicit(0x00080100, b"C1") if implicit else _explicit(0x00080100, b"SH", b"C1"))
                + _ITEM_END + (_implicit(0x00080102, b"99") if implicit
                               else _explicit(0x00080102, b"SH", b"99")))
    tag = 0x00081140
    sequence = (_implicit(tag, _item(body) + _SEQ_END, _UNDEFINED) if implicit
                else _explicit(tag, b"SQ", _item(body) + _SEQ_END, _UNDEFINED))
    assert _same_reading(archive, _with_sequence(2, sequence, implicit)) == ("refused", False)


def test_undefined_length_sequences_are_still_taken(archive: Archive) -> None:
    """The walk still takes (and parses) sound undefined-length sequences, nested, in both
    encodings, with the character set of the object for their items."""
    for n, implicit in enumerate((False, True)):
        ds = _dataset(600 + n, "ISO_IR 192")
        ds.PixelData = b"\x00\x10\x20\x30"
        ds.ReferencedStudySequence[0].ReferencedSeriesSequence[0].PatientName = "J\u00fcrgen"
        data = _save(ds, ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian, True)
        assert _same_reading(archive, data) == ("ok", True)
        header = archive.ingest._read_header(data)[0]
        item = header.ReferencedStudySequence[0].ReferencedSeriesSequence[0]
        assert str(item.PatientName) == "J\u00fcrgen"
        assert item.PurposeOfReferenceCodeSequence[0].CodeValue == "T-D1100"


def test_long_values_are_judged_as_when_pydicom_defers_them(archive: Archive) -> None:
    """Values over 1 KiB, which ingest's pydicom reading defers: a private one is left unread
    there (stored), so the walk, which decoded it (refused: 1,025 bytes of SS), declines it;
    an AT of 1,025 bytes is refused unread there, and decoding it here let it through."""
    private = (_explicit(0x00190010, b"LO", b"FUZZOBJ ")
               + _explicit(0x00191010, b"OB", b"\x01" * 2000)
               + _explicit(0x00191011, b"SS", b"x" * 1025))
    ds = _dataset(700)
    del ds[0x00090010], ds[0x00091010], ds[0x00091011]
    ds.PixelData = b"\x00\x10\x20\x30"
    data = _save(ds, ExplicitVRLittleEndian)
    at = next(e[0] for e in _elements(data) if e[1] > 0x00191011)
    assert _same_reading(archive, data[:at] + private + data[at:]) == ("ok", False)
    sound = private[:-1033] + _explicit(0x00191011, b"SS", b"x" * 1026)
    assert _same_reading(archive, data[:at] + sound + data[at:]) == ("ok", True)
    pointer = _explicit(0x00280009, b"AT", b"\x18\x00\x63\x10" * 256 + b"x")
    at = next(e[0] for e in _elements(data) if e[1] > 0x00280009)
    assert _same_reading(archive, data[:at] + pointer + data[at:]) == ("refused", False)


@pytest.mark.parametrize("vr", [b"SQ", b"US", b"OB"])
def test_a_transfer_syntax_uid_of_another_vr(archive: Archive, vr: bytes) -> None:
    """The walk read the Transfer Syntax UID's bytes as a UID whatever its VR; pydicom reads
    the value by its VR (as a sequence for SQ: refused)."""
    data = bytearray(_object(4))
    hdr, end = _element_at(bytes(data), 0x00020010)
    value = bytes(data[hdr + 8:end])
    if vr in _LONG:
        data[hdr:end] = struct.pack("<HH2sHL", 2, 0x10, vr, 0, len(value)) + value
        length = int.from_bytes(data[140:144], "little") + 4
        data[140:144] = length.to_bytes(4, "little")  # the group length, kept right
    else:
        data[hdr + 4:hdr + 6] = vr
    assert _same_reading(archive, bytes(data))[1] is False


@pytest.mark.parametrize("vr", [b"UV", b"FD", b"SQ"])
def test_a_group_length_of_another_vr(archive: Archive, vr: bytes) -> None:
    """pydicom decodes (0002,0000) while reading the File Meta: a value it cannot decode
    refuses the object, which the walk took."""
    data = bytearray(_object(5))
    value = bytes(data[140:144])
    data[132:144] = (struct.pack("<HH2sHL", 2, 0, vr, 0, 4) if vr in _LONG
                     else struct.pack("<HH2sH", 2, 0, vr, 4)) + value
    assert _same_reading(archive, bytes(data)) == ("refused", False)


@pytest.mark.parametrize("charset", [(b"CS", b"ISO_IR\x00100 "), (b"SL", b"ISO_IR 192")])
def test_an_undecodable_character_set_is_refused_with_a_reason(
        archive: Archive, charset: tuple[bytes, bytes]) -> None:
    """A Specific Character Set pydicom cannot decode (a NUL inside, a number VR) leaked
    ValueError / BytesLengthException out of ingest: STOW-RS and C-STORE answered
    "internal error (ValueError)" with status 0x0110."""
    vr, value = charset
    ds = _dataset(106)
    ds.PixelData = b"\x00\x10\x20\x30"
    data = _save(ds, ExplicitVRLittleEndian)
    start = _elements(data)
    first = next(e for e in start if e[1] >> 16 != 2)[0]
    element = struct.pack("<HH2sH", 8, 5, vr, len(value)) + value
    mutant = data[:first] + element + data[first:]
    assert part10.read(mutant) is None
    with pytest.raises(InvalidObject):
        archive.ingest._read_header(mutant)
    assert _same_reading(archive, mutant)[0] == "refused"


@pytest.mark.parametrize("vr", [b"FD", b"UL", b"FL"])
def test_a_corrupt_deflated_object_with_an_undecodable_file_meta(
        archive: Archive, tmp_path: Path, vr: bytes) -> None:
    """A deflated object whose deflate stream is corrupt, its Media Storage SOP Class UID of
    another VR: the refusal named the object from its File Meta and raised pydicom's
    BytesLengthException instead (STOW-RS "internal error", C-STORE 0xC000 "Internal error
    while storing", ``archivist import`` aborted with a traceback, later files not imported)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _dataset(800)
    ds.PixelData = b"\x00\x10\x20\x30"
    data = bytearray(_save(ds, DeflatedExplicitVRLittleEndian))
    hdr, _ = _element_at(bytes(data), 0x00020002)
    data[hdr + 4:hdr + 6] = vr
    start = max(e[4] for e in _elements(bytes(data)) if e[1] >> 16 == 2)
    data[start + 2:start + 12] = b"\xff" * 10  # the deflate stream, broken
    path = tmp_path / "deflated.dcm"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidObject, match="cannot be inflated"):
        archive.ingest.store_bytes(bytes(data), Origin("stow"))
    with pytest.raises(InvalidObject, match="cannot be inflated"):
        archive.ingest.store_file(path, Origin("import"))


def _stored(archive: Archive, elements: dict[int, tuple[str, bytes]], n: int) -> Any:
    """Store an object with `elements` ({tag: (VR, value bytes)}) written as they are, in
    place of pydicom's; returns its index rows."""
    ds = _dataset(200 + n)
    for tag in elements:
        if tag in ds:
            del ds[tag]
    ds.PixelData = b"\x00\x10\x20\x30"
    data = _save(ds, ExplicitVRLittleEndian)
    for tag, (vr, value) in sorted(elements.items()):
        pos = next(e[0] for e in _elements(data) if e[1] > tag)
        raw = (struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value))
               if vr.encode() in _LONG else
               struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value))) + value
        data = data[:pos] + raw + data[pos:]
    archive.ingest.store_bytes(data, Origin("import"))
    ds, _, _ = archive.ingest._read_header(data)
    return extract(ds)


def test_indexed_attributes_of_another_vr_are_stored_without_a_column_value(
        archive: Archive) -> None:
    """Instance Number as an empty AT (IndexError), as DS "inf" (OverflowError); Institution
    Name as a sequence (its text decoded the items: pydicom's errors) or bytes (indexed as
    "b'...'"): the object is stored, those columns stay empty."""
    rows = _stored(archive, {0x00200013: ("AT", b"")}, 1)
    assert rows.instance["instance_number"] is None
    rows = _stored(archive, {0x00200013: ("DS", b"inf ")}, 2)
    assert rows.instance["instance_number"] is None
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 10) + struct.pack("<HH2sH", 8, 0x100, b"XX", 2)
    item += b"AB"
    rows = _stored(archive, {0x00080080: ("SQ", item), 0x00081030: ("OB", b"DESC")}, 3)
    assert rows.study["institution_name"] is None
    assert rows.study["study_description"] is None


def test_non_finite_numbers_are_left_out_of_the_index_attributes(archive: Archive) -> None:
    """A DS "NaN" / "inf" and an FD NaN: json.dumps wrote NaN and Infinity into the index's
    attributes, answered as such by QIDO-RS (JSON.parse and strict parsers refuse them)."""
    rows = _stored(archive, {0x00180050: ("DS", b"NaN "), 0x00181044: ("DS", b"inf "),
                             0x00189327: ("FD", struct.pack("<d", math.nan)),
                             0x00189306: ("FD", struct.pack("<2d", 1.0, math.inf))}, 4)
    attrs = _strict(rows.attrs_json)
    for tag in ("00180050", "00181044", "00189327", "00189306"):
        assert tag not in attrs
    assert attrs["00280030"] == {"vr": "DS", "Value": [0.5, 0.25]}


def test_qido_answers_strict_json_for_non_finite_numbers(tmp_path: Path) -> None:
    """Over a real server: STOW-RS an object with DS "NaN" and an FD infinity, then QIDO-RS
    with those as return keys answers JSON a strict parser takes."""
    ds = _dataset(300)
    ds.PixelData = b"\x00\x10\x20\x30"
    ds.add_new(0x00189327, "FD", math.inf)
    data = bytearray(_save(ds, ExplicitVRLittleEndian))
    pos = next(e[0] for e in _elements(bytes(data)) if e[1] > 0x00180050)
    data[pos:pos] = struct.pack("<HH2sH", 0x18, 0x50, b"DS", 4) + b"NaN "
    server = ServerProcess(tmp_path / "data", extra_args=["--workers", "1"]).start()
    try:
        body = (b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + bytes(data)
                + b"\r\n--XX--\r\n")
        request = urllib.request.Request(
            f"{server.url}/dicomweb/studies", data=body, method="POST",
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=XX'})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        url = (f"{server.url}/dicomweb/instances?SOPInstanceUID={ds.SOPInstanceUID}"
               "&includefield=00180050&includefield=00189327&includefield=00280030")
        with urllib.request.urlopen(url, timeout=30) as answer:
            found = _strict(answer.read().decode())
    finally:
        server.stop()
    assert len(found) == 1
    assert found[0]["00280030"]["Value"] == [0.5, 0.25]
    assert "NaN" not in json.dumps(found) and "Infinity" not in json.dumps(found)


def test_a_value_cached_for_one_object_is_what_pydicom_decodes_for_another(
        archive: Archive) -> None:
    """The cache's key (VR, bytes, character set, byte order): the same bytes under another
    character set or VR decode as pydicom decodes them, warm or cold."""
    decode.clear()
    for n, charset in enumerate(("ISO_IR 100", "ISO_IR 192", None, "ISO_IR 100")):
        ds = _dataset(400 + n, charset)
        ds.PatientName = "Caf\u00e9^A"
        ds.PixelData = b"\x00\x10\x20\x30"
        data = _save(ds, ExplicitVRLittleEndian)
        mine = archive.ingest._read_header(data)[0]
        ref = pydicom.dcmread(io.BytesIO(data))
        assert str(mine.PatientName) == str(ref.PatientName)
        assert isinstance(mine._dict[0x00100010], DataElement)
