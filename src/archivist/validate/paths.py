"""Attribute paths in findings, written the way ``dciodvfy -new`` writes them.

``/AnatomicRegionSequence(0008,2218)[1]/CodeValue(0008,0100)``: each step is the keyword (or
``Unknown`` / ``Private``) and the tag; a 1-based item number follows a sequence step.
"""

from __future__ import annotations

import functools

from pydicom.datadict import dictionary_keyword, keyword_for_tag


@functools.lru_cache(maxsize=8192)
def step(tag: int) -> str:
    """Return one path step, ``/Keyword(gggg,eeee)``, for a tag."""
    group, elem = tag >> 16, tag & 0xFFFF
    if group & 1:
        keyword = "Private"
    else:
        keyword = keyword_for_tag(tag) or _repeater_keyword(tag) or "Unknown"
    return f"/{keyword}({group:04X},{elem:04X})"


def _repeater_keyword(tag: int) -> str:
    try:
        return dictionary_keyword(tag)
    except KeyError:
        return ""


def item(path: str, index: int) -> str:
    """Return the path of the 0-based item *index* of the sequence at *path* (1-based, like dciodvfy)."""
    return f"{path}[{index + 1}]"


def keyword_of(tag: int) -> str:
    """The keyword of a tag, or ``(gggg,eeee)`` when it has none."""
    return keyword_for_tag(tag) or _repeater_keyword(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
