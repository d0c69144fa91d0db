"""Decoding a header's raw elements as pydicom does, with the values of repeated bytes remembered.

Ingest decodes every element of every object it stores (so an undecodable one is refused at
the door). pydicom's own way, ``convert_raw_data_element``, costs ~7 us per element here: its
hooks and dispatch take more than the conversion itself. Objects of one stream repeat most of
their values (SOP Class, dates, the patient, the study and series, Rows, Columns, spacing,
orientation...), so a value decoded once is looked up the next time by ``(VR, bytes,
character set)``. A miss is decoded by pydicom's :func:`pydicom.values.convert_value`, the
function its hook calls: the values and types are pydicom's, the cache only spares repeating
the work. (The byte order is part of the key: the same bytes are another number in a
big-endian file.)

Only elements whose value depends on nothing but their VR, bytes and character set go through
the cache: standard (not private) elements with an unambiguous text or number VR (explicit, or
the data dictionary's for an implicit VR element, as pydicom looks it up), values up to
:data:`MAX_CACHED_VALUE` bytes. Sequences, private, ``UN``, ambiguous-VR, LUT
Descriptor and bulk (``OB``, ``OW``...) elements are left to the caller.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from typing import Any, cast

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import _LUT_DESCRIPTOR_TAGS
from pydicom.valuerep import VR
from pydicom.values import convert_value

#: VRs whose decoded value is a function of (VR, bytes, character set) alone.
CACHED_VRS = frozenset({
    VR.AE, VR.AS, VR.CS, VR.DA, VR.DS, VR.DT, VR.IS, VR.LO, VR.LT, VR.PN, VR.SH, VR.ST, VR.TM,
    VR.UC, VR.UI, VR.UR, VR.UT, VR.US, VR.UL, VR.SS, VR.SL, VR.FL, VR.FD,
})

#: Longer values are decoded every time (free text, long lists of numbers).
MAX_CACHED_VALUE = 128

#: The cache is emptied when it holds this many values (a bound, not an LRU: cheap, and a
#: stream refills what it repeats at once). Full, it holds ~1.3 MB (16,384: ~5 MB per worker,
#: for no measurable gain: the values unique to each object fill it whatever its size).
MAX_CACHED = 4096

_LUT_TAGS = frozenset(_LUT_DESCRIPTOR_TAGS)
_cache: dict[tuple[str, bytes, Any, bool], Any] = {}
_implicit: dict[int, str | None] = {}  # tag -> the dictionary's VR (implicit VR elements)


def _fresh(value: Any) -> Any:
    """A value the caller may own: a MultiValue is a list and is copied, the other decoded
    types (str, UID, int, float, DSfloat, IS, PersonName) are immutable in use."""
    if type(value) is MultiValue:
        copy: MultiValue[Any] = MultiValue.__new__(MultiValue)
        copy._constructor = value._constructor
        copy._list = list(value._list)
        return copy
    return value


def vr_of(raw: RawDataElement) -> str | None:
    """The VR :func:`decode` takes `raw` with (an implicit VR element's is the data dictionary's,
    as pydicom looks it up), None when decode does not take it (the caller decodes it
    pydicom's way)."""
    tag = raw.tag
    if tag.is_private or tag in _LUT_TAGS or raw.value is None:
        return None
    vr = raw.VR
    if vr is None:
        vr = _dictionary_vr(tag)
    return vr if vr in CACHED_VRS else None


def _dictionary_vr(tag: int) -> str | None:
    """The data dictionary's VR of the standard element `tag` (None: unknown), remembered."""
    vr = _implicit.get(tag, "")
    if vr == "":
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = None
        if len(_implicit) < MAX_CACHED:
            _implicit[tag] = vr
    return vr


def value_vr(raw: RawDataElement) -> str | None:
    """The VR pydicom reads the value of the standard element `raw` with: its explicit VR, or
    the data dictionary's when it has none (implicit VR) or ``UN`` (an ambiguous one as the
    dictionary spells it, "OB or OW"...); None for a private element, or a tag the dictionary
    does not know."""
    tag = raw.tag
    if tag.is_private:
        return None
    vr = raw.VR
    if vr is None or vr == VR.UN:
        return _dictionary_vr(tag) or (None if vr is None else vr)
    return vr


def decode(raw: RawDataElement, encoding: str | MutableSequence[str], vr: str) -> DataElement:
    """`raw` decoded as ``convert_raw_data_element`` does, `vr` being :func:`vr_of` `raw`."""
    value_bytes = cast(bytes, raw.value)
    if len(value_bytes) > MAX_CACHED_VALUE:
        value = convert_value(vr, raw, encoding)
    else:
        key = (vr, value_bytes, encoding if type(encoding) is str else tuple(encoding),
               raw.is_little_endian)
        value = _cache.get(key, _cache)
        if value is _cache:
            value = convert_value(vr, raw, encoding)
            if len(_cache) >= MAX_CACHED:
                _cache.clear()
            _cache[key] = _fresh(value)
        else:
            value = _fresh(value)
    return DataElement(raw.tag, vr, value, raw.value_tell, raw.length == 0xFFFFFFFF,
                       already_converted=True)


def clear() -> None:
    """Forget every remembered value (tests)."""
    _cache.clear()
    _implicit.clear()


__all__ = ["CACHED_VRS", "MAX_CACHED", "MAX_CACHED_VALUE", "clear", "decode", "value_vr", "vr_of"]
