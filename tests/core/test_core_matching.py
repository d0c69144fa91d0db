"""Attribute matching (PS3.4 C.2.2.2): parsing query values and matching in Python."""

from __future__ import annotations

import pytest
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from archivist.core.levels import MatchKind, QueryLevel
from archivist.core.matching import (
    Constraint,
    build_query,
    normalise_date,
    normalise_pn,
    normalise_time,
    parse_constraint,
    value_matches,
    wildcard_to_regex,
)
from archivist.errors import QueryError


class TestNormalise:
    @pytest.mark.parametrize(("raw", "norm"), [
        ("Müller^Jürgen", "muller^jurgen"), ("DOE^JOHN", "doe^john"), ("Ŝtraße", "strasse"),
        ("Яковлев^Иван", "яковлев^иван"), ("Éloïse", "eloise"),
    ])
    def test_pn(self, raw: str, norm: str) -> None:
        assert normalise_pn(raw) == norm

    def test_pn_fold_of_cyrillic_short_i_drops_the_breve(self) -> None:
        assert normalise_pn("Й") == "и"

    @pytest.mark.parametrize(("raw", "norm"), [
        ("2024.01.02", "20240102"), ("2024-01-02", "20240102"), (" 20240102 ", "20240102"),
    ])
    def test_date(self, raw: str, norm: str) -> None:
        assert normalise_date(raw) == norm

    @pytest.mark.parametrize(("raw", "norm"), [
        ("10:15:00", "101500"), ("10:15:00.123", "101500.123"), ("1015", "1015"),
    ])
    def test_time(self, raw: str, norm: str) -> None:
        assert normalise_time(raw) == norm


class TestParseConstraint:
    @pytest.mark.parametrize("raw", [None, "", "   ", "*", "**", "\\"])
    def test_universal(self, raw: object) -> None:
        assert parse_constraint("PatientID", raw) is None

    def test_single_value(self) -> None:
        assert parse_constraint("PatientID", "PID1 ") == Constraint(
            "PatientID", "single", ("PID1",), MatchKind.TEXT)

    @pytest.mark.parametrize("raw", ["DOE*", "D?E", "*JOHN*", "?"])
    def test_wildcard(self, raw: str) -> None:
        c = parse_constraint("PatientName", raw)
        assert c == Constraint("PatientName", "wildcard", (raw,), MatchKind.PN)

    def test_uid_list(self) -> None:
        c = parse_constraint("StudyInstanceUID", "1.2.3\\1.2.4\\1.2.5")
        assert c == Constraint("StudyInstanceUID", "list", ("1.2.3", "1.2.4", "1.2.5"), MatchKind.UID)

    def test_uid_list_from_multivalue(self) -> None:
        c = parse_constraint("SOPInstanceUID", MultiValue(str, ["1.2", "1.3"]))
        assert c is not None and c.op == "list" and c.values == ("1.2", "1.3")

    def test_uid_single_strips_nul_padding(self) -> None:
        c = parse_constraint("SeriesInstanceUID", "1.2.3\x00")
        assert c == Constraint("SeriesInstanceUID", "single", ("1.2.3",), MatchKind.UID)

    def test_uid_star_is_universal(self) -> None:
        assert parse_constraint("SOPInstanceUID", "*") is None

    @pytest.mark.parametrize("keyword", ["StudyDate", "StudyTime", "AcquisitionDateTime",
                                         "SeriesNumber"])
    def test_a_lone_star_on_dates_times_and_numbers_is_universal(self, keyword: str) -> None:
        """Wildcards do not apply to DA, TM, DT or IS, but StudyDate=* is common for "any":
        universal matching, not a refused query (it was 0xA900); "2024*" is still refused."""
        assert parse_constraint(keyword, "*") is None
        assert parse_constraint(keyword, "**") is None

    def test_count_keys_are_return_keys_only(self) -> None:
        assert parse_constraint("NumberOfStudyRelatedInstances", "5") is None

    @pytest.mark.parametrize(("raw", "low", "high"), [
        ("20240101-20241231", "20240101", "20241231"),
        ("20240101-", "20240101", ""),
        ("-20241231", "", "20241231"),
        ("2024.01.01-2024.12.31", "20240101", "20241231"),
    ])
    def test_date_range(self, raw: str, low: str, high: str) -> None:
        c = parse_constraint("StudyDate", raw)
        assert c == Constraint("StudyDate", "range", (low, high), MatchKind.DATE)

    def test_date_range_without_ends_is_universal(self) -> None:
        assert parse_constraint("StudyDate", "-") is None

    def test_iso_date_is_a_single_value(self) -> None:
        c = parse_constraint("StudyDate", "2024-01-02")
        assert c == Constraint("StudyDate", "single", ("20240102",), MatchKind.DATE)

    @pytest.mark.parametrize(("raw", "values"), [
        ("1000-1200", ("1000", "1200")), ("10-", ("10", "")), ("-11:30", ("", "1130")),
        ("101500.5-", ("101500.5", "")),
    ])
    def test_time_range(self, raw: str, values: tuple[str, str]) -> None:
        c = parse_constraint("StudyTime", raw)
        assert c == Constraint("StudyTime", "range", values, MatchKind.TIME)

    @pytest.mark.parametrize(("keyword", "raw"), [
        ("StudyDate", "2024"), ("StudyDate", "2024*"), ("StudyDate", "abcdefgh"),
        ("StudyDate", "20240101-2024"), ("StudyTime", "1"), ("StudyTime", "25:00:00x"),
        ("StudyTime", "10-1"), ("SeriesNumber", "one"), ("InstanceNumber", "1.5"),
        # digits in the right places but no date or time (hour 25, minute 60, month 13)
        ("StudyTime", "25"), ("StudyTime", "1060"), ("StudyTime", "10-2500"),
        ("StudyDate", "20241301"), ("StudyDate", "20240100"), ("StudyDate", "-20240132"),
    ])
    def test_malformed(self, keyword: str, raw: str) -> None:
        with pytest.raises(QueryError, match=keyword):
            parse_constraint(keyword, raw)

    def test_int_single(self) -> None:
        assert parse_constraint("SeriesNumber", " 007 ") == Constraint(
            "SeriesNumber", "single", ("7",), MatchKind.INT)

    def test_int_from_number(self) -> None:
        assert parse_constraint("InstanceNumber", 3) == Constraint(
            "InstanceNumber", "single", ("3",), MatchKind.INT)

    def test_multi_key_is_any_of(self) -> None:
        c = parse_constraint("ModalitiesInStudy", "CT\\MR")
        assert c == Constraint("ModalitiesInStudy", "list", ("CT", "MR"), MatchKind.MULTI)
        single = parse_constraint("ModalitiesInStudy", "CT")
        assert single == Constraint("ModalitiesInStudy", "list", ("CT",), MatchKind.MULTI)

    def test_text_list(self) -> None:
        c = parse_constraint("Modality", "CT\\MR")
        assert c == Constraint("Modality", "list", ("CT", "MR"), MatchKind.TEXT)

    def test_pn_keeps_leading_space_and_drops_trailing(self) -> None:
        c = parse_constraint("PatientName", PersonName("DOE^JOHN  "))
        assert c == Constraint("PatientName", "single", ("DOE^JOHN",), MatchKind.PN)

    def test_unknown_keyword_is_text(self) -> None:
        c = parse_constraint("Manufacturer", "ACME*")
        assert c == Constraint("Manufacturer", "wildcard", ("ACME*",), MatchKind.TEXT)

    def test_explicit_kind_overrides_table(self) -> None:
        c = parse_constraint("ContentDate", "20240101-", MatchKind.DATE)
        assert c is not None and c.op == "range"


