"""Checks of coded items (archivist.terminology.check) on crafted datasets and pydicom's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from archivist import terminology
from archivist.terminology.check import EXPECTED_CID, CheckError, iter_coded_items
from archivist.terminology.findings import FindingKind, Severity


def local_test_file(name: str) -> Path:
    """A test file pydicom ships in its wheel (download=False: never fetch from the network)."""
    found = get_testdata_file(name, download=False)
    assert found is not None, name
    return Path(str(found))


TEST_FILES = local_test_file("test-SR.dcm").parent


def code(value: str | None = None, scheme: str | None = "SCT", meaning: str | None = None,
         **extra: str) -> Dataset:
    item = Dataset()
    if value is not None:
        item.CodeValue = value
    if scheme is not None:
        item.CodingSchemeDesignator = scheme
    if meaning is not None:
        item.CodeMeaning = meaning
    for keyword, text in extra.items():
        setattr(item, keyword, text)
    return item


def dataset(**sequences: list[Dataset]) -> Dataset:
    ds = Dataset()
    for keyword, items in sequences.items():
        setattr(ds, keyword, Sequence(items))
    return ds


def kinds(ds: Dataset) -> list[tuple[str, str]]:
    return [(f.kind.value, f.path) for f in terminology.check_dataset(ds)]


class TestStructure:
    def test_valid_code_has_no_finding(self) -> None:
        assert kinds(dataset(AnatomicRegionSequence=[code("10200004", meaning="Liver")])) == []

    def test_no_value(self) -> None:
        ds = dataset(AnatomicRegionSequence=[code(None, meaning="Liver")])
        assert ("structure.value-missing", "AnatomicRegionSequence[0]") in kinds(ds)

    def test_several_values(self) -> None:
        item = code("10200004", meaning="Liver", LongCodeValue="10200004000000000001")
        found = terminology.check_dataset(dataset(AnatomicRegionSequence=[item]))
        assert found[0].kind is FindingKind.VALUE_MULTIPLE
        assert found[0].severity is Severity.ERROR

    @pytest.mark.filterwarnings("ignore:The value length")
    def test_code_value_too_long(self) -> None:
        ds = dataset(ConceptNameCodeSequence=[code("12345678901234567", "99LOCAL", "X")])
        assert [k for k, _ in kinds(ds)] == ["structure.value-length"]

    def test_urn_in_code_value(self) -> None:
        ds = dataset(ConceptNameCodeSequence=[code("urn:oid:1.2.3", "99LOCAL", "X")])
        assert [k for k, _ in kinds(ds)] == ["structure.value-kind"]

    def test_short_long_code_value(self) -> None:
        item = code(None, "99LOCAL", "X", LongCodeValue="ABC")
        assert [k for k, _ in kinds(dataset(ConceptNameCodeSequence=[item]))] == [
            "structure.value-kind"
        ]

    def test_urn_code_value_needs_no_designator(self) -> None:
        item = code(None, None, "Some concept", URNCodeValue="http://example.org/concept/1")
        assert kinds(dataset(ConceptNameCodeSequence=[item])) == []

    def test_missing_designator_and_meaning(self) -> None:
        ds = dataset(ConceptNameCodeSequence=[code("10200004", None, None)])
        assert [k for k, _ in kinds(ds)] == [
            "structure.designator-missing", "structure.meaning-missing"
        ]

    @pytest.mark.filterwarnings("ignore:The value length")
    def test_meaning_too_long(self) -> None:
        ds = dataset(ConceptNameCodeSequence=[code("X1", "99LOCAL", "m" * 65)])
        assert [k for k, _ in kinds(ds)] == ["structure.meaning-length"]


class TestDesignators:
    @pytest.mark.parametrize("retired", ["SRT", "SNM3", "99SDM"])
    def test_retired_designator_suggests_sct(self, retired: str) -> None:
        found = terminology.check_dataset(
            dataset(AnatomicRegionSequence=[code("T-62000", retired, "Liver")])
        )
        assert [f.kind for f in found] == [FindingKind.DESIGNATOR_RETIRED]
        assert found[0].severity is Severity.WARNING
        assert found[0].suggestion == {"scheme": "SCT", "value": "10200004", "meaning": "Liver"}
        assert "use SCT 10200004" in found[0].message

    def test_retired_without_equivalent(self) -> None:
        found = terminology.check_dataset(
            dataset(AnatomicRegionSequence=[code("X-00000", "SRT", "Whatever")])
        )
        assert [f.kind for f in found] == [FindingKind.DESIGNATOR_RETIRED]
        assert "no SCT equivalent" in found[0].message

    def test_unknown_designator(self) -> None:
        found = terminology.check_dataset(
            dataset(ConceptNameCodeSequence=[code("1", "SNOMED", "Liver")])
        )
        assert [f.kind for f in found] == [FindingKind.DESIGNATOR_UNKNOWN]
        assert "did you mean SCT" in found[0].message

    def test_declared_local_and_registered_designators_are_known(self) -> None:
        ds = dataset(
            ConceptNameCodeSequence=[code("1", "MYSCHEME", "A")],
            ProcedureCodeSequence=[code("2", "99MYPACS", "B"), code("3", "ACR", "C")],
        )
        ds.CodingSchemeIdentificationSequence = Sequence([code(None, "MYSCHEME", None)])
        assert kinds(ds) == []

    def test_units_must_be_ucum(self) -> None:
        ds = dataset(MeasurementUnitsCodeSequence=[code("mm", "99_OFFIS_DCMTK", "mm")])
        assert [k for k, _ in kinds(ds)] == ["units.not-ucum"]
        ds = dataset(MeasurementUnitsCodeSequence=[code("mm", "UCUM", "millimeter")])
        assert kinds(ds) == []


class TestCodesAndMeanings:
    def test_unknown_sct_code(self) -> None:
        found = terminology.check_dataset(
            dataset(AnatomicRegionSequence=[code("12345678", "SCT", "Liver")])
        )
        assert [(f.kind, f.severity) for f in found] == [
            (FindingKind.CODE_UNKNOWN, Severity.WARNING)
        ]

    def test_unknown_dcm_code(self) -> None:
        found = terminology.check_dataset(
            dataset(ConceptNameCodeSequence=[code("999999", "DCM", "Nothing")])
        )
        assert [f.kind for f in found] == [FindingKind.CODE_UNKNOWN]

    def test_unknown_ucum_unit_is_only_information(self) -> None:
        found = terminology.check_dataset(
            dataset(MeasurementUnitsCodeSequence=[code("kg.m/s2", "UCUM", "newton")])
        )
        assert [(f.kind, f.severity) for f in found] == [(FindingKind.CODE_UNKNOWN, Severity.INFO)]

    def test_meaning_differs(self) -> None:
        found = terminology.check_dataset(
            dataset(AnatomicRegionSequence=[code("69536005", "SCT", "Hed")])
        )
        assert [f.kind for f in found] == [FindingKind.MEANING_DIFFERS]
        assert found[0].severity is Severity.WARNING
        assert found[0].suggestion["meaning"] == "Head"

    def test_meaning_variants_case_and_spaces_are_accepted(self) -> None:
        items = [
            code("km/h", "UCUM", "kilometer per hour"),
            code("ms", "UCUM", "milliseconds"),
            code("10200004", "SCT", "LIVER"),
            code("10200004", "SCT", "Liver structure (body structure)"),
            code("10200004", "SCT", "  liver "),
        ]
        assert kinds(dataset(ConceptCodeSequence=items)) == []

    def test_code_outside_the_expected_cid(self) -> None:
        # Pneumothorax is a finding, not an anatomic region (CID 4).
        found = terminology.check_dataset(
            dataset(AnatomicRegionSequence=[code("36118008", "SCT", "Pneumothorax")])
        )
        assert [(f.kind, f.severity) for f in found] == [
            (FindingKind.CID_NOT_MEMBER, Severity.INFO)
        ]
        assert "CID 4" in found[0].message
        assert terminology.check_dataset(
            dataset(AnatomicRegionSequence=[code("36118008", "SCT", "Pneumothorax")]),
            cids=False,
        ) == []

    def test_expected_cids_exist(self) -> None:
        term = terminology.default_terminology()
        for keyword, expected in EXPECTED_CID.items():
            assert term.cid_name(expected.cid), keyword


class TestPaths:
    def test_nested_items_are_found_at_any_depth(self) -> None:
        inner = dataset(ConceptNameCodeSequence=[code("121071", "DCM", "Finding")])
        inner.ConceptCodeSequence = Sequence([code("36118008", "SCT", "Pneumothorax")])
        middle = Dataset()
        middle.ContentSequence = Sequence([Dataset(), inner])
        ds = Dataset()
        ds.ContentSequence = Sequence([middle])
        paths = [p for p, _, _ in iter_coded_items(ds)]
        assert paths == [
            "ContentSequence[0].ContentSequence[1].ConceptNameCodeSequence[0]",
            "ContentSequence[0].ContentSequence[1].ConceptCodeSequence[0]",
        ]

    def test_finding_path_and_json(self) -> None:
        ds = Dataset()
        ds.ContentSequence = Sequence(
            [dataset(ConceptCodeSequence=[code("T-62000", "SRT", "Liver")])]
        )
        finding = terminology.check_dataset(ds)[0]
        assert finding.path == "ContentSequence[0].ConceptCodeSequence[0]"
        data = finding.to_dict()
        assert data["kind"] == "designator.retired" and data["code"] == ["SRT", "T-62000"]
        json.dumps(data)


class TestPydicomFiles:
    def test_sr_test_file_findings_are_all_real(self) -> None:
        """test-SR.dcm uses designator TEST and units coded with 99_OFFIS_DCMTK; dciodvfy flags
        the same ("Unrecognized defined term", "not UCUM"). Nothing else may be reported."""
        found = terminology.check_file(local_test_file("test-SR.dcm"))
        assert sorted((f.kind.value, f.code) for f in found) == [
            ("designator.unknown", ("TEST", "1111")),
            ("units.not-ucum", ("99_OFFIS_DCMTK", "cm")),
            ("units.not-ucum", ("99_OFFIS_DCMTK", "cm")),
        ]

    def test_segmentation_with_retired_srt_codes(self) -> None:
        """liver_1frame.dcm codes its segment with SRT: real, retired-designator findings."""
        found = terminology.check_file(local_test_file("liver_1frame.dcm"))
        assert [(f.kind.value, f.code, f.suggestion["value"]) for f in found] == [
            ("designator.retired", ("SRT", "T-D0050"), "85756007"),
            ("designator.retired", ("SRT", "T-62000"), "10200004"),
        ]

    @pytest.mark.filterwarnings("ignore::UserWarning")
    def test_no_findings_on_the_other_test_files(self) -> None:
        """Every other DICOM file pydicom ships (waveform_ecg.dcm has MDC, SCPECG and UCUM
        codes; rtstruct.dcm, reportsi.dcm... have coded items too)."""
        skip = {"test-SR.dcm", "liver_1frame.dcm", "liver_expb_1frame.dcm"}
        checked = 0
        for path in sorted(TEST_FILES.glob("*.dcm")):
            if path.name in skip:
                continue
            try:
                found = terminology.check_file(path)
            except CheckError:
                continue
            checked += 1
            assert found == [], (path.name, [str(f) for f in found])
        assert checked > 50


def write(ds: Dataset, path: Path) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


class TestCheckCommand:
    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "archivist.cli.main", "codes", "check", *args],
            check=False, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )

    def test_text_and_exit_status(self, tmp_path: Path) -> None:
        bad = write(dataset(AnatomicRegionSequence=[code("T-62000", "SRT", "Liver"),
                                                    code(None, "SCT", "Liver")]),
                    tmp_path / "bad.dcm")
        good = write(dataset(AnatomicRegionSequence=[code("10200004", "SCT", "Liver")]),
                     tmp_path / "good.dcm")
        out = self.run(str(good), str(bad))
        assert out.returncode == 1, out.stderr
        assert f"{good}: 0 finding(s)" in out.stdout
        assert "WARNING AnatomicRegionSequence[0]: SRT is retired; use SCT 10200004" in out.stdout
        assert "ERROR   AnatomicRegionSequence[1]: no Code Value" in out.stdout

    def test_json(self, tmp_path: Path) -> None:
        path = write(dataset(AnatomicRegionSequence=[code("69536005", "SCT", "Hed")]),
                     tmp_path / "a.dcm")
        out = self.run(str(path), "--json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report[0]["findings"][0]["kind"] == "meaning.differs"

    def test_not_dicom(self, tmp_path: Path) -> None:
        path = tmp_path / "x.txt"
        path.write_text("not dicom")
        out = self.run(str(path))
        assert out.returncode == 2
        assert "cannot read" in out.stderr
