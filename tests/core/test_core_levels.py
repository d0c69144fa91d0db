"""Query/Retrieve levels and the indexed key table (PS3.4 C.6)."""

from __future__ import annotations

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword

from archivist.core.levels import KEYS, PHI_KEYWORDS, UNIQUE_KEY, MatchKind, QueryLevel


class TestQueryLevel:
    @pytest.mark.parametrize(("text", "level"), [
        ("PATIENT", QueryLevel.PATIENT), ("study", QueryLevel.STUDY),
        (" Series ", QueryLevel.SERIES), ("IMAGE", QueryLevel.IMAGE),
        ("instance", QueryLevel.IMAGE), ("INSTANCE", QueryLevel.IMAGE),
    ])
    def test_parse(self, text: str, level: QueryLevel) -> None:
        assert QueryLevel.parse(text) is level

    @pytest.mark.parametrize("text", ["", "FRAME", "studies", "PATIENTS"])
    def test_parse_unknown(self, text: str) -> None:
        with pytest.raises(ValueError, match="unknown query level"):
            QueryLevel.parse(text)

    def test_rank_is_top_to_bottom(self) -> None:
        assert [lv.rank for lv in QueryLevel] == [0, 1, 2, 3]
        assert QueryLevel.PATIENT.rank < QueryLevel.STUDY.rank < QueryLevel.IMAGE.rank

    def test_values_are_dicom_values(self) -> None:
        assert [lv.value for lv in QueryLevel] == ["PATIENT", "STUDY", "SERIES", "IMAGE"]


class TestKeys:
    def test_every_keyword_is_a_dicom_keyword(self) -> None:
        missing = [k for k in KEYS if tag_for_keyword(k) is None]
        assert missing == []

    def test_keyword_matches_its_entry(self) -> None:
        assert all(k == d.keyword for k, d in KEYS.items())

    def test_one_unique_key_per_level(self) -> None:
        unique = {d.level: k for k, d in KEYS.items() if d.unique}
        assert unique == UNIQUE_KEY
        assert len([d for d in KEYS.values() if d.unique]) == 4

    @pytest.mark.parametrize(("keyword", "level", "kind"), [
        ("PatientName", QueryLevel.PATIENT, MatchKind.PN),
        ("PatientID", QueryLevel.PATIENT, MatchKind.TEXT),
        ("StudyDate", QueryLevel.STUDY, MatchKind.DATE),
        ("StudyTime", QueryLevel.STUDY, MatchKind.TIME),
        ("ModalitiesInStudy", QueryLevel.STUDY, MatchKind.MULTI),
        ("NumberOfStudyRelatedInstances", QueryLevel.STUDY, MatchKind.COUNT),
        ("SeriesNumber", QueryLevel.SERIES, MatchKind.INT),
        ("SOPInstanceUID", QueryLevel.IMAGE, MatchKind.UID),
        ("ReferringPhysicianName", QueryLevel.STUDY, MatchKind.PN),
    ])
    def test_definition(self, keyword: str, level: QueryLevel, kind: MatchKind) -> None:
        assert (KEYS[keyword].level, KEYS[keyword].kind) == (level, kind)

    def test_kinds_agree_with_the_dictionary_vr(self) -> None:
        expected_vr = {
            MatchKind.PN: {"PN"}, MatchKind.UID: {"UI"}, MatchKind.DATE: {"DA"},
            MatchKind.TIME: {"TM"}, MatchKind.INT: {"IS", "US"},
        }
        wrong = [
            k for k, d in KEYS.items()
            if d.kind in expected_vr
            and dictionary_VR(tag_for_keyword(k)) not in expected_vr[d.kind]  # type: ignore[arg-type]
        ]
        assert wrong == []

    def test_count(self) -> None:
        assert len(KEYS) == 47
        assert sum(1 for d in KEYS.values() if d.kind is MatchKind.COUNT) == 6

    def test_phi_keywords(self) -> None:
        assert {"PatientName", "PatientID", "PatientBirthDate"} <= PHI_KEYWORDS
        assert "StudyInstanceUID" not in PHI_KEYWORDS and "Modality" not in PHI_KEYWORDS
