"""The object validator: layers, findings, API and speed (PS3.3, PS3.5, PS3.6, PS3.10)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from validation_cases import CASES, comprehensive_sr, ct, secondary_capture, write

from archivist.validate import (
    Finding,
    Severity,
    ValidationOptions,
    check_consistency,
    validate_dataset,
    validate_file,
    validate_paths,
)
from archivist.validate.standard import tables


def _errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.ERROR]


class TestTables:
    def test_counts_and_common_iods(self) -> None:
        std = tables()
        assert len(std.iod_keys) >= 170
        for uid, name in [
            ("1.2.840.10008.5.1.4.1.1.2", "CT Image"),
            ("1.2.840.10008.5.1.4.1.1.4", "MR Image"),
            ("1.2.840.10008.5.1.4.1.1.1", "Computed Radiography Image"),
            ("1.2.840.10008.5.1.4.1.1.1.1", "Digital X-ray Image"),
            ("1.2.840.10008.5.1.4.1.1.6.1", "Ultrasound Image"),
            ("1.2.840.10008.5.1.4.1.1.7", "Secondary Capture Image"),
            ("1.2.840.10008.5.1.4.1.1.88.33", "Comprehensive SR"),
            ("1.2.840.10008.5.1.4.1.1.66.4", "Segmentation"),
            ("1.2.840.10008.5.1.4.1.1.88.59", "Key Object Selection Document"),
        ]:
            iod = std.iod_for_sop_class(uid)
            assert iod is not None and iod.name.lower() == name.lower(), uid

    def test_usage_letters_are_raw(self) -> None:
        iod = tables().iod("ct-image")
        usage = {m.module: m.usage for m in iod.modules}
        assert usage["patient"] == "M"
        assert usage["contrast-bolus"] == "C"
        assert usage["clinical-trial-subject"] == "U"

    def test_generator_is_reproducible(self, tmp_path: Path) -> None:
        import importlib.util

        root = Path(__file__).resolve().parents[2]
        spec = importlib.util.spec_from_file_location(
            "generate_iod_tables", root / "tools" / "generate_iod_tables.py"
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.generate(tmp_path)
        committed = root / "src" / "archivist" / "validate" / "_standard"
        assert (tmp_path / "standard.json").read_bytes() == (
            committed / "standard.json"
        ).read_bytes()
        assert (tmp_path / "README.md").read_text() == (committed / "README.md").read_text()


class TestValidObjects:
    @pytest.mark.parametrize(
        "name",
        ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "test-SR.dcm", "examples_rgb_color.dcm"],
    )
    def test_no_errors(self, name: str) -> None:
        report = validate_file(get_testdata_file(name))
        assert report.ok, [f.to_dict() for f in report.errors]
        assert report.iod

    @pytest.mark.parametrize("build", [secondary_capture, comprehensive_sr])
    def test_generated_objects_are_clean(self, build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
        report = validate_file(write(build(), tmp_path / "x.dcm"))
        assert report.ok, [f.to_dict() for f in report.errors]


class TestBrokenObjects:
    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_expected_finding(self, case) -> None:  # type: ignore[no-untyped-def]
        findings = validate_dataset(case.build())
        got = {(f.rule_id, f.path.rsplit("/", 1)[-1].split("(")[0]) for f in findings}
        for rule, keyword in case.expect:
            assert (rule, keyword) in got, (case.name, sorted(got))

    def test_finding_fields(self) -> None:
        ds = ct()
        del ds.Modality
        finding = next(f for f in validate_dataset(ds) if f.rule_id == "iod.type1-missing")
        assert finding.severity is Severity.ERROR
        assert finding.path == "/Modality(0008,0060)"
        assert finding.module == "General Series"
        assert finding.iod == "CT Image"
        assert finding.reference == "PS3.3 C.7.3.1"
        assert "Modality" in finding.message
        assert json.loads(json.dumps(finding.to_dict()))["rule_id"] == "iod.type1-missing"

    def test_nested_path(self) -> None:
        ds = comprehensive_sr()
        del ds.ContentSequence[0].TextValue
        paths = [f.path for f in validate_dataset(ds)]
        assert "/ContentSequence(0040,A730)[1]/TextValue(0040,A160)" in paths

    def test_unknown_sop_class(self) -> None:
        ds = Dataset()
        ds.SOPClassUID = "1.2.3.4"
        ds.SOPInstanceUID = "1.2.3.4.5"
        rules = {f.rule_id for f in validate_dataset(ds)}
        assert "iod.unknown-sop-class" in rules

    def test_media_storage_mismatch(self, tmp_path: Path) -> None:
        ds = ct()
        path = write(ds, tmp_path / "a.dcm")
        raw = pydicom.dcmread(path)
        raw.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
        raw.save_as(path)
        rules = {f.rule_id for f in validate_file(path).findings}
        assert "part10.sop-instance-mismatch" in rules

    def test_not_dicom(self, tmp_path: Path) -> None:
        path = tmp_path / "x.dcm"
        path.write_bytes(b"hello")
        report = validate_file(path)
        assert not report.ok
        assert report.findings[-1].rule_id == "encoding.unreadable"

    def test_pixel_data_length(self) -> None:
        ds = secondary_capture()
        ds.PixelData = bytes(10)
        rules = {f.rule_id for f in validate_dataset(ds)}
        assert "encoding.pixel-data-length" in rules

    def test_non_ascii_without_charset(self) -> None:
        ds = secondary_capture()
        ds.PatientName = "Müller^Hans"
        rules = {f.rule_id for f in validate_dataset(ds)}
        assert "iod.type1c-missing" in rules  # Specific Character Set required
        assert "dict.character-repertoire" in rules

    def test_code_checker_hook(self) -> None:
        seen: list[str] = []

        def checker(item: Dataset, path: str) -> list[Finding]:
            seen.append(path)
            return [Finding(Severity.INFO, "code.test", path, "", "", str(item.CodeValue), "")]

        findings = validate_dataset(
            comprehensive_sr(), options=ValidationOptions(code_checkers=(checker,))
        )
        assert "/ConceptNameCodeSequence(0040,A043)[1]" in seen
        assert any(f.rule_id == "code.test" for f in findings)


class TestConsistency:
    def test_same_study_different_patient(self, tmp_path: Path) -> None:
        a = ct()
        b = ct()
        b.SOPInstanceUID = "1.2.3.4.5.6"
        b.PatientName = "Other^Name"
        write(a, tmp_path / "a.dcm")
        write(b, tmp_path / "b.dcm")
        result = validate_paths([tmp_path])
        rules = {f.rule_id for f in result.consistency}
        assert "consistency.patient-attributes" in rules
        assert not result.ok

    def test_records_api(self) -> None:
        findings = check_consistency(
            [("x", {"SeriesInstanceUID": "1.2", "Modality": "CT"}),
             ("y", {"SeriesInstanceUID": "1.2", "Modality": "MR"})]
        )
        assert [f.rule_id for f in findings] == ["consistency.series-attributes"]


def _big_ct() -> Dataset:
    ds = ct()
    ds.Rows = 512
    ds.Columns = 512
    ds.PixelData = np.zeros((512, 512), dtype=np.int16).tobytes()
    return ds


class TestSpeed:
    @staticmethod
    def _per_call_ms(ds: Dataset, runs: int = 50) -> float:
        validate_dataset(ds)  # tables loaded, caches warm
        start = time.perf_counter()
        for _ in range(runs):
            validate_dataset(ds)
        return (time.perf_counter() - start) * 1000 / runs

    def test_ct_small_is_fast(self) -> None:
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        assert self._per_call_ms(ds) < 15

    def test_512_ct_from_file_is_fast(self, tmp_path: Path) -> None:
        path = write(_big_ct(), tmp_path / "big.dcm")
        assert path.stat().st_size > 512 * 1024
        ds = pydicom.dcmread(path)
        assert self._per_call_ms(ds) < 15
        assert validate_file(path).ok
