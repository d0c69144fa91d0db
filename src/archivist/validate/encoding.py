"""Encoding layer: PS3.10 file format and File Meta Information, PS3.5 pixel data encoding.

* PS3.10 7.1: the 128-byte preamble and the ``DICM`` prefix, and the File Meta Information
  elements (0002,eeee) with their types;
* PS3.10 7.1: File Meta Information Group Length matches the encoded group;
* PS3.10 7.1: Media Storage SOP Class/Instance UID equal the dataset's SOP Class/Instance UID;
* PS3.5 8.1.1 and A.4: native Pixel Data has the length that Rows, Columns, Samples per Pixel,
  Bits Allocated and Number of Frames imply; encapsulated transfer syntaxes carry encapsulated
  (undefined length) Pixel Data.
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from archivist.validate import paths
from archivist.validate.findings import Collector, Severity

ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO
PS310 = "PS3.10 7.1"

# PS3.10 Table 7.1-1: File Meta Information elements and their types.
META_ELEMENTS: tuple[tuple[int, str, str], ...] = (
    (0x00020000, "1", "FileMetaInformationGroupLength"),
    (0x00020001, "1", "FileMetaInformationVersion"),
    (0x00020002, "1", "MediaStorageSOPClassUID"),
    (0x00020003, "1", "MediaStorageSOPInstanceUID"),
    (0x00020010, "1", "TransferSyntaxUID"),
    (0x00020012, "1", "ImplementationClassUID"),
)

PIXEL_DATA = 0x7FE00010


def text_value(ds: Dataset, keyword: str) -> str:
    """The value of an attribute as text ("" when absent or None), or, when pydicom cannot
    decode it (an explicit VR that is no PS3.5 VR, say), its raw bytes as text: a corrupt
    element is reported by the data dictionary layer, never raised from here."""
    try:
        value = ds.get(keyword)
        return "" if value is None else str(value)
    except Exception:  # noqa: BLE001 - pydicom's conversion errors vary by VR
        tag = tag_for_keyword(keyword)
        elem: Any = ds._dict.get(BaseTag(tag)) if tag is not None else None
        raw = getattr(elem, "value", None)
        if not isinstance(raw, (bytes, bytearray)):
            return ""
        return bytes(raw).decode("latin-1").rstrip("\x00 ")


def check_preamble(head: bytes, out: Collector) -> bool:
    """Report a file without the PS3.10 preamble and ``DICM`` prefix; return True if present."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    out.add(
        WARNING, "part10.no-preamble", "", "",
        "The file has no 128-byte preamble and 'DICM' prefix: it is a bare dataset, not a "
        "DICOM Part 10 file.",
        PS310,
    )
    return False


