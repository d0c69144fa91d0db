"""Index rows of objects in ISO 2022 IR 58 (GB 2312): pydicom left the ``ESC $ ) A`` escape
sequence in the decoded values, which the index then kept, matched and answered."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from archivist.index.extract import extract
from archivist.testing.datasets import make_instance

G1 = b"\x1b$)A"


def _raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    value += b" " * (len(value) % 2)
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def test_gb2312_values_are_indexed_without_the_escape_sequence(tmp_path: Path) -> None:
    path = tmp_path / "gb.dcm"
    make_instance(path, charset=["", "ISO 2022 IR 58"], patient_name="X")
    ds = pydicom.dcmread(path)
    name = b"Zhang^XiaoDong=" + G1 + "张".encode("gb2312") + b"^" + G1 + "小东".encode("gb2312")
    ds[0x00100010] = _raw(0x00100010, "PN", name)
    ds[0x00081030] = _raw(0x00081030, "LO", G1 + "胸部检查".encode("gb2312"))
    ds[0x00081070] = _raw(0x00081070, "PN", name)  # no column: kept in the attributes JSON
    ds.save_as(path)

    rows = extract(pydicom.dcmread(path))
    assert rows.patient["patient_name"] == "Zhang^XiaoDong=张^小东"
    assert rows.study["study_description"] == "胸部检查"
    attrs = json.loads(rows.attrs_json)
    assert attrs["00081070"]["Value"] == [{"Alphabetic": "Zhang^XiaoDong", "Ideographic": "张^小东"}]
