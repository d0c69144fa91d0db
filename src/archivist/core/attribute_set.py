"""Attribute sets kept whole in the index (MPPS, UPS workitems): how they are encoded there and
read back, and the small value tests their rules share.

A set is stored as Explicit VR Little Endian without File Meta; its values are read back
lazily by pydicom.
"""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

__all__ = ["decode", "encode", "has_value", "label", "tag_of", "text"]


def encode(ds: Dataset) -> bytes:
    """`ds` as Explicit VR Little Endian bytes (no File Meta)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def decode(data: bytes) -> Dataset:
    """The data set :func:`encode` wrote."""
    return read_dataset(BytesIO(data), is_implicit_VR=False, is_little_endian=True)


def text(ds: Dataset, keyword: str) -> str:
    """`keyword`'s value as stripped text; "" when absent, empty, a sequence or undecodable."""
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a value that does not decode
        return ""
    if value is None or value == "" or isinstance(value, Sequence):
        return ""
    return str(value).strip()


def has_value(ds: Dataset, keyword: str) -> bool:
    """Whether `keyword` is present with a value (a sequence: with an item)."""
    elem = ds.data_element(keyword) if keyword in ds else None
    if elem is None or elem.value is None:
        return False
    if elem.VR == "SQ":
        return len(elem.value) > 0
    return str(elem.value).strip() != ""


def tag_of(keyword: str) -> int:
    return int(Tag(keyword))


def label(keyword: str) -> str:
    """``(gggg,eeee) Keyword``, as Error Comments name an attribute."""
    tag = tag_of(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}"
