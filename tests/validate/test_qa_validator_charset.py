"""Specific Character Set findings found by black-box QA (round 3).

- PS3.5 6.1.2.3 / PS3.3 C.12.1.1.2: ``ISO 2022 IR 6`` alone declares the default repertoire
  only, like an absent Specific Character Set; an 8-bit byte in a text value is then an error
  (dciodvfy: "Character invalid for character repertoire"). It was accepted silently.
- The repertoire message said "Specific Character Set (0008,0005) is absent" when the element
  was present with ``ISO_IR 6`` (or ``ISO 2022 IR 6``).
- PS3.3 C.12.1.1.2: a Specific Character Set with more than one value uses code extensions, and
  every value is then an ``ISO 2022`` defined term (Tables C.12-3 and C.12-4); ``ISO_IR 100\\
  ISO_IR 144`` or ``ISO_IR 192\\ISO 2022 IR 87`` was accepted silently. It is reported as
  ``dict.charset-unknown`` (not a defined term for a value of several), with its own message.

Each is checked both ways: the object that is wrong gives the error, the valid one does not.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset

from archivist.archive.validation import PixelDataInfo, validate_on_ingest
from archivist.validate import Finding, Severity, validate_dataset, validate_file

_CHARSET_RULES = ("dict.character-repertoire", "dict.charset-unknown")


def _ct(charset: str | list[str] | None, name: bytes | str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if charset is None:
        del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    return ds


def _charset_errors(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.rule_id, f.path, f.message) for f in findings
            if f.severity is Severity.ERROR and f.rule_id in _CHARSET_RULES]


class TestDefaultRepertoireDeclared:
    @pytest.mark.parametrize("charset", ["ISO 2022 IR 6", "ISO_IR 6", ["", "ISO 2022 IR 6"]])
    def test_an_8_bit_byte_is_an_error(self, charset: str | list[str]) -> None:
        errors = _charset_errors(validate_dataset(_ct(charset, b"M\xfcller")))
        assert [(rule, path) for rule, path, _m in errors] == [
            ("dict.character-repertoire", "/PatientName(0010,0010)")
        ]
        message = errors[0][2]
        assert "is absent" not in message  # it is present: say what it declares
        assert "default repertoire" in message and "Specific Character Set" in message

    def test_absent_keeps_its_message(self) -> None:
        errors = _charset_errors(validate_dataset(_ct(None, b"M\xfcller")))
        assert errors == [(
            "dict.character-repertoire", "/PatientName(0010,0010)",
            ("Patient's Name uses characters outside the default repertoire but Specific "
             "Character Set (0008,0005) is absent."),
        )]

    @pytest.mark.parametrize("charset", ["ISO 2022 IR 6", "ISO_IR 100", "ISO 2022 IR 100",
                                         ["", "ISO 2022 IR 100"], "ISO_IR 192"])
    def test_ascii_or_declared_is_clean(self, charset: str | list[str]) -> None:
        name = "Muller" if "IR 6" in str(charset) else "M\u00fcller".encode(
            "utf-8" if charset == "ISO_IR 192" else "latin-1")
        assert _charset_errors(validate_dataset(_ct(charset, name))) == []

    def test_on_ingest_as_in_a_file(self, tmp_path: Path) -> None:
        """Ingest's path (header read up to the Pixel Data, values raw) finds it too."""
        path = tmp_path / "ir6.dcm"
        _ct("ISO 2022 IR 6", b"M\xfcller").save_as(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(path, stop_before_pixels=True, defer_size=4096)
        found = list(validate_on_ingest(header, PixelDataInfo(0x7FE00010, 128 * 128 * 2)))
        assert ("dict.character-repertoire", "/PatientName(0010,0010)") in [
            (rule, p) for rule, p, _m in _charset_errors(found)
        ]
        assert "dict.character-repertoire" in [f.rule_id for f in validate_file(path).errors]


class TestCodeExtensionTerms:
    @pytest.mark.parametrize(("charset", "bad"), [
        (["ISO_IR 100", "ISO_IR 144"], ["ISO_IR 100", "ISO_IR 144"]),
        (["ISO_IR 192", "ISO 2022 IR 87"], ["ISO_IR 192"]),
        (["GB18030", "ISO 2022 IR 6"], ["GB18030"]),
        (["", "ISO_IR 100"], ["ISO_IR 100"]),
        (["ISO_IR 6", "ISO 2022 IR 87"], ["ISO_IR 6"]),
    ])
    def test_a_term_without_code_extensions_is_an_error(self, charset: list[str],
                                                        bad: list[str]) -> None:
        errors = _charset_errors(validate_dataset(_ct(charset, "Muller")))
        assert [(rule, path) for rule, path, _m in errors] == [
            ("dict.charset-unknown", "/SpecificCharacterSet(0008,0005)")
        ]
        message = errors[0][2]
        assert "ISO 2022" in message
        assert [t for t in charset if t and repr(t) in message] == bad

    def test_an_unknown_term_is_reported_once(self) -> None:
        errors = _charset_errors(validate_dataset(_ct(["ISO_IR 100", "KLINGON"], "Muller")))
        assert [(rule, message) for rule, _p, message in errors] == [
            ("dict.charset-unknown",
             "Specific Character Set value 'KLINGON' is not a defined term.")
        ]

    @pytest.mark.parametrize("charset", [
        ["", "ISO 2022 IR 87"], ["ISO 2022 IR 13", "ISO 2022 IR 87"],
        ["ISO 2022 IR 6", "ISO 2022 IR 87"], ["", "ISO 2022 IR 149"],
        ["ISO 2022 IR 100", "ISO 2022 IR 126"], "ISO_IR 100", "ISO_IR 192", "GB18030",
    ])
    def test_valid_combinations_are_clean(self, charset: str | list[str]) -> None:
        assert _charset_errors(validate_dataset(_ct(charset, "Muller"))) == []

    def test_pydicom_charset_files_give_no_charset_error(self) -> None:
        paths = get_charset_files("*.dcm")
        assert len(paths) > 10
        for path in paths:
            report = validate_file(path)
            assert [f for f in report.errors if f.rule_id in _CHARSET_RULES] == [], path


class TestMessages:
    def test_an_empty_specific_character_set_is_not_called_absent(self) -> None:
        errors = _charset_errors(validate_dataset(_ct("", b"M\xfcller")))
        assert [message for _r, _p, message in errors] == [
            ("Patient's Name uses characters outside the default repertoire but Specific "
             "Character Set (0008,0005) is empty.")
        ]

    def test_a_huge_unknown_term_is_not_quoted_whole(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _ct("X" * 20000, "Muller")
        errors = _charset_errors(validate_dataset(ds))
        assert [rule for rule, _p, _m in errors] == ["dict.charset-unknown"]
        assert len(errors[0][2]) < 400
        assert "20000 characters" in errors[0][2]

    def test_the_declared_terms_are_named(self) -> None:
        errors = _charset_errors(validate_dataset(_ct(["", "ISO 2022 IR 6"], b"M\xfcller")))
        assert errors[0][2] == (
            "Patient's Name uses characters outside the default repertoire but Specific "
            "Character Set (0008,0005) declares only ISO 2022 IR 6.")
