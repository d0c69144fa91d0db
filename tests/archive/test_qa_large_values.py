"""Ingest leaves the large values it does not index unread (QA follow-up of bombs2, section 3).

An object over 4 MiB is read by pydicom with ``defer_size=1024``. Ingest then decoded every
deferred value whose VR was not OB/OW/OD/OF/OL/OV as read: a private UN, every deferred value
of an implicit VR object (whose raw VR is None: an Encapsulated Document, a private blob), a
huge UT or number array; and the index's small attributes read the deferred standard OB (an
Encapsulated Document) to find it binary. Each cost the value's size in memory. The VR pydicom
would read the value with (the data dictionary's for implicit VR or UN) and the length now
decide: bytes, private values, numbers (checked by their length) and text over 1 MiB are left
unread; sequences and shorter text are decoded as before.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from struct import pack

import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin, StoreStatus
from archivist.errors import InvalidObject

MIB = 1 << 20
LARGE = 16 * MIB
#: Peak traced memory allowed for storing an object with one LARGE value (the old code took
#: at least LARGE; now ~2 MiB, the blob copy's buffers).
LIMIT = 6 * MIB
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
_LONG_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN", "UT", "UC", "UR", "SQ"}

Raw = dict[int, tuple[str, bytes]]


def _save(path: Path, raw: Raw, implicit: bool, extra: Dataset | None = None) -> Dataset:
    """A small Encapsulated PDF header as a Part 10 file, with the `raw` elements
    ({tag: (VR, value)}) written as they are; returns its data set (without `raw`)."""
    ds = extra if extra is not None else Dataset()
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "QA-LARGE"
    ds.PatientName = "Large^Values"
    ds.Modality = "DOC"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    for tag in sorted({*map(int, ds.keys()), *raw}):
        if tag not in raw:
            write_data_element(out, ds[tag])
            continue
        vr, value = raw[tag]
        if implicit:
            out.write(pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)))
        elif vr in _LONG_VRS:
            out.write(pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)))
        else:
            out.write(pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)))
        out.write(value)
    head = DicomBytesIO()
    write_file_meta_info(head, meta)
    path.write_bytes(b"\0" * 128 + b"DICM" + head.getvalue() + out.getvalue())
    return ds


def _peak(fn: Callable[[], object]) -> tuple[object, int]:
    """`fn()` and the peak of the memory traced while it ran."""
    gc.collect()
    tracemalloc.start()
    try:
        return fn(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _warm(archive: Archive, tmp_path: Path, implicit: bool) -> None:
    """Store a small object first: the validator's tables are loaded once per process."""
    small = tmp_path / "small.dcm"
    _save(small, {0x00091010: ("LO", b"WARM")}, implicit)
    archive.ingest.store_file(small, Origin("stow"))


_CREATOR = {0x7FD10010: ("LO", b"QA LARGE")}

# (implicit, raw elements): a LARGE value the validator does not read either.
BYTES_CASES = {
    "explicit-private-UN": (False, {**_CREATOR, 0x7FD11000: ("UN", bytes(LARGE))}),
    "explicit-private-OB": (False, {**_CREATOR, 0x7FD11000: ("OB", bytes(LARGE))}),
    "implicit-private": (True, {**_CREATOR, 0x7FD11000: ("OB", bytes(LARGE))}),
    "implicit-encapsulated-document": (True, {0x00420011: ("OB", bytes(LARGE))}),
    "explicit-encapsulated-document": (False, {0x00420011: ("OB", bytes(LARGE))}),
    "explicit-encapsulated-document-as-UN": (False, {0x00420011: ("UN", bytes(LARGE))}),
    "implicit-overlay-data": (True, {0x60003000: ("OW", bytes(LARGE))}),
    # (an explicit VR FD has a 16-bit length: only implicit VR holds a large one)
    "implicit-numbers-FD": (True, {0x00189089: ("FD", bytes(LARGE))}),
}

# Text: with validation off (the validator itself reads a deferred text value whole).
TEXT_CASES = {
    "explicit-UT": (False, {0x0040A160: ("UT", b"a" * LARGE)}),
    "implicit-UT": (True, {0x0040A160: ("UT", b"a" * LARGE)}),
    "explicit-private-UT": (False, {**_CREATOR, 0x7FD11000: ("UT", b"a" * LARGE)}),
}


