"""A UID padded with a trailing space is reported as a warning (PS3.5 6.2: UI values are padded
with a single NUL, and the space is not in the UI repertoire). It was accepted silently: the
value was read with NULs and spaces stripped (QA s23). dciodvfy reports it as an error; we warn,
for it is common in the field and an error would refuse such objects under
``validation_policy=reject``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from validation_cases import ct, write

from archivist.validate import validate_dataset, validate_file

SERIES_UID = 0x0020000E


def _with_raw_uid(value: bytes) -> pydicom.Dataset:
    ds = ct()
    ds._dict[Tag(SERIES_UID)] = RawDataElement(Tag(SERIES_UID), "UI", len(value), value, 0,
                                               False, True)
    return ds


def _space_findings(ds: pydicom.Dataset) -> list[tuple[str, str, str]]:
    return [(f.severity.value, f.path, f.reference) for f in validate_dataset(ds)
            if f.rule_id == "dict.uid-space-padding"]


class TestUidSpacePadding:
    def test_trailing_space_is_a_warning(self) -> None:
        assert _space_findings(_with_raw_uid(b"1.2.3 ")) == [
            ("warning", "/SeriesInstanceUID(0020,000E)", "PS3.5 6.2, 9.1")
        ]

    def test_message_names_the_attribute_and_the_rule(self) -> None:
        finding = next(f for f in validate_dataset(_with_raw_uid(b"1.2.3 "))
                       if f.rule_id == "dict.uid-space-padding")
        assert "Series Instance UID" in finding.message and "NUL" in finding.message

    def test_no_other_finding_for_the_value(self) -> None:
        found = [f.rule_id for f in validate_dataset(_with_raw_uid(b"1.2.3 "))
                 if f.path == "/SeriesInstanceUID(0020,000E)"]
        assert found == ["dict.uid-space-padding"]

    def test_nul_padding_is_right(self) -> None:
        assert _space_findings(_with_raw_uid(b"1.2.3\x00")) == []
        assert _space_findings(_with_raw_uid(b"1.2.34")) == []

    def test_from_a_file(self, tmp_path: Path) -> None:
        path = write(_with_raw_uid(b"1.2.3 "), tmp_path / "uid.dcm")
        report = validate_file(path)
        assert report.ok  # a warning: not an error
        assert [f.rule_id for f in report.warnings if "SeriesInstanceUID" in f.path] == [
            "dict.uid-space-padding"
        ]

    @pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed")
    def test_dciodvfy_reports_it_too(self, tmp_path: Path) -> None:
        path = write(_with_raw_uid(b"1.2.3 "), tmp_path / "uid.dcm")
        err = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True,
                             check=False).stderr
        assert any("SeriesInstanceUID" in line and "Trailing character" in line
                   for line in err.splitlines())
