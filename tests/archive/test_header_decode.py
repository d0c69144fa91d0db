"""Ingest's decoding of header values (archivist.archive.decode): pydicom's values, whether a
value is decoded afresh or taken from what an earlier object decoded."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from archivist.archive import decode, part10
from archivist.archive.archive import Archive
from archivist.errors import InvalidObject
from archivist.testing.datasets import make_instance, pydicom_test_files


def _raw(tag: int, vr: str, value: bytes, little: bool = True) -> RawDataElement:
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, little)


def _compare(ours: pydicom.Dataset, name: str) -> None:
    ref = pydicom.dcmread(name, defer_size=1024)
    for tag in list(ours._dict):
        mine, theirs = ours._dict[tag], ref[tag]
        assert mine.VR == theirs.VR, (name, tag)
        assert mine.value == theirs.value, (name, tag)
        assert type(mine.value) is type(theirs.value), (name, tag)


@pytest.mark.slow  # CI time (20 min); covered in a full run: pytest -m slow
def test_every_pydicom_file_decodes_as_pydicom_cold_and_warm(archive: Archive) -> None:
    """All of pydicom's test files (character sets, big endian, implicit VR...), read from
    memory twice in a row: the first pass fills the cache, the second takes every repeated
    value from it; both must give pydicom's values and types."""
    files = [f for f in pydicom_test_files(charsets=True) if os.path.getsize(f) <= 4 << 20]
    assert len(files) > 50
    decode.clear()
    read = 0
    for _ in range(2):
        for name in files:
            try:
                ours, _, _ = archive.ingest._read_header(Path(name).read_bytes())
            except InvalidObject:
                continue
            _compare(ours, name)
            read += 1
    assert read > 80
    assert len(decode._cache) > 100  # the second pass had values to find