def _store_bounded(archive: Archive, tmp_path: Path, implicit: bool, raw: Raw,
                   large_tag: int) -> None:
    _warm(archive, tmp_path, implicit)
    path = tmp_path / "large.dcm"
    ds = _save(path, raw, implicit)
    result, peak = _peak(lambda: archive.ingest.store_file(path, Origin("stow")))
    assert result.status is StoreStatus.STORED  # type: ignore[attr-defined]
    assert peak < LIMIT, f"storing a {LARGE >> 20} MiB value peaked at {peak / MIB:.1f} MiB"
    row = archive.index.get_instance(ds.SOPInstanceUID)
    assert row is not None
    attrs = json.loads(row["attrs"])
    assert attrs["00100020"] == {"vr": "LO", "Value": ["QA-LARGE"]}
    assert f"{large_tag:08X}" not in attrs


@pytest.mark.parametrize("case", list(BYTES_CASES))
def test_a_large_value_of_bytes_is_not_read(open_archive: Callable[..., Archive],
                                            tmp_path: Path, case: str) -> None:
    implicit, raw = BYTES_CASES[case]
    archive = open_archive()  # validation on ingest on (the default, "warn")
    assert archive.settings.validation_policy == "warn"
    _store_bounded(archive, tmp_path, implicit, raw, max(raw))


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_a_large_text_value_is_not_read(open_archive: Callable[..., Archive],
                                        tmp_path: Path, case: str) -> None:
    implicit, raw = TEXT_CASES[case]
    archive = open_archive(validation_policy="off")
    _store_bounded(archive, tmp_path, implicit, raw, max(raw))


def test_a_number_value_of_a_wrong_length_is_refused_unread(
        open_archive: Callable[..., Archive], tmp_path: Path) -> None:
    """As before, an FD value whose length is not a multiple of 8 cannot be decoded and the
    object is refused; its length says so, the value is not read."""
    archive = open_archive(validation_policy="off")
    _warm(archive, tmp_path, True)
    path = tmp_path / "odd.dcm"
    _save(path, {0x00189089: ("FD", bytes(LARGE + 4))}, True)

    def store() -> None:
        with pytest.raises(InvalidObject,
                           match=r"cannot decode element \(0018,9089\): BytesLengthException"):
            archive.ingest.store_file(path, Origin("stow"))

    _, peak = _peak(store)
    assert peak < LIMIT
    assert archive.index.counts()["instance"] == 1  # the warm-up object only


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_deferred_sequences_and_short_text_are_still_decoded(
        open_archive: Callable[..., Archive], tmp_path: Path, implicit: bool) -> None:
    """In an object read by pydicom (over 4 MiB), the deferred values ingest needs or can
    check cheaply are decoded as before: a sequence over 1 KiB, text up to 1 MiB; the large
    bytes value is left raw and unread."""
    extra = Dataset()
    items = []
    for _ in range(40):
        item = Dataset()
        item.ReferencedSOPClassUID = ENCAPSULATED_PDF
        item.ReferencedSOPInstanceUID = generate_uid()
        items.append(item)
    extra.ReferencedInstanceSequence = Sequence(items)
    comments = "x" * 3000
    path = tmp_path / "mixed.dcm"
    _save(path, {0x00420011: ("OB", bytes(5 * MIB)),
                 0x00204000: ("LT", comments.encode())}, implicit, extra)
    archive = open_archive(validation_policy="off")
    ds, _ = archive.ingest.read_header(path)
    seq = ds._dict[0x0008114A]
    assert isinstance(seq, DataElement) and len(seq.value) == 40
    text = ds._dict[0x00204000]
    assert isinstance(text, DataElement) and text.value == comments
    doc = ds._dict[0x00420011]
    assert isinstance(doc, RawDataElement) and doc.value is None
    result = archive.ingest.store_file(path, Origin("stow"))
    row = archive.index.get_instance(result.sop_instance_uid)
    assert row is not None
    assert "00420011" not in json.loads(row["attrs"])
