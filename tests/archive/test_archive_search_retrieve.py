"""The one search (every level, wildcards, ranges, lists, non-ASCII, stored attributes) and
the one retrieve (instances at every level)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.core.levels import QueryLevel
from archivist.testing.datasets import make_instance, new_uid

ST_A, ST_B, ST_C = new_uid(), new_uid(), new_uid()
SE_A1, SE_A2, SE_B1, SE_C1 = new_uid(), new_uid(), new_uid(), new_uid()


@pytest.fixture
def filled(archive: Archive, tmp_path: Path) -> Archive:
    """Three patients, three studies, four series, seven instances."""
    specs: list[dict[str, Any]] = []
    for i in range(3):
        specs.append({"patient_name": "DOE^JOHN", "patient_id": "P1", "study_uid": ST_A,
                          "series_uid": SE_A1, "modality": "CT", "study_date": "20240110",
                          "study_time": "081500", "accession_number": "ACC-A", "series_number": 1,
                          "instance_number": i + 1})
    specs.append({"patient_name": "DOE^JOHN", "patient_id": "P1", "study_uid": ST_A, "series_uid": SE_A2,
                      "modality": "MR", "study_date": "20240110", "study_time": "081500",
                      "accession_number": "ACC-A", "series_number": 2, "instance_number": 1,
                      "extra": {"ImageType": ["DERIVED", "SECONDARY"], "Manufacturer": "Other Co"}})
    specs.append({"patient_name": "Müller^Jürgen", "patient_id": "P2", "study_uid": ST_B,
                      "series_uid": SE_B1, "modality": "CT", "study_date": "20230301", "study_time": "143000",
                      "accession_number": "ACC-B", "charset": "ISO_IR 192", "instance_number": 1})
    for i in range(2):
        specs.append({"patient_name": "Яковлев^Иван", "patient_id": "P3", "study_uid": ST_C,
                          "series_uid": SE_C1, "modality": "US", "study_date": "20241231",
                          "study_time": "235959", "accession_number": "ACC-C", "charset": "ISO_IR 192",
                          "instance_number": i + 1})
    for n, spec in enumerate(specs):
        make_instance(tmp_path / f"{n}.dcm", **spec)
        archive.ingest.store_file(tmp_path / f"{n}.dcm", Origin("import"))
    assert archive.index.counts() == {"patient": 3, "study": 3, "series": 4, "instance": 7}
    return archive


def _find(archive: Archive, level: QueryLevel, pairs: list[tuple[str, str]],
          **kw: Any) -> list[Any]:
    return list(archive.search.find(archive.search.query_from_pairs(level, pairs), **kw))


def _values(archive: Archive, level: QueryLevel, pairs: list[tuple[str, str]], key: str) -> list[str]:
    return sorted(str(ds.get(key)) for ds in _find(archive, level, pairs))


class TestPatientLevel:
    def test_all_patients_with_counts(self, filled: Archive) -> None:
        found = _find(filled, QueryLevel.PATIENT, [
            ("PatientID", ""), ("PatientName", ""), ("NumberOfPatientRelatedStudies", ""),
            ("NumberOfPatientRelatedSeries", ""), ("NumberOfPatientRelatedInstances", "")])
        got = {ds.PatientID: (str(ds.PatientName), ds.NumberOfPatientRelatedStudies,
                              ds.NumberOfPatientRelatedSeries,
                              ds.NumberOfPatientRelatedInstances) for ds in found}
        assert got == {"P1": ("DOE^JOHN", 1, 2, 4), "P2": ("Müller^Jürgen", 1, 1, 1),
                       "P3": ("Яковлев^Иван", 1, 1, 2)}
        assert all(ds.QueryRetrieveLevel == "PATIENT" for ds in found)

    @pytest.mark.parametrize(("name", "ids"), [
        ("müller*", ["P2"]), ("MÜLLER^JÜRGEN", ["P2"]), ("muller^jurgen", ["P2"]),
        ("яковлев*", ["P3"]), ("ЯКОВЛЕВ^ИВАН", ["P3"]), ("*^J*", ["P1", "P2"]),
        ("d?e^john", ["P1"]), ("*", ["P1", "P2", "P3"]), ("Smith*", []),
    ])
    def test_person_name_case_insensitive(self, filled: Archive, name: str,
                                          ids: list[str]) -> None:
        assert _values(filled, QueryLevel.PATIENT, [("PatientName", name)], "PatientID") == ids

    def test_person_name_case_sensitive_setting(self, open_archive: Any, filled: Archive) -> None:
        filled.close()
        strict = open_archive(pn_case_insensitive=False)
        assert _values(strict, QueryLevel.PATIENT, [("PatientName", "müller*")], "PatientID") == []
        assert _values(strict, QueryLevel.PATIENT, [("PatientName", "Müller*")],
                       "PatientID") == ["P2"]

    def test_patient_id_list(self, filled: Archive) -> None:
        assert _values(filled, QueryLevel.PATIENT, [("PatientID", "P1\\P3")],
                       "PatientID") == ["P1", "P3"]


class TestStudyLevel:
    @pytest.mark.parametrize(("pairs", "studies"), [
        ([("StudyDate", "20240101-20241231")], [ST_A, ST_C]),
        ([("StudyDate", "20240111-")], [ST_C]),
        ([("StudyDate", "-20240110")], [ST_A, ST_B]),
        ([("StudyDate", "20230301")], [ST_B]),
        ([("StudyTime", "0800-1500")], [ST_A, ST_B]),
        ([("StudyTime", "2300-")], [ST_C]),
        ([("AccessionNumber", "ACC-?")], [ST_A, ST_B, ST_C]),
        ([("AccessionNumber", "*B")], [ST_B]),
        ([("StudyInstanceUID", f"{ST_A}\\{ST_C}")], [ST_A, ST_C]),
        ([("ModalitiesInStudy", "MR")], [ST_A]),
        ([("ModalitiesInStudy", "CT")], [ST_A, ST_B]),
        ([("ModalitiesInStudy", "US\\MR")], [ST_A, ST_C]),
        ([("PatientName", "doe*"), ("StudyDate", "2024*-")], None),
    ])
    def test_matching(self, filled: Archive, pairs: list[tuple[str, str]],
                      studies: list[str] | None) -> None:
        if studies is None:
            from archivist.errors import QueryError

            with pytest.raises(QueryError):
                _find(filled, QueryLevel.STUDY, pairs)
            return
        assert _values(filled, QueryLevel.STUDY, pairs, "StudyInstanceUID") == sorted(studies)

    def test_aggregates_returned(self, filled: Archive) -> None:
        (ds,) = _find(filled, QueryLevel.STUDY, [
            ("StudyInstanceUID", ST_A), ("ModalitiesInStudy", ""), ("SOPClassesInStudy", ""),
            ("NumberOfStudyRelatedSeries", ""), ("NumberOfStudyRelatedInstances", ""),
            ("PatientName", ""), ("StudyDate", "")])
        assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
        assert list(ds.SOPClassesInStudy) == ["1.2.840.10008.5.1.4.1.1.2",
                                              "1.2.840.10008.5.1.4.1.1.4"]
        assert (ds.NumberOfStudyRelatedSeries, ds.NumberOfStudyRelatedInstances) == (2, 4)
        assert (str(ds.PatientName), ds.StudyDate) == ("DOE^JOHN", "20240110")

    def test_unknown_return_key_is_empty(self, filled: Archive) -> None:
        (ds,) = _find(filled, QueryLevel.STUDY, [("StudyInstanceUID", ST_B),
                                                  ("OtherPatientIDsSequence", ""),
                                                  ("StudyComments", "")])
        assert ds["StudyComments"].is_empty
        assert list(ds.OtherPatientIDsSequence) == []

    def test_limit_offset_count(self, filled: Archive) -> None:
        q = filled.search.query_from_pairs(QueryLevel.STUDY, [("StudyInstanceUID", "")])
        assert filled.search.count(q) == 3
        everything = [ds.StudyInstanceUID for ds in filled.search.find(q)]
        assert everything == [ST_A, ST_B, ST_C]
        assert [ds.StudyInstanceUID for ds in filled.search.find(q, limit=1, offset=1)] == [ST_B]


class TestSeriesAndImageLevels:
    def test_series_in_study(self, filled: Archive) -> None:
        found = _find(filled, QueryLevel.SERIES, [("StudyInstanceUID", ST_A),
                                                   ("SeriesInstanceUID", ""), ("Modality", ""),
                                                   ("NumberOfSeriesRelatedInstances", "")])
        got = {ds.SeriesInstanceUID: (ds.Modality, ds.NumberOfSeriesRelatedInstances)
               for ds in found}
        assert got == {SE_A1: ("CT", 3), SE_A2: ("MR", 1)}

    def test_series_modality_list_and_number(self, filled: Archive) -> None:
        assert _values(filled, QueryLevel.SERIES, [("Modality", "CT\\US")],
                       "SeriesInstanceUID") == sorted([SE_A1, SE_B1, SE_C1])
        assert _values(filled, QueryLevel.SERIES, [("SeriesNumber", "2")],
                       "SeriesInstanceUID") == [SE_A2]

    def test_images_by_number(self, filled: Archive) -> None:
        found = _find(filled, QueryLevel.IMAGE, [("SeriesInstanceUID", SE_A1),
                                                  ("InstanceNumber", "2\\3"), ("Rows", "")])
        assert sorted(int(ds.InstanceNumber) for ds in found) == [2, 3]
        assert {ds.Rows for ds in found} == {4}

    @pytest.mark.parametrize(("pairs", "count"), [
        ([("ImageType", "DERIVED")], 1),
        ([("ImageType", "ORIGINAL")], 6),
        ([("ImageType", "AXIAL\\SECONDARY")], 7),
        ([("Manufacturer", "Other*")], 1),
        ([("Manufacturer", "Archivist Test")], 6),
        ([("Manufacturer", "archivist test")], 0),
        ([("Manufacturer", "Archivist Test"), ("PatientID", "P3")], 2),
        ([("BurnedInAnnotation", "YES")], 0),
    ])
    def test_keys_without_a_column_use_stored_attributes(
            self, filled: Archive, pairs: list[tuple[str, str]], count: int) -> None:
        assert len(_find(filled, QueryLevel.IMAGE, pairs)) == count

    def test_stored_attribute_returned(self, filled: Archive) -> None:
        (ds,) = _find(filled, QueryLevel.IMAGE, [("Manufacturer", "Other*"), ("ImageType", ""),
                                                  ("SOPInstanceUID", "")])
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.Manufacturer == "Other Co"

    def test_stored_attribute_with_limit_and_offset(self, filled: Archive) -> None:
        pairs = [("Manufacturer", "Archivist Test")]
        assert len(_find(filled, QueryLevel.IMAGE, pairs, limit=4)) == 4
        assert len(_find(filled, QueryLevel.IMAGE, pairs, offset=4)) == 2

    def test_unicode_names_at_image_level(self, filled: Archive) -> None:
        found = _find(filled, QueryLevel.IMAGE, [("PatientName", "яков*"), ("PatientName", "")])
        assert len(found) == 2


class TestRetrieve:
    @pytest.mark.parametrize(("level", "pairs", "count"), [
        (QueryLevel.PATIENT, [("PatientID", "P1")], 4),
        (QueryLevel.PATIENT, [("PatientName", "müller*")], 1),
        (QueryLevel.STUDY, [("StudyInstanceUID", f"{ST_A}\\{ST_C}")], 6),
        (QueryLevel.SERIES, [("SeriesInstanceUID", SE_A1)], 3),
        (QueryLevel.IMAGE, [("SeriesInstanceUID", SE_C1), ("InstanceNumber", "2")], 1),
        (QueryLevel.STUDY, [("StudyInstanceUID", "1.2.3.999")], 0),
    ])
    def test_instances_at_every_level(self, filled: Archive, level: QueryLevel,
                                      pairs: list[tuple[str, str]], count: int) -> None:
        refs = list(filled.retrieve.instances(filled.search.query_from_pairs(level, pairs)))
        assert len(refs) == count
        assert len({r.sop_instance_uid for r in refs}) == count

    def test_refs_read_back_byte_for_byte(self, filled: Archive, tmp_path: Path) -> None:
        q = filled.search.query_from_pairs(QueryLevel.STUDY, [("StudyInstanceUID", ST_B)])
        (ref,) = filled.retrieve.instances(q)
        source = tmp_path / "4.dcm"
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        assert ref.sha256 == digest and ref.size == source.stat().st_size
        assert (ref.study_instance_uid, ref.series_instance_uid) == (ST_B, SE_B1)
        with filled.retrieve.open(ref) as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == digest
        path = filled.retrieve.path(ref)
        assert path is not None and path.is_relative_to(filled.settings.blob_dir)
        ds = filled.retrieve.dataset(ref)
        assert str(ds.PatientName) == "Müller^Jürgen"
        assert ds.SOPInstanceUID == ref.sop_instance_uid
        assert ref.transfer_syntax_uid == "1.2.840.10008.1.2.1"


class TestKeysBelowTheLevel:
    """A key of a level below the query's (Series Number, SOP Instance UID at STUDY level;
    Image Type above IMAGE) is not matched there, so it is answered empty: the value kept with
    a study is its first instance's, and SeriesNumber=99 came back as Series Number 1."""

    @pytest.mark.parametrize("key,value", [("SeriesNumber", "99"), ("SOPInstanceUID", "1.2.3"),
                                           ("SeriesInstanceUID", ""), ("InstanceNumber", ""),
                                           ("ImageType", "")])
    def test_study_level_answers_them_empty(self, filled: Archive, key: str, value: str) -> None:
        query = filled.search.query_from_pairs(QueryLevel.STUDY, [("StudyInstanceUID", ST_A),
                                                                  (key, value)])
        found = list(filled.search.find(query))
        assert len(found) == 1
        assert key in found[0] and found[0][key].value in (None, "", []), found[0]
        rows = list(filled.search.rows(query))
        answer = filled.search.json_identifier(query, rows[0])
        tag = f"{found[0][key].tag:08X}"
        assert "Value" not in answer[tag], answer[tag]

    def test_series_level_answers_its_own_keys(self, filled: Archive) -> None:
        found = _find(filled, QueryLevel.SERIES, [("StudyInstanceUID", ST_A),
                                                   ("SeriesNumber", ""), ("SOPInstanceUID", "")])
        assert sorted(int(ds.SeriesNumber) for ds in found) == [1, 2]
        assert all(not ds.SOPInstanceUID for ds in found)

    def test_modality_at_study_level_is_the_one_matched_or_the_only_one(self, filled: Archive
                                                                        ) -> None:
        """Modality at STUDY level is matched as Modalities in Study: a study of CT and MR
        found by Modality=MR answers MR (its first series is CT); a study of one modality
        answers it; a study of several, not narrowed by the query, answers zero length."""
        def modality(pairs: list[tuple[str, str]]) -> list[str]:
            query = filled.search.query_from_identifier(QueryLevel.STUDY, _identifier(pairs),
                                                        study_aggregates=True)
            return [str(ds.Modality or "") for ds in filled.search.find(query)]

        assert modality([("StudyInstanceUID", ST_A), ("Modality", "MR")]) == ["MR"]
        assert modality([("StudyInstanceUID", ST_A), ("Modality", "CT")]) == ["CT"]
        assert modality([("StudyInstanceUID", ST_A), ("Modality", "")]) == [""]
        assert modality([("StudyInstanceUID", ST_B), ("Modality", "")]) == ["CT"]
        query = filled.search.query_from_pairs(QueryLevel.STUDY, [("StudyInstanceUID", ST_A),
                                                                  ("Modality", "MR")])
        row = next(iter(filled.search.rows(query)))
        assert filled.search.json_identifier(query, row)["00080060"] == {"vr": "CS",
                                                                         "Value": ["MR"]}


def _identifier(pairs: list[tuple[str, str]]) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    for keyword, value in pairs:
        setattr(ds, keyword, value)
    return ds
