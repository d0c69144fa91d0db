"""UR values are checked as RFC 3986 URIs (QA s20: ``dcmodify -i "(0008,1190)=http://a b"``
gave no finding; dciodvfy reports "Value invalid for this VR [UR]").

PS3.5 6.2: a UR is a URI or URL (RFC 3986); leading spaces are not allowed, trailing spaces are
padding; a space, a control or a non-ASCII character must be percent-encoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydicom.dataelem import DataElement
from validation_cases import ct, write

from archivist.validate import Severity, validate_dataset, validate_file

_PATH = "/RetrieveURL(0008,1190)"


def _invalid(path: Path) -> list[str]:
    report = validate_file(str(path))
    return [
        f.message for f in report.findings
        if f.severity is Severity.ERROR and f.rule_id == "dict.value-invalid" and f.path == _PATH
    ]


def _file(tmp_path: Path, value: str | bytes) -> Path:
    ds = ct()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the invalid values made on purpose
        ds[0x00081190] = DataElement(0x00081190, "UR", value)
        return write(ds, tmp_path / "ur.dcm")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("http://a b", "' ' is not allowed"),
        (" http://a/b", "leading spaces"),
        ("http://a/b\tc", "'\\t' is not allowed"),
        ("http://a\\b", "'\\\\' is not allowed"),
        ("http://a/%4g", "'%' not followed by two hexadecimal digits"),
        (b"http://a/\xc3\xa9", "is not allowed in a URI"),
    ],
    ids=["space", "leading-space", "tab", "backslash", "bad-escape", "non-ascii"],
)
def test_invalid_uri(tmp_path: Path, value: str | bytes, why: str) -> None:
    messages = _invalid(_file(tmp_path, value))
    assert len(messages) == 1 and why in messages[0], messages
    assert messages[0].startswith("Value 1 of Retrieve URL (UR)")


@pytest.mark.parametrize(
    "value",
    [
        "http://a/b",
        "https://pacs.example.org:8443/dicom-web/studies/1.2.3?includefield=all#x",
        "http://[::1]/a%20b",
        "urn:oid:1.2.840.10008.1.2",
        "http://a/b  ",  # trailing spaces are padding
    ],
)
def test_valid_uri(tmp_path: Path, value: str) -> None:
    assert _invalid(_file(tmp_path, value)) == []


def test_in_memory_value() -> None:
    ds = ct()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.RetrieveURL = "http://a b"
    findings = validate_dataset(ds)
    assert [f.rule_id for f in findings if f.path == _PATH and
            f.severity is Severity.ERROR] == ["dict.value-invalid"]
