"""Stored objects as DICOM JSON (PS3.18 F.2) with bulk data replaced by BulkDataURI.

Large binary values are never read: the file is parsed with deferred reading, and any binary
element longer than the threshold (and Pixel Data always) becomes a BulkDataURI pointing at the
``/bulkdata/{path}`` resource of its instance, where the path names the tag and, inside
sequences, the item index (``00540016/0/00181074``).
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import VR

from archivist.archive import part10
from archivist.archive.transcode import swapped, value_word_size
from archivist.index.extract import json_with_empty_values, use_gb2312_escape_sequences
from archivist.web.errors import HTTPProblem

log = logging.getLogger("archivist.web")
use_gb2312_escape_sequences()  # values in ISO 2022 IR 58 read as the index reads them

BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
BULK_THRESHOLD = 1024
PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF


def read_deferred(fh: BinaryIO) -> Dataset:
    """Parse a stored object without loading values longer than the bulk threshold (a
    deflated one is inflated a step at a time, and refused with a 406 past its limit:
    :func:`archivist.archive.part10.read_stored`)."""
    try:
        return part10.read_stored(fh, defer_size=BULK_THRESHOLD)
    except part10.InflateRefused as exc:
        raise HTTPProblem(406, f"this instance is not read here: {exc}") from None


def _vr_of(ds: Dataset, tag: BaseTag, raw: Any) -> str:
    vr = getattr(raw, "VR", None)
    if vr and " or " not in vr:
        return str(vr)
    if tag == PIXEL_DATA:
        if getattr(raw, "length", 0) == UNDEFINED:
            return "OB"
        bits = ds.get("BitsAllocated", 16)
        return "OB" if bits and int(bits) <= 8 else "OW"
    try:
        dvr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return dvr.split(" or ")[-1] if " or " in dvr else dvr


def _length(raw: Any) -> int:
    if isinstance(raw, RawDataElement):
        return int(raw.length)
    value = getattr(raw, "value", None)
    if value is None:
        return 0
    try:
        return len(value)
    except TypeError:
        return 0


def dataset_to_json(ds: Dataset, bulk_root: str, path: tuple[str, ...] = (), *,
                    inline_up_to: int = BULK_THRESHOLD) -> dict[str, Any]:
    """One dataset (not its File Meta) as a DICOM JSON object; binary values longer than
    `inline_up_to` bytes (and Pixel Data) become BulkDataURIs under `bulk_root`."""
    out: dict[str, Any] = {}
    for tag in list(ds.keys()):
        tag = Tag(tag)
        if tag.element == 0 or tag.group == 0x0002:
            continue  # group lengths and File Meta are not part of the data set's JSON
        # keep_deferred: pydicom 3 would otherwise read a deferred value whole (all of a
        # Pixel Data, a 100 MB private OB) only to have it replaced by a BulkDataURI.
        raw = ds.get_item(tag, keep_deferred=True)
        key = f"{tag:08X}"
        vr = _vr_of(ds, tag, raw)
        if vr in BULK_VRS:
            length = _length(raw)
            if tag == PIXEL_DATA or length == UNDEFINED or length > inline_up_to:
                uri = "/".join((*path, key))
                out[key] = {"vr": vr, "BulkDataURI": f"{bulk_root}/bulkdata/{uri}"}
                continue
        try:
            elem = ds[tag]
        except Exception as exc:  # noqa: BLE001 - one unreadable element must not hide the rest
            log.debug("element %s unreadable: %s", key, type(exc).__name__)
            out[key] = {"vr": vr}
            continue
        if elem.VR == "SQ":
            items = [dataset_to_json(item, bulk_root, (*path, key, str(i)),
                                     inline_up_to=inline_up_to)
                     for i, item in enumerate(elem.value or [])]
            out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        if ds.original_encoding[1] is False and value_word_size(elem.VR) > 1 and isinstance(
                elem.value, (bytes, bytearray)):
            # InlineBinary is little endian, as bulk data is (PS3.18 F.2.7, 8.7.3.3.1): the
            # words of a big endian object's OW, OL, OF, OD and OV values are turned around.
            elem = DataElement(elem.tag, elem.VR,
                               swapped(bytes(elem.value), value_word_size(elem.VR)))
        try:
            item = out[key] = elem.to_json_dict(None, inline_up_to)
        except Exception as exc:  # noqa: BLE001
            fallback = json_with_empty_values(elem, BULK_THRESHOLD)
            if fallback is None:
                log.debug("element %s not representable in JSON: %s", key, type(exc).__name__)
                fallback = {"vr": elem.VR}
            out[key] = fallback
            continue
        values = item.get("Value")
        if values and elem.VR in ("FL", "FD", "DS"):
            values = item["Value"] = _finite_or_text(elem, values)
        if values and len(values) > 1 and "" in values:
            # An empty value among several is null in DICOM JSON (PS3.18 F.2.5):
            # "\ISO 2022 IR 87" is [null, "ISO 2022 IR 87"].
            item["Value"] = [None if v == "" else v for v in values]
    return out


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _finite_or_text(elem: DataElement, values: list[Any]) -> list[Any]:
    """The JSON values of an FL, FD or DS element, a value JSON has no number for (NaN, an
    infinity, a DS such as ``1e400`` beyond a double) written as a string: ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"`` for FL and FD (as fo-dicom, dicom-rs and dcm4che's readers
    take them), a DS as its own text. A bare ``NaN`` or ``Infinity`` is not JSON (RFC 8259):
    a browser's JSON.parse refused a whole series' metadata for one such value."""
    if all(not isinstance(v, float) or math.isfinite(v) for v in values):
        return values
    originals = elem.value if isinstance(elem.value, (list, tuple, MultiValue)) else [elem.value]
    out: list[Any] = []
    for n, v in enumerate(values):
        if not isinstance(v, float) or math.isfinite(v):
            out.append(v)
            continue
        text = getattr(originals[n], "original_string", None) if n < len(originals) else None
        out.append(str(text).strip() if elem.VR == "DS" and text else
                   _NON_FINITE.get(repr(v).lower(), "NaN"))
    return out


def instance_json(fh: BinaryIO, bulk_root: str, transfer_syntax: str) -> dict[str, Any]:
    """The metadata of one stored instance (File Meta left out, Available Transfer Syntax in)."""
    ds = read_deferred(fh)
    body = dataset_to_json(ds, bulk_root)
    body["00083002"] = {"vr": "UI", "Value": [transfer_syntax]}
    return dict(sorted(body.items()))


def locate(ds: Dataset, path: list[str]) -> tuple[Dataset, int]:
    """The dataset holding the element a bulk data path names, and the element's tag.

    Raises KeyError or IndexError or ValueError when the path does not name an element.
    """
    current = ds
    parts = list(path)
    while len(parts) > 1:
        tag = int(parts.pop(0), 16)
        index = int(parts.pop(0))
        seq = current[tag]
        if seq.VR != "SQ":
            raise KeyError(tag)
        current = seq.value[index]
    tag = int(parts[0], 16)
    if tag not in current:
        raise KeyError(tag)
    return current, tag


_JSON_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_VRS = frozenset(v.value for v in VR if len(v.value) == 2)


def dataset_from_json(body: Any, what: str = "the data set") -> Dataset:
    """A data set from its DICOM JSON object (PS3.18 F.2), for request payloads (UPS-RS).

    Values come inline (``Value``, ``InlineBinary``); a ``BulkDataURI`` is refused, since this
    server fetches nothing a client names. Every failure is an :class:`HTTPProblem` 400 naming
    the attribute, so the client can tell which one to fix.
    """
    if not isinstance(body, dict):
        raise HTTPProblem(400, f"{what} must be a DICOM JSON object")
    ds = Dataset()
    for key, item in body.items():
        if not isinstance(key, str) or not _JSON_TAG.match(key):
            raise HTTPProblem(400, f"{what}: {str(key)[:20]!r} is not a tag (8 hexadecimal "
                              "digits, PS3.18 F.2.1)")
        label = f"({key[:4].upper()},{key[4:].upper()})"
        if not isinstance(item, dict) or not isinstance(item.get("vr"), str):
            raise HTTPProblem(400, f"{what}: {label} needs an object with its vr (PS3.18 F.2.2)")
        vr = item["vr"]
        if vr not in _VRS:
            raise HTTPProblem(400, f"{what}: {label} has the unknown VR {vr[:8]!r}")
        if "BulkDataURI" in item:
            raise HTTPProblem(400, f"{what}: {label} is given by BulkDataURI; send the value "
                              "inline (Value or InlineBinary)")
        if vr == "SQ":
            items = item.get("Value", [])
            if not isinstance(items, list):
                raise HTTPProblem(400, f"{what}: {label} Value must be an array of items")
            seq = [dataset_from_json(inner, f"{what}, {label} item {i + 1}")
                   for i, inner in enumerate(items)]
            ds.add(DataElement(int(key, 16), "SQ", Sequence(seq)))
            continue
        kind = "Value" if "Value" in item else ("InlineBinary" if "InlineBinary" in item
                                                else None)
        values = item[kind] if kind else [""]  # no value: empty (as pydicom's from_json)
        if kind == "Value" and not isinstance(values, list):
            raise HTTPProblem(400, f"{what}: {label} Value must be an array")
        try:
            elem = DataElement.from_json(Dataset, key, vr, values, kind)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - whatever pydicom finds wrong is the client's
            raise HTTPProblem(400, f"{what}: {label} is not a valid {vr[:4]!r} value "
                              f"({type(exc).__name__})") from None
        ds.add(elem)
    return ds