class TestWildcardToRegex:
    @pytest.mark.parametrize(("pattern", "text", "hit"), [
        ("DOE*", "DOE^JOHN", True), ("DOE*", "XDOE", False), ("*JOHN", "DOE^JOHN", True),
        ("D?E", "DOE", True), ("D?E", "DOOE", False), ("?", "", False), ("*", "", True),
        ("a.b", "aXb", False), ("a.b", "a.b", True), ("(x)[y]+", "(x)[y]+", True),
        ("a*b", "a\nb", True),
    ])
    def test_match(self, pattern: str, text: str, hit: bool) -> None:
        assert bool(wildcard_to_regex(pattern, fold=False).match(text)) is hit

    def test_fold(self) -> None:
        assert wildcard_to_regex("doe*", fold=True).match("DOE^JOHN")
        assert not wildcard_to_regex("doe*", fold=False).match("DOE^JOHN")


def _c(keyword: str, raw: object) -> Constraint:
    c = parse_constraint(keyword, raw)
    assert c is not None
    return c


class TestValueMatches:
    def test_absent_or_empty_value_never_matches(self) -> None:
        c = _c("PatientID", "X")
        assert value_matches(c, None) is False
        assert value_matches(c, "") is False

    def test_single_is_exact_and_case_sensitive_for_text(self) -> None:
        c = _c("StudyDescription", "Head")
        assert value_matches(c, "Head") is True
        assert value_matches(c, "head") is False
        assert value_matches(c, "Head CT") is False

    def test_pn_case_insensitive_option(self) -> None:
        c = _c("PatientName", "müller^jürgen")
        assert value_matches(c, "Müller^Jürgen") is True
        assert value_matches(c, "MULLER^JURGEN") is True
        assert value_matches(c, "Müller^Jürgen", pn_fold=False) is False
        assert value_matches(c, "müller^jürgen", pn_fold=False) is True

    def test_pn_wildcard_folded(self) -> None:
        c = _c("PatientName", "müller*")
        assert value_matches(c, "Müller^Jürgen") is True
        assert value_matches(c, "Mueller^Jürgen") is False
        assert value_matches(c, "Müller^Jürgen", pn_fold=False) is False

    def test_cyrillic_pn(self) -> None:
        c = _c("PatientName", "яковлев*")
        assert value_matches(c, "Яковлев^Иван") is True
        assert value_matches(c, "Иванов^Яков") is False

    def test_text_wildcard_is_case_sensitive(self) -> None:
        c = _c("Manufacturer", "ACME*")
        assert value_matches(c, "ACME Medical") is True
        assert value_matches(c, "acme Medical") is False

    def test_question_mark_is_one_character(self) -> None:
        c = _c("PatientID", "PID?")
        assert [value_matches(c, v) for v in ("PID1", "PID", "PID12")] == [True, False, False]

    def test_list(self) -> None:
        c = _c("Modality", "CT\\MR")
        assert [value_matches(c, v) for v in ("CT", "MR", "US", "ct")] == [True, True, False, False]

    def test_multi_valued_stored_value_matches_any(self) -> None:
        c = _c("ImageType", "AXIAL")
        assert value_matches(c, ["ORIGINAL", "PRIMARY", "AXIAL"]) is True
        assert value_matches(c, ["DERIVED", "SECONDARY"]) is False
        assert value_matches(c, []) is False

    def test_int(self) -> None:
        c = _c("InstanceNumber", "7")
        assert value_matches(c, 7) is True
        assert value_matches(c, "007") is True
        assert value_matches(c, "8") is False
        assert value_matches(c, "x") is False

    @pytest.mark.parametrize(("raw", "stored", "hit"), [
        ("20240101-20241231", "20240615", True),
        ("20240101-20241231", "20240101", True),
        ("20240101-20241231", "20241231", True),
        ("20240101-20241231", "20231231", False),
        ("20240101-20241231", "20250101", False),
        ("20240101-", "29991231", True),
        ("20240101-", "20231231", False),
        ("-20240101", "19000101", True),
        ("-20240101", "20240102", False),
        ("20240101-20241231", "2024.06.15", True),
    ])
    def test_date_range(self, raw: str, stored: str, hit: bool) -> None:
        assert value_matches(_c("StudyDate", raw), stored) is hit

    @pytest.mark.parametrize(("raw", "stored", "hit"), [
        ("1000-1200", "1100", True), ("1000-1200", "120059", True), ("1000-1200", "1201", False),
        ("1000-1200", "095959", False), ("10-", "103000", True), ("-0930", "093000.5", True),
        ("-0930", "0931", False), ("1000-1200", "11:00:00", True),
    ])
    def test_time_range(self, raw: str, stored: str, hit: bool) -> None:
        assert value_matches(_c("StudyTime", raw), stored) is hit

    def test_date_single(self) -> None:
        c = _c("StudyDate", "20240102")
        assert value_matches(c, "20240102") is True
        assert value_matches(c, "20240103") is False

    def test_unknown_op_is_no_match(self) -> None:
        assert value_matches(Constraint("PatientID", "bogus", ("x",)), "x") is False


