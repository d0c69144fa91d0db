"""Whether a Part 10 object is cut short, from the lengths its elements declare (PS3.5 7.1).

pydicom reads a value that the file cuts short without complaint, and stops without complaint at
an element header cut short. What each top-level element declares must therefore be compared with
the size of the file: ingest refuses such an object, ``archivist codes check`` reports it.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

__all__ = ["cut_short"]

_UNDEFINED_LENGTH = 0xFFFFFFFF


def cut_short(ds: Dataset, read_to: int, size: int, source: Path | bytes) -> str | None:
    """Why the object `ds` was read from is cut short, or None when everything it declares fits.

    Parameters
    ----------
    ds
        The data set as pydicom read it from an object that is not deflated, its top-level
        elements still raw (``RawDataElement``, with ``value_tell`` and ``length``, as
        ``dcmread`` leaves them until they are used); sequences are parsed, not skipped.
    read_to
        Where reading stopped: the file position after the last element read, or past it when a
        deferred value was skipped by seeking.
    size
        The object's size in bytes.
    source
        The object (its file, or its bytes), to look at the bytes after the last element read.

    Returns
    -------
    str or None
        The reason (``"600 bytes in the file, the values need 1234"``), or None.
    """
    end = read_to
    parsed_to: int | None = None  # where the last top-level value ends (None: unknown)
    for raw in ds._dict.values():  # raw elements: nothing is decoded
        length = getattr(raw, "length", None)
        tell = getattr(raw, "value_tell", None)
        if tell is not None and length is not None and length != _UNDEFINED_LENGTH:
            end = max(end, tell + length)
            parsed_to = tell + length
        else:
            parsed_to = None
    if end > size:
        return f"{size} bytes in the file, the values need {end}"
    if parsed_to is not None and parsed_to < size and _leftover_is_data(source, parsed_to):
        # pydicom stops without complaint at an element header cut short.
        return f"the file ends inside an element header (byte {parsed_to} of {size})"
    return None


def _leftover_is_data(source: Path | bytes, offset: int) -> bool:
    """Whether the bytes after the last element read (fewer than an element header: pydicom
    stops there) hold anything but NUL padding."""
    if isinstance(source, bytes):
        rest = source[offset:offset + 16]
    else:
        with open(source, "rb") as fh:
            fh.seek(offset)
            rest = fh.read(16)
    return bool(rest.strip(b"\0"))
