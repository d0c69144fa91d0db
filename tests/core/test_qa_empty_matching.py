"""Empty Value Matching (PS3.4 C.2.2.2.7; QIDO-RS ``emptyvaluematching``, PS3.18 8.3.4.5).

Found by black-box QA: a key of ``""`` (two QUOTATION MARK characters), e.g. ``findscu -k
AccessionNumber='""'``, was matched as the literal text ``""`` and found nothing, while the
entities whose attribute is zero length or absent should match. It is not Universal Matching
(a zero-length key), which matches everything.

The parsing is checked here, then the one search on a real embedded archive: indexed columns
(SQL), attributes kept at ingest (JSON), multi-valued aggregates (Modalities in Study), as a
C-FIND Identifier, as text pairs (CLI, QIDO-RS) and without Empty Value Matching (literal).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.config import load_settings
from archivist.core.levels import MatchKind, QueryLevel
from archivist.core.matching import (
    Constraint,
    build_query,
    parse_constraint,
    value_matches,
)
from archivist.errors import QueryError
from archivist.testing.datasets import make_instance


class TestParsing:
    @pytest.mark.parametrize(("keyword", "kind"), [
        ("AccessionNumber", MatchKind.TEXT), ("PatientName", MatchKind.PN),
        ("StudyDate", MatchKind.DATE), ("StudyTime", MatchKind.TIME),
        ("ModalitiesInStudy", MatchKind.MULTI), ("SeriesNumber", MatchKind.INT),
        ("OperatorsName", MatchKind.PN), ("AcquisitionDateTime", MatchKind.DATETIME),
        ("PatientComments", MatchKind.TEXT),
    ])
    def test_two_quotation_marks_are_empty_value_matching(self, keyword: str,
                                                          kind: MatchKind) -> None:
        assert parse_constraint(keyword, '""', empty_value_matching=True) == \
            Constraint(keyword, "empty", (), kind)
        assert parse_constraint(keyword, ' "" ', empty_value_matching=True) == \
            Constraint(keyword, "empty", (), kind)

    def test_not_universal_matching(self) -> None:
        assert parse_constraint("AccessionNumber", "", empty_value_matching=True) is None
        assert parse_constraint("AccessionNumber", "*", empty_value_matching=True) is None
        assert parse_constraint("AccessionNumber", None, empty_value_matching=True) is None

    def test_literal_without_empty_value_matching(self) -> None:
        assert parse_constraint("AccessionNumber", '""') == \
            Constraint("AccessionNumber", "single", ('""',), MatchKind.TEXT)
        query = build_query(QueryLevel.STUDY, [("AccessionNumber", '""')])
        assert query.constraints[0].op == "single"

    @pytest.mark.parametrize("keyword", ["InstanceAvailability", "RetrieveAETitle"])
    def test_not_on_the_location_keys_every_entity_has(self, keyword: str) -> None:
        assert parse_constraint(keyword, '""', empty_value_matching=True).op == "single"

    def test_not_on_uids_counts_or_in_a_list(self) -> None:
        assert parse_constraint("StudyInstanceUID", '""', empty_value_matching=True).op \
            == "single"
        assert parse_constraint("NumberOfStudyRelatedSeries", '""',
                                empty_value_matching=True) is None
        assert parse_constraint("AccessionNumber", '""\\A', empty_value_matching=True).op \
            == "list"

    def test_code_sequence_items_keep_the_literal(self) -> None:
        query = build_query(QueryLevel.STUDY, [("ProcedureCodeSequence.CodeMeaning", '""')],
                            empty_value_matching=True)
        assert query.codes[0].items[0].meaning == Constraint(
            "ProcedureCodeSequence.CodeMeaning", "single", ('""',), MatchKind.TEXT)

    def test_value_matches(self) -> None:
        c = Constraint("OperatorsName", "empty", (), MatchKind.PN)
        assert value_matches(c, None) and value_matches(c, "") and value_matches(c, ["", None])
        assert not value_matches(c, "A^B") and not value_matches(c, ["", "A"])


# -- the one search, on a real archive -------------------------------------------------------

#: patient id -> (make_instance arguments, attributes to delete)
_SPECS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "E-VAL": ({"accession_number": "ACC-1", "extra": {
        "OperatorsName": "OP^A", "ReferringPhysicianName": "REF^A",
        "PatientComments": "fine"}}, ()),
    "E-ZERO": ({"accession_number": "", "study_description": "", "extra": {
        "OperatorsName": "", "ReferringPhysicianName": "", "PatientComments": ""}}, ()),
    "E-ABSENT": ({"modality": "MR"}, ("AccessionNumber", "StudyDescription", "Modality",
                                      "StudyDate", "SeriesNumber")),
    "E-QUOTES": ({"accession_number": '""', "charset": "ISO_IR 192",
                  "extra": {"OperatorsName": "=山田^太郎"}}, ()),
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    base = tmp_path_factory.mktemp("empty_matching")
    a = Archive.open(load_settings(env={}, overrides={"data_dir": base / "data"}))
    for pid, (spec, absent) in _SPECS.items():
        path = base / f"{pid}.dcm"
        make_instance(path, patient_id=pid, **spec)
        if absent:
            ds = pydicom.dcmread(path)
            for keyword in absent:
                delattr(ds, keyword)
            ds.save_as(path)
        a.ingest.store_file(path, Origin("import"))
    path = base / "noname.dcm"
    make_instance(path, patient_id="", patient_name="", accession_number="ACC-N")
    a.ingest.store_file(path, Origin("import"))
    yield a
    a.close()


def _pairs(archive: Archive, level: QueryLevel, pairs: list[tuple[str, str]],
           **kw: Any) -> list[str]:
    query = archive.search.query_from_pairs(level, [*pairs, ("PatientID", "E-*")], **kw)
    return sorted(str(ds.PatientID) for ds in archive.search.find(query))


def _identifier(archive: Archive, level: str, **keys: str) -> list[str]:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.PatientID = "E-*"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: "" is not a valid DA or CS
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
    query = archive.search.query_from_identifier(QueryLevel.parse(level), ds)
    return sorted(str(r.PatientID) for r in archive.search.find(query))


EMPTY = ["E-ABSENT", "E-ZERO"]


class TestSearch:
    @pytest.mark.parametrize("level", ["STUDY", "SERIES", "IMAGE"])
    def test_indexed_key_in_a_c_find_identifier(self, archive: Archive, level: str) -> None:
        assert _identifier(archive, level, AccessionNumber='""') == EMPTY
        assert _identifier(archive, level, StudyDescription='""') == EMPTY

    def test_universal_and_literal_are_different(self, archive: Archive) -> None:
        everyone = ["E-ABSENT", "E-QUOTES", "E-VAL", "E-ZERO"]
        assert _identifier(archive, "STUDY", AccessionNumber="") == everyone
        assert _pairs(archive, QueryLevel.STUDY, [("AccessionNumber", '""')]) == EMPTY
        assert _pairs(archive, QueryLevel.STUDY, [("AccessionNumber", '""')],
                      empty_value_matching=False) == ["E-QUOTES"]

    def test_person_names_folded_or_not(self, archive: Archive) -> None:
        assert _identifier(archive, "STUDY", ReferringPhysicianName='""') == \
            ["E-ABSENT", "E-QUOTES", "E-ZERO"]
        archive.search.pn_case_insensitive = False
        try:
            assert _identifier(archive, "STUDY", ReferringPhysicianName='""') == \
                ["E-ABSENT", "E-QUOTES", "E-ZERO"]
        finally:
            archive.search.pn_case_insensitive = True

    def test_dates_and_numbers(self, archive: Archive) -> None:
        assert _identifier(archive, "STUDY", StudyDate='""') == ["E-ABSENT"]
        assert _pairs(archive, QueryLevel.SERIES, [("SeriesNumber", '""')]) == ["E-ABSENT"]
        with pytest.raises(QueryError):  # literally "" is not a date
            _pairs(archive, QueryLevel.STUDY, [("StudyDate", '""')], empty_value_matching=False)

    def test_multi_valued_aggregate_and_its_series_key(self, archive: Archive) -> None:
        assert _identifier(archive, "STUDY", ModalitiesInStudy='""') == ["E-ABSENT"]
        assert _identifier(archive, "SERIES", Modality='""') == ["E-ABSENT"]

    def test_attribute_kept_at_ingest(self, archive: Archive) -> None:
        # OperatorsName has no column: matched on the attributes kept at ingest. A name with an
        # ideographic group only is not empty.
        assert _identifier(archive, "STUDY", OperatorsName='""') == EMPTY
        assert _identifier(archive, "IMAGE", OperatorsName='""') == EMPTY

    def test_long_text_without_a_column_is_refused(self, archive: Archive) -> None:
        # The index keeps short values only: an absent LT cannot be told from a long one.
        with pytest.raises(QueryError, match="PatientComments"):
            _identifier(archive, "STUDY", PatientComments='""')

    def test_with_other_keys_and_paging(self, archive: Archive) -> None:
        assert _pairs(archive, QueryLevel.STUDY, [("AccessionNumber", '""'),
                                                  ("ModalitiesInStudy", "CT")]) == ["E-ZERO"]
        query = archive.search.query_from_pairs(
            QueryLevel.STUDY, [("AccessionNumber", '""'), ("PatientID", "E-*")])
        assert len(list(archive.search.find(query, limit=1))) == 1
        assert len(list(archive.search.find(query, limit=1, offset=1))) == 1
        assert list(archive.search.find(query, offset=2)) == []

    def test_empty_patient_id_and_name(self, archive: Archive) -> None:
        query = archive.search.query_from_pairs(QueryLevel.PATIENT, [("PatientID", '""'),
                                                                     ("PatientName", "")])
        found = list(archive.search.find(query))
        assert [str(ds.PatientName or "") for ds in found] == [""]
        query = archive.search.query_from_pairs(QueryLevel.STUDY, [("PatientName", '""'),
                                                                   ("AccessionNumber", "")])
        assert [ds.AccessionNumber for ds in archive.search.find(query)] == ["ACC-N"]
