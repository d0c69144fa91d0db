"""Query by code: coded concepts indexed at ingest on their normalised (scheme, value), and
sequence matching through the one search (C-FIND Identifier items and QIDO-style pairs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from archivist.archive.archive import Archive
from archivist.archive.coded import MAX_CODES_PER_INSTANCE, extract_codes
from archivist.archive.ingest import Origin
from archivist.core.levels import QueryLevel
from archivist.errors import QueryError
from archivist.index.extract import CodeRow
from archivist.testing.datasets import code_item as code
from archivist.testing.datasets import make_instance, new_uid, pydicom_test_file

IMPORT = Origin("import")
LIVER_SCT = ("10200004", "SCT", "Liver")
LIVER_SRT = ("T-62000", "SRT", "Liver")
CHEST_SCT = "816094009"  # Body Part Examined CHEST (PS3.16 Annex L)


class TestExtractCodes:
    def test_code_sequences_normalised_and_originals_kept(self, tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "a.dcm", extra={
            "ProcedureCodeSequence": [code(*LIVER_SRT)],
            "AnatomicRegionSequence": [code("T-D3000", "SRT", "Chest")],
            "BodyPartExamined": "CHEST",
        })
        rows = extract_codes(ds)
        assert CodeRow("ProcedureCodeSequence", "ProcedureCodeSequence", "SCT", "10200004",
                       "SRT", "T-62000", "Liver") in rows
        assert CodeRow("AnatomicRegionSequence", "BodyPartExamined", "SCT", CHEST_SCT, "SCT",
                       CHEST_SCT, "Chest") in rows
        anatomic = [r for r in rows if r.origin == "AnatomicRegionSequence"]
        assert [(r.original_scheme, r.original_value) for r in anatomic] == [("SRT", "T-D3000")]
        assert anatomic[0].scheme == "SCT"

    def test_nested_requested_procedure_and_frame_anatomy(self) -> None:
        ds = Dataset()
        request = Dataset()
        request.RequestedProcedureCodeSequence = [code("RPC1", "99LOCAL", "Local procedure")]
        ds.RequestAttributesSequence = [request]
        anatomy = Dataset()
        anatomy.AnatomicRegionSequence = [code(*LIVER_SCT)]
        shared = Dataset()
        shared.FrameAnatomySequence = [anatomy]
        ds.SharedFunctionalGroupsSequence = [shared]
        rows = {(r.attribute, r.scheme, r.value) for r in extract_codes(ds)}
        assert rows == {("RequestedProcedureCodeSequence", "99LOCAL", "RPC1"),
                        ("AnatomicRegionSequence", "SCT", "10200004")}

    def test_sr_document_title(self) -> None:
        path = pydicom_test_file("test-SR.dcm")
        assert path is not None
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        title = ds.ConceptNameCodeSequence[0]
        rows = [r for r in extract_codes(ds) if r.attribute == "ConceptNameCodeSequence"]
        assert [(r.original_value, r.original_scheme) for r in rows] == [
            (title.CodeValue, title.CodingSchemeDesignator)]

    def test_long_and_urn_values_duplicates_and_junk(self) -> None:
        ds = Dataset()
        long_item = Dataset()
        long_item.LongCodeValue = "L" * 40
        long_item.CodingSchemeDesignator = "99X"
        urn = Dataset()
        urn.URNCodeValue = "urn:oid:1.2.3"
        empty = Dataset()
        empty.CodeMeaning = "no value"
        ds.ProcedureCodeSequence = [long_item, urn, empty, code(*LIVER_SCT), code(*LIVER_SRT)]
        rows = extract_codes(ds)
        assert {(r.scheme, r.value) for r in rows} == {("99X", "L" * 40), ("", "urn:oid:1.2.3"),
                                                        ("SCT", "10200004")}
        # SRT and SCT liver are one concept, kept as both codes stored (answered as stored).
        assert len(rows) == 4
        assert {(r.original_scheme, r.original_value) for r in rows if r.value == "10200004"} == {
            ("SCT", "10200004"), ("SRT", "T-62000")}

    def test_capped(self) -> None:
        ds = Dataset()
        ds.ProcedureCodeSequence = [code(str(1000 + i), "99X", "x") for i in range(200)]
        assert len(extract_codes(ds)) == MAX_CODES_PER_INSTANCE

    def test_unknown_body_part_is_not_indexed(self) -> None:
        ds = Dataset()
        ds.BodyPartExamined = "NOSUCHPART"
        assert extract_codes(ds) == []


@pytest.fixture
def coded(archive: Archive, tmp_path: Path) -> dict[str, Any]:
    """Three studies: liver coded with SRT, liver coded with SCT (chest body part), a local code;
    one SR whose title is coded."""
    ids: dict[str, Any] = {}
    specs = {
        "srt": {"ProcedureCodeSequence": [code(*LIVER_SRT)]},
        "sct": {"ProcedureCodeSequence": [code(*LIVER_SCT)], "BodyPartExamined": "CHEST"},
        "local": {"ProcedureCodeSequence": [code("P1", "99LOCAL", "Local thing")],
                  "AnatomicRegionSequence": [code("T-D3000", "SRT", "Chest")]},
    }
    for name, extra in specs.items():
        study, series = new_uid(), new_uid()
        for n in (1, 2):
            make_instance(tmp_path / f"{name}{n}.dcm", study_uid=study, series_uid=series,
                          instance_number=n, patient_id=f"P-{name}", extra=extra)
            archive.ingest.store_file(tmp_path / f"{name}{n}.dcm", IMPORT)
        ids[name] = study
    sr = pydicom_test_file("test-SR.dcm")
    assert sr is not None
    result = archive.ingest.store_file(sr, IMPORT)
    ids["sr"] = result.study_instance_uid
    ids["sr_title"] = pydicom.dcmread(sr, stop_before_pixels=True).ConceptNameCodeSequence[0]
    return ids


def _studies(archive: Archive, pairs: list[tuple[str, Any]],
             level: QueryLevel = QueryLevel.STUDY) -> list[str]:
    query = archive.search.query_from_pairs(level, [*pairs, ("StudyInstanceUID", "")])
    return sorted(str(ds.StudyInstanceUID) for ds in archive.search.find(query))


class TestQueryByCode:
    def test_sct_query_finds_srt_and_sct(self, archive: Archive, coded: dict[str, Any]) -> None:
        pairs = [("ProcedureCodeSequence.CodeValue", "10200004"),
                 ("ProcedureCodeSequence.CodingSchemeDesignator", "SCT")]
        assert _studies(archive, pairs) == sorted([coded["srt"], coded["sct"]])

    def test_srt_query_finds_sct_and_srt(self, archive: Archive, coded: dict[str, Any]) -> None:
        pairs = [("00081032.00080100", "T-62000"), ("00081032.00080102", "SRT")]
        assert _studies(archive, pairs) == sorted([coded["srt"], coded["sct"]])

    def test_local_code(self, archive: Archive, coded: dict[str, Any]) -> None:
        pairs = [("ProcedureCodeSequence.CodeValue", "P1"),
                 ("ProcedureCodeSequence.CodingSchemeDesignator", "99LOCAL")]
        assert _studies(archive, pairs) == [coded["local"]]
        wrong_scheme = [("ProcedureCodeSequence.CodeValue", "P1"),
                        ("ProcedureCodeSequence.CodingSchemeDesignator", "SCT")]
        assert _studies(archive, wrong_scheme) == []

    def test_value_without_scheme_matches_original_or_normalised(
        self, archive: Archive, coded: dict[str, Any]
    ) -> None:
        assert _studies(archive, [("ProcedureCodeSequence.CodeValue", "T-62000")]) == \
            [coded["srt"]]
        assert _studies(archive, [("ProcedureCodeSequence.CodeValue", "10200004")]) == \
            sorted([coded["srt"], coded["sct"]])

    def test_the_sequence_named_matters(self, archive: Archive, coded: dict[str, Any]) -> None:
        pairs = [("AnatomicRegionSequence.CodeValue", "10200004"),
                 ("AnatomicRegionSequence.CodingSchemeDesignator", "SCT")]
        assert _studies(archive, pairs) == []

    def test_body_part_examined_answers_anatomic_region(
        self, archive: Archive, coded: dict[str, Any]
    ) -> None:
        pairs = [("AnatomicRegionSequence.CodeValue", CHEST_SCT),
                 ("AnatomicRegionSequence.CodingSchemeDesignator", "SCT")]
        assert _studies(archive, pairs) == [coded["sct"]]
        series = _studies(archive, pairs, QueryLevel.SERIES)
        assert series == [coded["sct"]]

    def test_every_level(self, archive: Archive, coded: dict[str, Any]) -> None:
        pairs = [("ProcedureCodeSequence.CodeValue", "P1"),
                 ("ProcedureCodeSequence.CodingSchemeDesignator", "99LOCAL")]
        for level, count in ((QueryLevel.PATIENT, 1), (QueryLevel.STUDY, 1),
                             (QueryLevel.SERIES, 1), (QueryLevel.IMAGE, 2)):
            query = archive.search.query_from_pairs(level, pairs)
            assert archive.search.count(query) == count, level

    def test_meaning_and_wildcards(self, archive: Archive, coded: dict[str, Any]) -> None:
        assert _studies(archive, [("ProcedureCodeSequence.CodeMeaning", "Local*")]) == \
            [coded["local"]]
        assert _studies(archive, [("ProcedureCodeSequence.CodeValue", "T-62*")]) == \
            [coded["srt"]]
        assert len(_studies(archive, [("ProcedureCodeSequence.CodingSchemeDesignator", "SRT")])) \
            == 1

    def test_sr_concept_name(self, archive: Archive, coded: dict[str, Any]) -> None:
        title = coded["sr_title"]
        pairs = [("ConceptNameCodeSequence.CodeValue", title.CodeValue),
                 ("ConceptNameCodeSequence.CodingSchemeDesignator", title.CodingSchemeDesignator)]
        assert _studies(archive, pairs, QueryLevel.IMAGE) == [coded["sr"]]

    def test_combined_with_other_keys(self, archive: Archive, coded: dict[str, Any]) -> None:
        pairs = [("ProcedureCodeSequence.CodeValue", "10200004"),
                 ("ProcedureCodeSequence.CodingSchemeDesignator", "SCT"), ("PatientID", "P-sct")]
        assert _studies(archive, pairs) == [coded["sct"]]

    def test_identifier_items_match_like_pairs(self, archive: Archive,
                                               coded: dict[str, Any]) -> None:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        identifier.ProcedureCodeSequence = [code("10200004", "SCT", "")]
        query = archive.search.query_from_identifier(QueryLevel.STUDY, identifier)
        found = sorted(str(ds.StudyInstanceUID) for ds in archive.search.find(query))
        assert found == sorted([coded["srt"], coded["sct"]])

    def test_zero_length_item_returns_the_stored_codes(self, archive: Archive,
                                                       coded: dict[str, Any]) -> None:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = coded["srt"]
        identifier.ProcedureCodeSequence = [Dataset()]
        query = archive.search.query_from_identifier(QueryLevel.STUDY, identifier)
        [ds] = list(archive.search.find(query))
        [item] = ds.ProcedureCodeSequence
        assert (item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning) == LIVER_SRT

    def test_returned_values_are_as_stored(self, archive: Archive,
                                           coded: dict[str, Any]) -> None:
        query = archive.search.query_from_pairs(QueryLevel.STUDY, [
            ("ProcedureCodeSequence.CodeValue", "10200004"),
            ("ProcedureCodeSequence.CodingSchemeDesignator", "SCT"),
            ("AnatomicRegionSequence", ""), ("StudyInstanceUID", "")])
        got = {str(ds.StudyInstanceUID): ds for ds in archive.search.find(query)}
        srt_codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in
                     got[coded["srt"]].ProcedureCodeSequence]
        sct_codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in
                     got[coded["sct"]].ProcedureCodeSequence]
        assert srt_codes == [("T-62000", "SRT")] and sct_codes == [("10200004", "SCT")]
        # The mapped Body Part Examined is matched on, but not returned as if the object had it.
        assert "AnatomicRegionSequence" in got[coded["sct"]]
        assert len(got[coded["sct"]].AnatomicRegionSequence) == 0

    def test_no_code_in_the_object_gives_an_empty_sequence(self, archive: Archive,
                                                           tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "plain.dcm")
        archive.ingest.store_file(tmp_path / "plain.dcm", IMPORT)
        query = archive.search.query_from_pairs(QueryLevel.IMAGE, [
            ("SOPInstanceUID", str(ds.SOPInstanceUID)), ("ProcedureCodeSequence", "")])
        [found] = list(archive.search.find(query))
        assert "ProcedureCodeSequence" in found and len(found.ProcedureCodeSequence) == 0

    @pytest.mark.parametrize("pairs", [
        [("ReferencedStudySequence.ReferencedSOPInstanceUID", "1.2.3")],
        [("ProcedureCodeSequence.ContextUID", "1.2.3")],
        [("NotAKeyword", "x")],
        [("00091010", "x")],
    ])
    def test_unsupported_keys_are_query_errors(self, archive: Archive,
                                               pairs: list[tuple[str, str]]) -> None:
        with pytest.raises(QueryError):
            archive.search.query_from_pairs(QueryLevel.STUDY, pairs)

    def test_retrieve_by_code(self, archive: Archive, coded: dict[str, Any]) -> None:
        query = archive.search.query_from_pairs(QueryLevel.STUDY, [
            ("ProcedureCodeSequence.CodeValue", "10200004"),
            ("ProcedureCodeSequence.CodingSchemeDesignator", "SCT")])
        assert len(list(archive.retrieve.instances(query))) == 4
