"""Whether a data set's bytes hold whole elements to their last byte (PS3.5 7.1, 7.5).

pydicom reads a data set lazily and stops quietly where its bytes end, so a data set cut short
on the way (a request's Modification List missing its last bytes) decodes into fewer
attributes, or a shorter last value, with no error. :func:`ends_cleanly` walks the element
headers (tag, VR, length) without decoding any value: every defined length must fit, every
undefined-length value (a sequence, encapsulated pixel data, an item) must reach its
delimiter, and the last element must end at the last byte.
"""

from __future__ import annotations

import struct

__all__ = ["ends_cleanly"]

_UNDEFINED = 0xFFFFFFFF
#: Explicit VRs with a reserved field and a 32-bit length (PS3.5 Table 7.1-1).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_MAX_DEPTH = 64


class _Short(Exception):
    pass


def ends_cleanly(data: bytes, *, implicit: bool, little: bool) -> bool:
    """True when `data` is whole elements, the last ending at its last byte."""
    walk = _Walk(data, implicit, little)
    try:
        return walk.elements(0, 0, in_item=False) == len(data)
    except (_Short, struct.error):
        return False


class _Walk:
    def __init__(self, data: bytes, implicit: bool, little: bool) -> None:
        self.data = data
        self.end = len(data)
        self.implicit = implicit
        order = "<" if little else ">"
        self.tag = struct.Struct(order + "HH")
        self.item = struct.Struct(order + "HHL")
        self.short = struct.Struct(order + "H")
        self.long = struct.Struct(order + "L")

    def elements(self, pos: int, depth: int, *, in_item: bool) -> int:
        data, end = self.data, self.end
        while pos < end:
            if pos + 8 > end:
                raise _Short
            group, element = self.tag.unpack_from(data, pos)
            if group == 0xFFFE:
                if in_item and element == 0xE00D:  # the item's delimiter
                    return pos + 8
                raise _Short
            if self.implicit:
                length = self.long.unpack_from(data, pos + 4)[0]
                pos += 8
            elif data[pos + 4:pos + 6] in _LONG_VRS:
                if pos + 12 > end:
                    raise _Short
                length = self.long.unpack_from(data, pos + 8)[0]
                pos += 12
            else:
                length = self.short.unpack_from(data, pos + 6)[0]
                pos += 8
            if length == _UNDEFINED:
                pos = self.items(pos, depth + 1)
            else:
                pos += length
                if pos > end:
                    raise _Short
        if in_item:
            raise _Short  # an undefined-length item without its delimiter
        return pos

    def items(self, pos: int, depth: int) -> int:
        if depth > _MAX_DEPTH:
            raise _Short
        data, end = self.data, self.end
        while True:
            if pos + 8 > end:
                raise _Short
            group, element, length = self.item.unpack_from(data, pos)
            pos += 8
            if group != 0xFFFE:
                raise _Short
            if element == 0xE0DD:  # the sequence's delimiter
                return pos
            if element != 0xE000:
                raise _Short
            if length == _UNDEFINED:
                pos = self.elements(pos, depth, in_item=True)
            else:
                pos += length
                if pos > end:
                    raise _Short