class TestBuildQuery:
    def test_return_keys_and_constraints(self) -> None:
        q = build_query(QueryLevel.STUDY, [
            ("QueryRetrieveLevel", "STUDY"), ("SpecificCharacterSet", "ISO_IR 192"),
            ("PatientName", "DOE*"), ("StudyInstanceUID", ""), ("StudyDate", "20240101-"),
            ("PatientName", "IGNORED"), ("ModalitiesInStudy", None),
        ])
        assert q.level is QueryLevel.STUDY
        assert q.return_keys == ["PatientName", "StudyInstanceUID", "StudyDate",
                                 "ModalitiesInStudy"]
        assert [(c.keyword, c.op) for c in q.constraints] == [
            ("PatientName", "wildcard"), ("StudyDate", "range")]
        assert q.pn_case_insensitive is True

    def test_constraint_lookup(self) -> None:
        q = build_query(QueryLevel.IMAGE, [("SOPInstanceUID", "1.2"), ("Rows", "")],
                        pn_case_insensitive=False)
        assert q.constraint("SOPInstanceUID") == Constraint(
            "SOPInstanceUID", "single", ("1.2",), MatchKind.UID)
        assert q.constraint("Rows") is None
        assert q.pn_case_insensitive is False

    def test_bad_value_raises(self) -> None:
        with pytest.raises(QueryError):
            build_query(QueryLevel.STUDY, [("StudyDate", "yesterday")])
