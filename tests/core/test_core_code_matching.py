"""Query keys: tags and keywords, dotted sequence paths, Code Sequence items (PS3.4 C.2.2.2.6)."""

from __future__ import annotations

import pytest

from archivist.core.levels import MatchKind, QueryLevel
from archivist.core.matching import (
    CodeConstraint,
    CodeItem,
    Constraint,
    build_query,
    parse_code_item,
    resolve_keyword,
)
from archivist.errors import QueryError

_T = MatchKind.TEXT


class TestResolveKeyword:
    @pytest.mark.parametrize(("key", "keyword"), [
        ("PatientName", "PatientName"), ("00100010", "PatientName"), ("00081032",
                                                                      "ProcedureCodeSequence"),
        ("0040a043", "ConceptNameCodeSequence"), (" StudyDate ", "StudyDate"),
    ])
    def test_known(self, key: str, keyword: str) -> None:
        assert resolve_keyword(key) == keyword

    @pytest.mark.parametrize("key", ["PatientNam", "00091001", "", "0010001", "x.y"])
    def test_unknown_is_a_query_error(self, key: str) -> None:
        with pytest.raises(QueryError):
            resolve_keyword(key)


class TestDottedPaths:
    def test_keywords_and_tags_give_the_same_query(self) -> None:
        by_keyword = build_query(QueryLevel.STUDY, [
            ("ProcedureCodeSequence.CodeValue", "36118008"),
            ("ProcedureCodeSequence.CodingSchemeDesignator", "SCT"),
        ])
        by_tag = build_query(QueryLevel.STUDY, [
            ("00081032.00080100", "36118008"), ("00081032.00080102", "SCT"),
        ])
        expected = [CodeConstraint("ProcedureCodeSequence", (CodeItem(
            scheme=Constraint("ProcedureCodeSequence.CodingSchemeDesignator", "single", ("SCT",),
                              _T),
            value=Constraint("ProcedureCodeSequence.CodeValue", "single", ("36118008",), _T),
        ),))]
        assert by_keyword.codes == by_tag.codes == expected
        assert by_keyword.return_keys == by_tag.return_keys == ["ProcedureCodeSequence"]
        assert by_keyword.constraints == []

    def test_same_as_an_identifier_item(self) -> None:
        pairs = build_query(QueryLevel.SERIES, [
            ("AnatomicRegionSequence.CodeValue", "T-62000"),
            ("AnatomicRegionSequence.CodingSchemeDesignator", "SRT"),
        ])
        items = build_query(QueryLevel.SERIES, [
            ("AnatomicRegionSequence", [{"CodeValue": "T-62000", "CodingSchemeDesignator": "SRT",
                                         "CodeMeaning": ""}]),
        ])
        assert pairs.codes == items.codes
        assert pairs.codes[0].items[0].exact

    def test_empty_values_only_ask_for_the_sequence(self) -> None:
        q = build_query(QueryLevel.STUDY, [("ProcedureCodeSequence.CodeValue", ""),
                                           ("ProcedureCodeSequence", "")])
        assert q.codes == [] and q.return_keys == ["ProcedureCodeSequence"]

    def test_zero_length_item_is_a_return_key(self) -> None:
        q = build_query(QueryLevel.STUDY, [("ProcedureCodeSequence", [{}]),
                                           ("AnatomicRegionSequence", [])])
        assert q.codes == []
        assert q.return_keys == ["ProcedureCodeSequence", "AnatomicRegionSequence"]

    def test_repeated_member_is_any_of(self) -> None:
        q = build_query(QueryLevel.STUDY, [
            ("ProcedureCodeSequence.CodeValue", "1"), ("ProcedureCodeSequence.CodeValue", "2"),
            ("ProcedureCodeSequence.CodingSchemeDesignator", "SCT"),
        ])
        value = q.codes[0].items[0].value
        assert value is not None and value.op == "list" and value.values == ("1", "2")

    def test_other_keys_still_match(self) -> None:
        q = build_query(QueryLevel.STUDY, [("00100010", "DOE*"),
                                           ("ProcedureCodeSequence.CodeValue", "1")])
        assert [c.keyword for c in q.constraints] == ["PatientName"]
        assert q.return_keys == ["PatientName", "ProcedureCodeSequence"]

    @pytest.mark.parametrize(("key", "words"), [
        ("ReferencedStudySequence.ReferencedSOPInstanceUID", "code sequences only"),
        ("ProcedureCodeSequence.ContextIdentifier", "supported on"),
        ("ProcedureCodeSequence.CodeValue.CodeValue", "one level deep"),
        ("ProcedureCodeSequence.NoSuchKeyword", "not a DICOM keyword"),
        ("PatientName.CodeValue", "code sequences only"),
    ])
    def test_unsupported_paths_are_query_errors(self, key: str, words: str) -> None:
        with pytest.raises(QueryError, match=words):
            build_query(QueryLevel.STUDY, [(key, "x")])

    def test_sequence_given_a_plain_value_is_an_error(self) -> None:
        with pytest.raises(QueryError, match="is a sequence"):
            build_query(QueryLevel.STUDY, [("ProcedureCodeSequence", "36118008")])

    def test_other_sequences_in_an_identifier_are_return_keys(self) -> None:
        q = build_query(QueryLevel.STUDY, [
            ("ReferencedStudySequence", [{"ReferencedSOPInstanceUID": "1.2.3"}]),
        ])
        assert q.codes == [] and q.constraints == []
        assert q.return_keys == ["ReferencedStudySequence"]


class TestCodeItem:
    def test_value_scheme_meaning(self) -> None:
        item = parse_code_item("ProcedureCodeSequence", {
            "CodeValue": "36118008", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Pneumo*"})
        assert item is not None and item.exact
        assert item.meaning == Constraint("ProcedureCodeSequence.CodeMeaning", "wildcard",
                                          ("Pneumo*",), _T)

    def test_value_alone_is_not_exact(self) -> None:
        item = parse_code_item("ProcedureCodeSequence", {"CodeValue": "36118008"})
        assert item is not None and not item.exact and item.scheme is None

    def test_long_and_urn_code_values(self) -> None:
        item = parse_code_item("ConceptNameCodeSequence", {
            "LongCodeValue": "A" * 20, "CodingSchemeDesignator": "99X"})
        assert item is not None and item.value is not None and item.value.values == ("A" * 20,)
        with pytest.raises(QueryError, match="one of CodeValue"):
            parse_code_item("ConceptNameCodeSequence", {"CodeValue": "1", "URNCodeValue": "urn:x"})

    def test_empty_item(self) -> None:
        assert parse_code_item("ProcedureCodeSequence", {"CodeValue": "", "CodeMeaning": None}) \
            is None