def test_a_multi_valued_value_is_each_dataset_own(archive: Archive, tmp_path: Path) -> None:
    """A MultiValue taken from the cache is a copy: changing one dataset's list changes no
    other dataset's, nor what the next object decodes."""
    path = tmp_path / "a.dcm"
    make_instance(path, extra={"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]})
    data = path.read_bytes()
    decode.clear()
    first, _, _ = archive.ingest._read_header(data)
    second, _, _ = archive.ingest._read_header(data)
    assert type(second.ImageType) is MultiValue
    assert list(first.ImageType) == list(second.ImageType)
    expected = list(second.ImageType)
    first.ImageType.append("CHANGED")
    second.ImageType.append("CHANGED TOO")
    assert list(second.ImageType) == [*expected, "CHANGED TOO"]
    third, _, _ = archive.ingest._read_header(data)
    assert list(third.ImageType) == expected


def test_the_byte_order_and_the_character_set_are_part_of_the_key() -> None:
    decode.clear()
    little = decode.decode(_raw(0x00280010, "US", b"\x00\x01"), "iso8859", "US")
    big = decode.decode(_raw(0x00280010, "US", b"\x00\x01", little=False), "iso8859", "US")
    assert (little.value, big.value) == (256, 1)
    latin = decode.decode(_raw(0x00100010, "PN", b"Caf\xc3\xa9"), ["latin_1"], "PN")
    utf8 = decode.decode(_raw(0x00100010, "PN", b"Caf\xc3\xa9"), ["UTF8"], "PN")
    assert str(latin.value) == "CafÃ©"
    assert str(utf8.value) == "Café"


def test_what_the_cache_leaves_to_pydicom() -> None:
    """Private, sequence, bulk, LUT Descriptor, ambiguous and deferred elements are not taken;
    an implicit VR element is taken with the data dictionary's VR."""
    assert decode.vr_of(_raw(0x00080060, "CS", b"CT")) == "CS"
    assert decode.vr_of(_raw(0x00091010, "LO", b"PRIVATE ")) is None
    assert decode.vr_of(_raw(0x00081140, "SQ", b"")) is None
    assert decode.vr_of(_raw(0x7FE00010, "OW", b"\0\0")) is None
    assert decode.vr_of(_raw(0x00281101, "US", b"\0\x10\0\0\x10\0")) is None
    assert decode.vr_of(RawDataElement(Tag(0x00080060), "CS", 2000, None, 0, False, True)) is None
    implicit = RawDataElement(Tag(0x00280010), None, 2, b"\x00\x02", 0, True, True)
    assert decode.vr_of(implicit) == "US"
    assert decode.decode(implicit, "iso8859", "US").value == 512
    assert decode.vr_of(RawDataElement(Tag(0x00280106), None, 2, b"\0\0", 0, True, True)) is None
    assert decode.vr_of(RawDataElement(Tag(0x00091010), None, 2, b"AB", 0, True, True)) is None


def test_a_wrong_length_number_is_still_refused_with_pydicom_s_reason(
        archive: Archive, tmp_path: Path) -> None:
    """A US value of 3 bytes cannot be decoded: the object is refused and the reason names the
    element, as before the cache (the failed decode falls back to pydicom's way)."""
    path = tmp_path / "a.dcm"
    make_instance(path)
    data = path.read_bytes()
    needle = b"\x28\x00\x11\x00US\x02\x00"  # Columns, explicit VR little endian
    at = data.find(needle)
    assert at > 0
    broken = data[:at] + b"\x28\x00\x11\x00US\x03\x00\x10\x00\x00" + data[at + 10:]
    # One byte longer: lengths of later elements still line up (the next tag starts after it).
    with pytest.raises(InvalidObject, match=r"\(0028,0011\)"):
        archive.ingest._read_header(broken)


def _both(archive: Archive, data: bytes) -> tuple[object, object]:
    """(the struct walk's header, pydicom's header), both decoded; None for a declined walk."""
    fast = part10.read(data)
    if fast is None:
        return None, None
    ds, ts, pixel = fast
    archive.ingest._decode_values(ds)
    ref, ref_ts, ref_pixel, _ = archive.ingest._pydicom_header(data)
    archive.ingest._decode_values(ref)
    return (ds, ts, pixel), (ref, ref_ts, ref_pixel)


def _same(mine: object, theirs: object) -> None:
    ds, ts, pixel = mine  # type: ignore[misc]
    ref, ref_ts, ref_pixel = theirs  # type: ignore[misc]
    assert ts == ref_ts
    assert pixel == ref_pixel
    assert list(ds._dict) == list(ref._dict)
    for tag in ref._dict:
        a, b = ds[tag], ref[tag]
        assert (a.VR, a.value, type(a.value)) == (b.VR, b.value, type(b.value)), tag
        assert a.file_tell == b.file_tell, tag
    assert list(ds.file_meta.keys()) == list(ref.file_meta.keys())
    for tag in ref.file_meta.keys():  # noqa: SIM118 - iterating a Dataset gives elements
        a, b = ds.file_meta[tag], ref.file_meta[tag]
        assert (a.VR, a.value, a.file_tell) == (b.VR, b.value, b.file_tell), tag
    assert ds.original_character_set == ref.original_character_set
    assert ds.preamble == ref.preamble


def test_the_struct_walk_reads_what_pydicom_reads(archive: Archive) -> None:
    """Every pydicom test file the walk takes (explicit VR little endian, native and
    encapsulated, sequences of both lengths, character sets) gives pydicom's header: the same
    elements, VRs, values, offsets, File Meta, pixel data element and transfer syntax; the
    others (implicit VR, big endian, deflated, no preamble...) are declined, not misread."""
    taken = declined = 0
    for name in pydicom_test_files(charsets=True):
        data = Path(name).read_bytes()
        if len(data) > 4 << 20:
            continue
        try:
            mine, theirs = _both(archive, data)
        except InvalidObject:
            # pydicom's side refuses it: the walk must not have taken it... unless it only
            # fails in decoding, which both sides share.
            continue
        if mine is None:
            declined += 1
            continue
        _same(mine, theirs)
        taken += 1
    assert taken > 40 and declined > 10, (taken, declined)


@pytest.mark.parametrize("cut", [1, 7, 100, 600])
def test_a_cut_object_is_declined_and_pydicom_says_why(
        archive: Archive, tmp_path: Path, cut: int) -> None:
    path = tmp_path / "a.dcm"
    make_instance(path, rows=16, columns=16)
    data = path.read_bytes()
    assert part10.read(data) is not None
    assert part10.read(data[:-cut]) is None
    with pytest.raises(InvalidObject, match="truncated|cannot"):
        archive.ingest._read_header(data[:-cut])


def _with_nested_sequences(path: Path, referenced_items: int, anatomy: int,
                           **kw: object) -> pydicom.Dataset:
    """An instance with two undefined-length sequences (Referenced Image, items of undefined
    length holding another one; Anatomic Region with `anatomy` items) not yet saved."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = make_instance(path, rows=16, columns=16, **kw)  # type: ignore[arg-type]
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D1100", "SRT", "Head"
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    item["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    ds.ReferencedImageSequence = Sequence([item] * referenced_items)
    ds.AnatomicRegionSequence = Sequence([inner] * anatomy)
    for element in ("ReferencedImageSequence", "AnatomicRegionSequence"):
        ds[element].is_undefined_length = True
    for it in (item, inner):
        it.is_undefined_length_sequence_item = True
    return ds


def test_undefined_length_sequences_and_fragments_are_walked(
        archive: Archive, tmp_path: Path) -> None:
    """A data set with nested undefined-length sequences and items and encapsulated pixel data
    (offset table, two fragments) is taken by the walk and gives pydicom's header."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    path = tmp_path / "a.dcm"
    ds = _with_nested_sequences(path, 2, 1)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x01" * 98 + b"\xff\xd9", b"\x02" * 64])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert b"\xfe\xff\x0d\xe0" in data and b"\xfe\xff\xdd\xe0" in data  # delimiters written
    mine, theirs = _both(archive, data)
    assert mine is not None
    _same(mine, theirs)
    assert mine[2].length == 0xFFFFFFFF  # type: ignore[index]
    assert len(mine[0].ReferencedImageSequence) == 2  # type: ignore[index]


def test_implicit_vr_with_undefined_length_sequences_is_walked(
        archive: Archive, tmp_path: Path) -> None:
    """Implicit VR little endian (what pynetdicom's requestors propose first): nested
    undefined-length sequences and items are walked, values are decoded with the data
    dictionary's VRs, and the header is pydicom's."""
    from pydicom.uid import ImplicitVRLittleEndian

    path = tmp_path / "a.dcm"
    ds = _with_nested_sequences(path, 2, 0, extra={"ImageType": ["ORIGINAL", "PRIMARY"],
                                                   "PixelSpacing": [0.5, 0.5]})
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert b"\xfe\xff\x0d\xe0" in data
    decode.clear()
    mine, theirs = _both(archive, data)
    assert mine is not None
    _same(mine, theirs)
    header = mine[0]  # type: ignore[index]
    assert header.Rows == 16 and type(header.PixelSpacing) is MultiValue
    assert len(header.ReferencedImageSequence) == 2
    assert header.ReferencedImageSequence[1].PurposeOfReferenceCodeSequence[0].CodeValue == "T-D1100"
    assert len(header.AnatomicRegionSequence) == 0
    # A second read takes the values from the cache: still pydicom's.
    again, theirs = _both(archive, data)
    _same(again, theirs)


def test_data_encoded_against_its_transfer_syntax_is_left_to_pydicom(
        archive: Archive, tmp_path: Path) -> None:
    """An explicit VR data set under an implicit VR transfer syntax is declined by the walk;
    pydicom reads it (switching to explicit VR, with a warning) and ingest takes it."""
    path = tmp_path / "a.dcm"
    make_instance(path, patient_name="WALK^DECLINED")
    data = bytearray(path.read_bytes())
    explicit = b"1.2.840.10008.1.2.1\x00"
    at = data.find(explicit)
    assert at > 0
    data[at:at + len(explicit)] = b"1.2.840.10008.1.2".ljust(len(explicit), b"\x00")
    assert part10.read(bytes(data)) is None
    with pytest.warns(UserWarning, match="Expected implicit VR, but found explicit VR"):
        ds, ts, _ = archive.ingest._read_header(bytes(data))
    assert ts == "1.2.840.10008.1.2"
    assert str(ds.PatientName) == "WALK^DECLINED"
