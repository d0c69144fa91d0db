"""Index schema mapping and Dataset -> row extraction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from archivist.core.levels import KEYS, MatchKind
from archivist.index.extract import column_value, extract, small_attributes
from archivist.index.schema import COLUMN_OF, TABLE_OF_LEVEL, _snake
from archivist.testing.datasets import make_instance, pydicom_test_files


class TestSchema:
    def test_every_key_has_a_column_on_its_level(self) -> None:
        assert set(COLUMN_OF) == set(KEYS)
        wrong = [k for k, (t, _) in COLUMN_OF.items() if t is not TABLE_OF_LEVEL[KEYS[k].level.value]]
        assert wrong == []

    @pytest.mark.parametrize(("keyword", "column"), [
        ("PatientName", "patient_name"), ("StudyInstanceUID", "study_instance_uid"),
        ("SOPInstanceUID", "sop_instance_uid"), ("StudyID", "study_id"),
        ("NumberOfStudyRelatedInstances", "number_of_study_related_instances"),
        ("PerformedProcedureStepStartDate", "performed_procedure_step_start_date"),
        ("TransferSyntaxUID", "transfer_syntax_uid"), ("SOPClassesInStudy", "sop_classes_in_study"),
    ])
    def test_column_names(self, keyword: str, column: str) -> None:
        assert COLUMN_OF[keyword][1] == column

    @pytest.mark.parametrize(("keyword", "snake"), [
        ("PatientName", "patient_name"), ("SOPInstanceUID", "sop_instance_uid"),
        ("BodyPartExamined", "body_part_examined"), ("Rows", "rows"),
    ])
    def test_snake(self, keyword: str, snake: str) -> None:
        assert _snake(keyword) == snake

    def test_pn_columns_have_a_folded_twin(self) -> None:
        pn = [k for k, d in KEYS.items() if d.kind is MatchKind.PN]
        assert pn == ["PatientName", "ReferringPhysicianName"]
        for k in pn:
            table, name = COLUMN_OF[k]
            assert f"{name}_norm" in table.c


class TestColumnValue:
    @pytest.mark.parametrize(("keyword", "raw", "value"), [
        ("StudyDate", "2024.01.02", "20240102"), ("StudyTime", "10:15:00", "101500"),
        ("SeriesNumber", "3", 3), ("SeriesNumber", "3.0", 3), ("SeriesNumber", "", None),
        ("SeriesNumber", "x", None), ("PatientID", " PID \x00", "PID"), ("PatientID", "", None),
        ("PatientID", None, None), ("PatientName", PersonName("DOE^JOHN"), "DOE^JOHN"),
        ("StudyDescription", ["A", "B"], "A\\B"), ("StudyTime", "101500.123456789", "101500.123456789"),
    ])
    def test_values(self, keyword: str, raw: object, value: object) -> None:
        assert column_value(keyword, raw) == value


class TestExtract:
    def test_rows(self, tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "a.dcm", patient_name="Müller^Jürgen", patient_id="P1",
                           modality="MR", series_number=4, instance_number=9, rows=8, columns=6,
                           frames=3, charset="ISO_IR 192",
                           extra={"ReferringPhysicianName": "Ärzt^Anna"})
        rows = extract(ds)
        assert rows.patient == {
            "patient_id": "P1", "issuer_of_patient_id": "", "patient_name": "Müller^Jürgen",
            "patient_name_norm": "muller^jurgen", "patient_birth_date": "19700101",
            "patient_birth_time": None, "patient_sex": "O",
        }
        assert rows.study["study_instance_uid"] == ds.StudyInstanceUID
        assert rows.study["study_date"] == "20240102"
        assert rows.study["referring_physician_name_norm"] == "arzt^anna"
        assert "modalities_in_study" not in rows.study
        assert rows.series["modality"] == "MR"
        assert rows.series["series_number"] == 4
        assert rows.instance["instance_number"] == 9
        assert (rows.instance["rows"], rows.instance["columns"]) == (8, 6)
        assert rows.instance["number_of_frames"] == 3
        assert rows.instance["bits_allocated"] == 8
        assert "transfer_syntax_uid" not in rows.instance

    def test_attrs_exclude_pixels_meta_private_and_long_values(self, tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "a.dcm", extra={"ImageComments": "x" * 300})
        ds.add_new(0x00091010, "LO", "private")
        attrs = json.loads(extract(ds).attrs_json)
        assert "7FE00010" not in attrs
        assert "00020010" not in attrs
        assert "00091010" not in attrs
        assert "00204000" not in attrs
        assert attrs["00080070"] == {"vr": "LO", "Value": ["Archivist Test"]}
        assert attrs["00080008"]["Value"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert attrs["00100010"]["Value"] == [{"Alphabetic": "DOE^JOHN"}]

    def test_attrs_keep_unicode(self, tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "a.dcm", patient_name="Яковлев^Иван", charset="ISO_IR 192")
        raw = extract(ds).attrs_json
        assert "Яковлев^Иван" in raw

    def test_missing_patient_id_becomes_empty(self) -> None:
        ds = Dataset()
        ds.StudyInstanceUID = "1.2.3"
        rows = extract(ds)
        assert rows.patient["patient_id"] == "" and rows.patient["issuer_of_patient_id"] == ""
        assert "patient_name_norm" not in rows.patient

    def test_small_attributes_skip_group_lengths(self) -> None:
        ds = Dataset()
        ds.add_new(0x00080000, "UL", 40)
        ds.Manufacturer = "M"
        ds.add_new(0x7FE00000, "UL", 105406)
        assert small_attributes(ds) == {"00080070": {"vr": "LO", "Value": ["M"]}}

    def test_small_attributes_skip_sequences(self) -> None:
        ds = Dataset()
        ds.Manufacturer = "M"
        ds.ReferencedStudySequence = [Dataset()]
        assert small_attributes(ds) == {"00080070": {"vr": "LO", "Value": ["M"]}}


def _reference_small_attributes(ds: Dataset) -> dict:
    """The plain pydicom route: the kept elements in a Dataset, then ``to_json_dict``."""
    small = Dataset()
    for elem in ds:
        if elem.tag.is_private or elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"):
            continue
        if elem.tag == 0x7FE00010 or elem.tag.group == 2 or elem.tag.element == 0:
            continue  # (group lengths: retired, and no attribute of the object)
        try:
            if len(str(elem.value)) > 256:
                continue
        except Exception:  # noqa: BLE001, S112
            continue
        small.add(elem)
    out = small.to_json_dict(bulk_data_threshold=1024, suppress_invalid_tags=True)
    for item in out.values():  # an empty value among several is null (PS3.18 F.2.5)
        values = item.get("Value")
        if isinstance(values, list) and len(values) > 1 and "" in values:
            item["Value"] = [None if v == "" else v for v in values]
    return out


@pytest.mark.parametrize("name", pydicom_test_files(), ids=lambda p: Path(p).name)
def test_small_attributes_equal_pydicoms_json(name: str) -> None:
    """The direct JSON of the small attributes equals pydicom's for every file pydicom ships
    (text, numbers, person names in several character sets, multi-valued, empty values)."""
    import pydicom

    try:
        ds = pydicom.dcmread(name, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - a deliberately broken sample
        pytest.skip("pydicom cannot read it")
    try:
        expected = _reference_small_attributes(ds)
    except Exception:  # noqa: BLE001
        pytest.skip("pydicom cannot convert it to JSON")
    assert small_attributes(ds) == expected
