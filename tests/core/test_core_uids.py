"""UID syntax (PS3.5 9.1) and padding removal."""

from __future__ import annotations

import pytest

from archivist.core.uids import clean_uid, is_valid_uid


class TestIsValidUid:
    @pytest.mark.parametrize("uid", [
        "1", "0", "1.2.3", "1.2.840.10008.1.2.1", "1.2.0.3", "9" * 64,
        "1." + "2" * 62,
    ])
    def test_valid(self, uid: str) -> None:
        assert is_valid_uid(uid) is True

    @pytest.mark.parametrize("uid", [
        "", "1.", ".1", "1..2", "1.2.a", "../x", "1.2.3/../../x", "1.2 .3", " 1.2", "1.2\x003",
        "1.2.3\n", "1.2.3\r\n", "9" * 65, "1." + "2" * 63, "-1.2", "1,2", "１.２",
    ])
    def test_invalid(self, uid: str) -> None:
        assert is_valid_uid(uid) is False

    @pytest.mark.parametrize("value", [None, 1, 1.2, b"1.2.3", ["1.2"]])
    def test_non_strings_are_invalid(self, value: object) -> None:
        assert is_valid_uid(value) is False

    def test_length_limit_is_64_inclusive(self) -> None:
        uid = "1." + "1" * 62
        assert len(uid) == 64 and is_valid_uid(uid) is True
        assert is_valid_uid(uid + "1") is False

    @pytest.mark.parametrize(("uid", "strict_ok"), [
        ("1.2.3", True), ("1.0.3", True), ("1.02.3", False), ("01.2", False), ("1.2.00", False),
    ])
    def test_strict_refuses_leading_zeros(self, uid: str, strict_ok: bool) -> None:
        assert is_valid_uid(uid) is True
        assert is_valid_uid(uid, strict=True) is strict_ok

    def test_strict_refuses_trailing_newline(self) -> None:
        assert is_valid_uid("1.2\n", strict=True) is False


class TestCleanUid:
    @pytest.mark.parametrize(("raw", "clean"), [
        ("1.2.3\x00", "1.2.3"), ("1.2.3 ", "1.2.3"), ("1.2.3\x00\x00", "1.2.3"),
        (" 1.2.3", "1.2.3"), ("1.2.3", "1.2.3"), (None, ""), ("", ""), ("\x00", ""),
    ])
    def test_strips_padding(self, raw: object, clean: str) -> None:
        assert clean_uid(raw) == clean

    def test_embedded_nul_is_kept_so_validation_refuses_it(self) -> None:
        assert clean_uid("1.2\x00.3\x00") == "1.2\x00.3"
        assert is_valid_uid(clean_uid("1.2\x00.3\x00")) is False

    def test_non_string_is_converted(self) -> None:
        assert clean_uid(123) == "123"
