"""Large values cost nothing to validate on ingest (QA deflate-bomb follow-up, bombs2).

Ingest reads an object with ``defer_size`` and validates that dataset; the validator read
every deferred value whole (``get_item``), so a 200 MB private OB or Encapsulated Document
cost its size in memory. A deferred value is now checked as if read raw: binary and "other"
VRs by their length, text by its bytes, read and dropped; a Type 1 text value is "empty" by
its bytes read only as far as the first that is not a space or NUL. The findings must be
those of the same object read without deferring anything (which the pinned corpus covers).
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from struct import pack

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from archivist.validate import Finding, validate_dataset

MIB = 1 << 20
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
LARGE = 24 * MIB


def _save(path: Path, ds: Dataset, raw: dict[int, tuple[str, bytes]], implicit: bool) -> None:
    """`ds` as a Part 10 file, with the `raw` elements ({tag: (VR, value)}) written as they are
    (odd and wrong lengths included) in their places."""
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    tags = sorted({*map(int, ds.keys()), *raw})
    for tag in tags:
        if tag in raw:
            vr, value = raw[tag]
            if implicit:
                out.write(pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)))
            elif vr in ("OB", "UN", "SQ", "UT", "OW"):
                out.write(pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)))
            else:
                out.write(pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)))
            out.write(value)
        else:
            write_data_element(out, ds[tag])
    with path.open("wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        head = DicomBytesIO()
        write_file_meta_info(head, meta)
        fh.write(head.getvalue())
        fh.write(out.getvalue())


def _pdf(path: Path, implicit: bool, wrong_length: bool = True) -> None:
    """An Encapsulated PDF with a large document, a large private OB, and deferred values
    of every kind of check: odd length, binary length not a multiple of its size, too many
    binary values, text with a control character, a Type 1 text of nothing but spaces."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "LARGE^VALUES"
    ds.PatientID = "QALARGE"
    ds.Modality = "DOC"
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = "A" * 1500 + "\x01"  # ST, deferred, a control character
    ds.MIMETypeOfEncapsulatedDocument = " " * 2000  # LO, Type 1, deferred, empty
    ds.EncapsulatedDocument = b"%PDF-1.4\n" + bytes(LARGE - 10) + b"\n"
    raw = {
        0x00189089: ("FD", bytes(2048)),  # FD VM 3 with 256 values
        0x00189087: ("FD", bytes(2052)),  # FD VM 1 of 2052 bytes: not a multiple of 8
        0x7FD10010: ("LO", b"QA LARGE"),
        0x7FD11000: ("OB", bytes(LARGE)),
        0x04000120: ("OB", bytes(2049)),  # Signature: odd
        0x7FD11001: ("OB", bytes(2049)),  # odd, private (not checked, read or not)
        0x7FD11002: ("UN", b"\x01" * 3000),
    }
    if not wrong_length:  # pydicom cannot read it (the validator read it whole and failed)
        del raw[0x00189087]
    _save(path, ds, raw, implicit)


def _summary(findings: list[Finding]) -> list[tuple[str, str, str, str]]:
    return [(f.severity.value, f.rule_id, f.path, f.message) for f in findings]


def _validated_deferred(path: Path) -> tuple[list[Finding], int]:
    """The findings on `path` read as ingest reads it, and the peak of memory allocated by
    the validation alone (the PS3.3 tables loaded first)."""
    with path.open("rb") as fh:
        validate_dataset(pydicom.dcmread(fh, defer_size=1024))
    with path.open("rb") as fh:
        ds = pydicom.dcmread(fh, defer_size=1024)
        gc.collect()
        tracemalloc.start()
        try:
            findings = validate_dataset(ds)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return findings, peak


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
class TestLargeDeferredValues:
    def test_not_loaded_to_be_validated(self, tmp_path: Path, implicit: bool) -> None:
        path = tmp_path / "large.dcm"
        _pdf(path, implicit, wrong_length=False)
        findings, peak = _validated_deferred(path)
        assert findings
        assert peak < 8 * MIB, f"validating took {peak / MIB:.1f} MiB"

    def test_findings_are_those_of_a_full_read(self, tmp_path: Path, implicit: bool) -> None:
        path = tmp_path / "large.dcm"
        _pdf(path, implicit)
        deferred, _ = _validated_deferred(path)
        full = validate_dataset(pydicom.dcmread(path))
        assert _summary(deferred) == _summary(full)
        rules = {(f.rule_id, f.path.rsplit("/", 1)[-1]) for f in deferred}
        if not implicit:  # an implicit VR element has no VR to check its length by
            assert ("encoding.odd-length", "Signature(0400,0120)") in rules, rules
            assert ("dict.value-length", "DiffusionBValue(0018,9087)") in rules, rules
            assert ("dict.vm", "DiffusionGradientOrientation(0018,9089)") in rules, rules
        assert ("dict.value-invalid", "DocumentTitle(0042,0010)") in rules, rules
        if not implicit:  # nor a text VR for an empty value (the full read agrees)
            assert ("iod.type1-empty", "MIMETypeOfEncapsulatedDocument(0042,0012)") in rules, rules


def test_a_deferred_private_sequence_is_still_walked(tmp_path: Path) -> None:
    """An implicit VR private element whose value is an item is read and walked as a
    sequence, as before (the check of its first bytes does not skip it)."""
    item = Dataset()
    item.PatientName = "X" * 40 + "\x01"  # a control character inside the private item
    ds = Dataset()
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = generate_uid()
    ds.add_new(0x00290010, "LO", "QA SEQ")
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, True
    write_dataset(encoded, item)
    tail = pack("<HHL", 0x0029, 0x0011, 2048 - 8)  # past defer_size: a private tail
    body = encoded.getvalue() + tail + bytes(2048 - 8)
    value = pack("<HHL", 0xFFFE, 0xE000, len(body)) + body
    path = tmp_path / "seq.dcm"
    _save(path, ds, {0x00291000: ("SQ", value)}, True)
    deferred, _ = _validated_deferred(path)
    full = validate_dataset(pydicom.dcmread(path))
    assert _summary(deferred) == _summary(full)


def test_a_large_binary_value_of_an_image_is_not_read_by_the_conditions(tmp_path: Path) -> None:
    """The IOD conditions that look for non-ASCII text (an image's Specific Character Set
    rule) read every deferred value to learn its VR: a 64 MiB private OB before the pixel data
    was loaded whole (+80 MiB at ingest); it is now read only when it is text."""
    from archivist.testing.datasets import make_instance

    src = tmp_path / "image.dcm"
    ds = make_instance(src)  # no Specific Character Set: its condition looks at the text
    big = tmp_path / "big.dcm"
    ds.add_new(0x7FD10010, "LO", "QA")
    ds.add_new(0x7FD11000, "OB", bytes(8 * MIB))
    ds.save_as(big, enforce_file_format=True)
    with big.open("rb") as fh:
        read = pydicom.dcmread(fh, defer_size=1024)
        assert read.get_item(0x7FD11000, keep_deferred=True).value is None
        validate_dataset(read)
        assert read.get_item(0x7FD11000, keep_deferred=True).value is None  # still unread