def check_file_meta(meta: FileMetaDataset | None, ds: Dataset, out: Collector) -> None:
    """Check the File Meta Information against PS3.10 7.1 and the dataset it describes."""
    if meta is None or len(meta) == 0:
        out.add(ERROR, "part10.meta-missing", "", "File Meta Information",
                "The File Meta Information (group 0002) is missing.", PS310)
        return
    for tag, kind, keyword in META_ELEMENTS:
        if tag not in meta:
            out.add(ERROR, "part10.meta-element-missing", paths.step(tag), "File Meta Information",
                    f"Type {kind} element {keyword} is missing from the File Meta Information.",
                    PS310)
        elif meta[tag].value in (None, b"", ""):
            out.add(ERROR, "part10.meta-element-empty", paths.step(tag), "File Meta Information",
                    f"Type {kind} element {keyword} of the File Meta Information is empty.", PS310)
    version = meta.get("FileMetaInformationVersion")
    if version and bytes(version) != b"\x00\x01":
        out.add(ERROR, "part10.meta-version", paths.step(0x00020001), "File Meta Information",
                f"File Meta Information Version is {bytes(version).hex()}, expected 0001.",
                PS310)
    _check_group_length(meta, out)
    for meta_kw, ds_kw, rule in (
        ("MediaStorageSOPClassUID", "SOPClassUID", "part10.sop-class-mismatch"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID", "part10.sop-instance-mismatch"),
    ):
        a, b = text_value(meta, meta_kw), text_value(ds, ds_kw)
        if a and b and str(a).rstrip("\x00 ") != str(b).rstrip("\x00 "):
            tag = 0x00020002 if "Class" in meta_kw else 0x00020003
            out.add(ERROR, rule, paths.step(tag), "File Meta Information",
                    f"{meta_kw} ({a}) differs from {ds_kw} ({b}).", PS310)
    ts = text_value(meta, "TransferSyntaxUID")
    if ts:
        uid = UID(str(ts))
        if not uid.is_transfer_syntax:
            out.add(WARNING, "part10.transfer-syntax-unknown", paths.step(0x00020010),
                    "File Meta Information",
                    f"Transfer Syntax UID {uid} is not a transfer syntax of PS3.6 Annex A.",
                    "PS3.5 10")


def _check_group_length(meta: FileMetaDataset, out: Collector) -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    declared = meta.get("FileMetaInformationGroupLength")
    if declared in (None, ""):
        return
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    try:
        for tag in sorted(meta.keys()):
            if tag != 0x00020000:
                write_data_element(buffer, meta[tag])
    except Exception:  # noqa: BLE001 - elements that cannot be re-encoded are reported elsewhere
        return
    actual = len(buffer.getvalue())
    if int(declared) != actual:
        out.add(ERROR, "part10.group-length", paths.step(0x00020000), "File Meta Information",
                f"File Meta Information Group Length is {declared} but the group has "
                f"{actual} bytes.", PS310)


def check_pixel_data(ds: Dataset, transfer_syntax: str, out: Collector) -> None:
    """Check the Pixel Data length and encapsulation against the image description (PS3.5 8)."""
    if PIXEL_DATA not in ds:
        return
    elem = ds.get_item(PIXEL_DATA)
    undefined = bool(getattr(elem, "is_undefined_length", False))
    value = elem.value
    uid = UID(transfer_syntax) if transfer_syntax else None
    # A UID that is no transfer syntax is part10.transfer-syntax-unknown, judged as native here.
    compressed = uid is not None and uid.is_transfer_syntax and uid.is_compressed
    if compressed:
        if not undefined and not (isinstance(value, (bytes, bytearray)) and value[:4] == b"\xfe\xff\x00\xe0"):
            out.add(ERROR, "encoding.pixel-data-not-encapsulated", paths.step(PIXEL_DATA),
                    "Image Pixel",
                    f"Transfer syntax {UID(transfer_syntax).name} requires encapsulated Pixel "
                    "Data of undefined length.", "PS3.5 A.4")
        return
    if undefined or not isinstance(value, (bytes, bytearray)):
        return
    expected = expected_pixel_data_length(ds, out)
    if expected is not None and len(value) != expected:
        out.add(ERROR, "encoding.pixel-data-length", paths.step(PIXEL_DATA), "Image Pixel",
                f"Pixel Data has {len(value)} bytes; Rows x Columns x Samples per Pixel x Bits "
                f"Allocated x Number of Frames gives {expected}.", "PS3.5 8.1.1")


# The attributes that give the length of native Pixel Data (PS3.5 8.1.1), with their tags and
# the value assumed when they are absent (None: no length can be worked out without them).
_GEOMETRY: tuple[tuple[str, int, int | None], ...] = (
    ("Rows", 0x00280010, None),
    ("Columns", 0x00280011, None),
    ("SamplesPerPixel", 0x00280002, 1),
    ("BitsAllocated", 0x00280100, None),
    ("NumberOfFrames", 0x00280008, 1),
)


def expected_pixel_data_length(ds: Dataset, out: Collector | None = None) -> int | None:
    """The length native Pixel Data must have (PS3.5 8.1.1), None when it cannot be known.

    An attribute that is absent or empty leaves the length unknown (the IOD layer reports it);
    one that is present but cannot be read as a single integer (a US value of odd length, text
    that is no number, several values, a negative number) also leaves it unknown: the data
    dictionary layer reports text and extra values; a value pydicom cannot decode at all and a
    negative one are reported here, with `out`, as ``encoding.pixel-geometry-unreadable``. A
    malformed header gives findings, never an exception.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The dataset, read from a file or built in memory.
    out : Collector, optional
        Where to report attributes that cannot be read.

    Returns
    -------
    int or None
        The even number of bytes Rows x Columns x Samples per Pixel x Bits Allocated x Number
        of Frames gives, rounded up to whole bytes.
    """
    values: dict[str, int] = {}
    known = True
    for keyword, tag, default in _GEOMETRY:
        if tag not in ds:
            if default is None:
                known = False
            else:
                values[keyword] = default
            continue
        try:
            raw = ds[tag].value
        except Exception as exc:  # noqa: BLE001 - pydicom's conversion errors vary by VR
            raw, problem = None, f"cannot be decoded ({type(exc).__name__})"
        else:
            problem = ""
        if raw is None or raw == "" or raw == b"":
            if problem and out is not None:
                out.add(ERROR, "encoding.pixel-geometry-unreadable", paths.step(tag),
                        "Image Pixel", f"{keyword} {problem}, so the Pixel Data length cannot "
                        "be checked.", "PS3.5 8.1.1")
            if problem or default is None:
                known = False
            else:
                values[keyword] = default
            continue
        try:
            number = int(raw)
        except (TypeError, ValueError, OverflowError):
            known = False  # text or several values: dict.value-invalid / dict.vm report it
            continue
        if number == 0 and default is not None:
            number = default  # a zero count of samples or frames is read as the default
        if number < 0:
            known = False
            if out is not None:
                out.add(ERROR, "encoding.pixel-geometry-unreadable", paths.step(tag),
                        "Image Pixel", f"{keyword} is negative ({number}), so the Pixel Data "
                        "length cannot be checked.", "PS3.5 8.1.1")
            continue
        values[keyword] = number
    if not known:
        return None
    spp = values["SamplesPerPixel"]
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        spp = 2  # PS3.3 C.7.6.3.1.2: two samples per pixel once chroma is subsampled
    total_bits = (values["Rows"] * values["Columns"] * spp * values["NumberOfFrames"]
                  * values["BitsAllocated"])
    expected = (total_bits + 7) // 8
    return expected + expected % 2

