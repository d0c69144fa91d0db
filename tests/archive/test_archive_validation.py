"""Validation on ingest: the policies off / warn / reject, the findings kept, the pixel data
judged without loading it, and agreement with the validator run on the whole file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from archivist.archive.archive import Archive
from archivist.archive.ingest import MAX_FINDINGS_PER_INSTANCE, Origin, StoreStatus
from archivist.errors import ValidationRejected
from archivist.testing.datasets import make_instance, new_uid, pydicom_test_file
from archivist.validate import Finding, Severity, validate_dataset

IMPORT = Origin("import")
PYDICOM_FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm", "rtdose.dcm",
                 "SC_rgb_rle_2frame.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                 "test-SR.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "image_dfl.dcm"]


def complete_ct(path: Path, **kw: Any) -> pydicom.Dataset:
    """A generated CT image with every attribute the CT Image IOD requires (no findings)."""
    extra = {
        "PatientPosition": "HFS", "FrameOfReferenceUID": new_uid(),
        "PositionReferenceIndicator": "", "SliceThickness": "1.0",
        "ImagePositionPatient": [0, 0, 0], "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "PixelSpacing": [0.5, 0.5], "KVP": "120", "RescaleIntercept": "-1024",
        "RescaleSlope": "1", "AcquisitionNumber": 1,
        # 16 bits, 12 stored: what the CT Image Module allows (PS3.3 C.8.2.1.1.4)
        "BitsAllocated": 16, "BitsStored": 12, "HighBit": 11,
    }
    extra.update(kw.pop("extra", {}))
    return make_instance(path, extra=extra, **kw)


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


OpenArchive = Callable[..., Archive]


class TestPolicies:
    def test_warn_stores_and_keeps_the_findings(self, archive: Archive, tmp_path: Path) -> None:
        assert archive.settings.validation_policy == "warn"
        ds = make_instance(tmp_path / "a.dcm")  # a CT without the Image Plane attributes
        result = archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        assert result.status is StoreStatus.STORED
        assert result.validation is not None and result.validation.errors >= 5
        stored = archive.index.validation_of(str(ds.SOPInstanceUID))
        assert stored is not None and stored["validated"] is True
        assert stored["errors"] == result.validation.errors
        rules = {(f["rule_id"], f["path"]) for f in stored["findings"]}
        assert ("iod.type1-missing", "/PixelSpacing(0028,0030)") in rules
        assert ("iod.type1-missing", "/FrameOfReferenceUID(0020,0052)") in rules
        first = stored["findings"][0]
        assert set(first) == {"severity", "rule_id", "path", "module", "iod", "message",
                              "reference"}
        assert all(f["iod"] == "CT Image" for f in stored["findings"])
        assert archive.index.validation_counts() == {"validated": 1, "with_errors": 1,
                                                     "with_warnings": 0}

    def test_a_complete_object_has_no_findings(self, archive: Archive, tmp_path: Path) -> None:
        ds = complete_ct(tmp_path / "ct.dcm")
        result = archive.ingest.store_file(tmp_path / "ct.dcm", IMPORT)
        assert result.validation is not None
        assert (result.validation.errors, result.validation.warnings) == (0, 0)
        stored = archive.index.validation_of(str(ds.SOPInstanceUID))
        assert stored is not None and stored["validated"] and stored["findings"] == []
        assert archive.index.validation_counts()["with_errors"] == 0

    def test_off_stores_nothing_about_validation(self, open_archive: OpenArchive,
                                                 tmp_path: Path) -> None:
        archive = open_archive(validation_policy="off")
        ds = make_instance(tmp_path / "a.dcm")
        result = archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        assert result.status is StoreStatus.STORED and result.validation is None
        stored = archive.index.validation_of(str(ds.SOPInstanceUID))
        assert stored == {"sop_instance_uid": str(ds.SOPInstanceUID),
                          "sop_class_uid": str(ds.SOPClassUID), "validated": False,
                          "errors": None, "warnings": None, "findings": []}
        assert archive.index.validation_counts() == {"validated": 0, "with_errors": 0,
                                                     "with_warnings": 0}

    def test_reject_refuses_with_the_rule_and_leaves_nothing(
        self, open_archive: OpenArchive, tmp_path: Path
    ) -> None:
        archive = open_archive(validation_policy="reject")
        make_instance(tmp_path / "a.dcm")
        before = _files_under(archive.settings.data_dir)
        with pytest.raises(ValidationRejected) as caught:
            archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        message = str(caught.value)
        assert message.startswith("iod.")
        assert caught.value.rule_ids[0] in message and "more errors" in message
        assert "iod.type1-missing" in caught.value.rule_ids
        assert archive.index.counts() == {"patient": 0, "study": 0, "series": 0, "instance": 0}
        assert list(archive.blobs.keys()) == []
        assert _files_under(archive.settings.data_dir) == before
        assert (tmp_path / "a.dcm").exists()

    def test_reject_consumed_temp_file_is_not_moved(self, open_archive: OpenArchive,
                                                    tmp_path: Path) -> None:
        archive = open_archive(validation_policy="reject")
        make_instance(tmp_path / "a.dcm")
        with pytest.raises(ValidationRejected):
            archive.ingest.store_bytes((tmp_path / "a.dcm").read_bytes(), IMPORT)
        assert list(archive.blobs.keys()) == []
        assert list(archive.settings.tmp_dir.iterdir()) == []

    def test_reject_stores_objects_without_errors(self, open_archive: OpenArchive,
                                                  tmp_path: Path) -> None:
        archive = open_archive(validation_policy="reject")
        ds = complete_ct(tmp_path / "ct.dcm")
        result = archive.ingest.store_file(tmp_path / "ct.dcm", IMPORT)
        assert result.status is StoreStatus.STORED
        stored = archive.index.validation_of(str(ds.SOPInstanceUID))
        assert stored is not None and stored["validated"] and stored["errors"] == 0

    def test_reject_keeps_warnings(self, open_archive: OpenArchive, tmp_path: Path) -> None:
        archive = open_archive(validation_policy="reject")
        ds = complete_ct(tmp_path / "ct.dcm", extra={"RTPlanLabel": "NOT CT"})
        result = archive.ingest.store_file(tmp_path / "ct.dcm", IMPORT)
        assert result.validation is not None
        assert result.validation.errors == 0 and result.validation.warnings >= 1
        stored = archive.index.validation_of(str(ds.SOPInstanceUID))
        assert stored is not None
        assert [(f["severity"], f["rule_id"], f["path"]) for f in stored["findings"]] == [
            ("warning", "iod.not-in-iod", "/RTPlanLabel(300A,0002)")]
        assert archive.index.validation_counts() == {"validated": 1, "with_errors": 0,
                                                     "with_warnings": 1}

    def test_replace_replaces_the_findings(self, open_archive: OpenArchive,
                                           tmp_path: Path) -> None:
        archive = open_archive(duplicate_policy="replace")
        uid, same = new_uid(), {"study_uid": new_uid(), "series_uid": new_uid()}
        make_instance(tmp_path / "bad.dcm", sop_uid=uid, **same)
        complete_ct(tmp_path / "good.dcm", sop_uid=uid, **same)
        archive.ingest.store_file(tmp_path / "bad.dcm", IMPORT)
        bad = archive.index.validation_of(uid)
        assert bad is not None and bad["errors"] > 0 and bad["findings"]
        result = archive.ingest.store_file(tmp_path / "good.dcm", IMPORT)
        assert result.status is StoreStatus.REPLACED
        assert archive.index.validation_of(uid) == {
            "sop_instance_uid": uid, "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
            "validated": True, "errors": 0, "warnings": 0, "findings": []}

    def test_findings_are_capped_counts_are_not(self, tmp_path: Path,
                                                open_archive: OpenArchive) -> None:
        many = [Finding(Severity.ERROR, "test.rule", f"/x[{i}]", "", "", "m" * 5000, "PS3.3")
                for i in range(MAX_FINDINGS_PER_INSTANCE + 50)]
        archive = open_archive()
        archive.ingest.validator = lambda ds, pixel: many
        ds = make_instance(tmp_path / "a.dcm")
        result = archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        assert result.validation is not None
        assert result.validation.errors == MAX_FINDINGS_PER_INSTANCE + 50
        stored = archive.index.validation_of(str(ds.SOPInstanceUID))
        assert stored is not None and stored["errors"] == MAX_FINDINGS_PER_INSTANCE + 50
        assert len(stored["findings"]) == MAX_FINDINGS_PER_INSTANCE
        assert len(stored["findings"][0]["message"]) == 1024

    def test_a_failing_validator_does_not_block_ingest(self, archive: Archive,
                                                       tmp_path: Path) -> None:
        def broken(ds: Any, pixel: Any) -> list[Finding]:
            raise RuntimeError("bug")

        archive.ingest.validator = broken
        ds = make_instance(tmp_path / "a.dcm")
        result = archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        assert result.status is StoreStatus.STORED and result.validation is None
        stored = archive.index.validation_of(str(ds.SOPInstanceUID))
        assert stored is not None and stored["validated"] is False


class TestPixelData:
    """The header is read without Pixel Data; the validator must not call it missing."""

    def test_present_pixel_data_is_not_missing(self, archive: Archive, tmp_path: Path) -> None:
        ds = complete_ct(tmp_path / "ct.dcm", rows=8, columns=8)
        archive.ingest.store_file(tmp_path / "ct.dcm", IMPORT)
        stored = archive.index.validation_of(str(ds.SOPInstanceUID))
        assert stored is not None and stored["findings"] == []

    def test_pixel_data_length_is_checked_from_the_element_length(
        self, archive: Archive, tmp_path: Path
    ) -> None:
        ds = complete_ct(tmp_path / "ct.dcm", rows=8, columns=8)
        ds.PixelData = bytes(64 + 16)  # 16 bytes too many
        ds.save_as(tmp_path / "long.dcm", enforce_file_format=True)
        archive.ingest.store_file(tmp_path / "long.dcm", IMPORT)
        stored = archive.index.validation_of(str(ds.SOPInstanceUID))
        assert stored is not None
        assert [(f["rule_id"], f["path"]) for f in stored["findings"]] == [
            ("encoding.pixel-data-length", "/PixelData(7FE0,0010)")]
        assert "80 bytes" in stored["findings"][0]["message"]

    def test_image_pixel_rules_apply_on_ingest(
        self, open_archive: OpenArchive, tmp_path: Path
    ) -> None:
        """Ingest reads up to the Pixel Data; the Image Pixel rules still see that the object
        has pixel data: kept under warn, refused under reject, the same as the file validator."""
        ds = complete_ct(tmp_path / "ct.dcm", rows=8, columns=8)
        ds.HighBit = 3  # Bits Stored is 16
        ds.save_as(tmp_path / "hb.dcm", enforce_file_format=True)
        archive = open_archive()
        result = archive.ingest.store_file(tmp_path / "hb.dcm", IMPORT)
        assert result.validation is not None
        assert [(f.rule_id, f.path) for f in result.validation.findings] == [
            ("pixel.high-bit", "/HighBit(0028,0102)")]
        archive.close()
        ds.SOPInstanceUID = new_uid()
        ds.save_as(tmp_path / "hb2.dcm", enforce_file_format=True)
        strict = open_archive(validation_policy="reject", data_dir=tmp_path / "strict")
        with pytest.raises(ValidationRejected) as caught:
            strict.ingest.store_file(tmp_path / "hb2.dcm", IMPORT)
        assert caught.value.rule_ids == ["pixel.high-bit"]

    def test_image_without_pixel_data_is_judged_by_validation(
        self, archive: Archive, tmp_path: Path
    ) -> None:
        """Complete but without its Type 1 Pixel Data: stored under warn, the missing Pixel
        Data is an error finding (not a refusal as 'truncated': nothing was cut short)."""
        ds = complete_ct(tmp_path / "ct.dcm")
        del ds.PixelData
        ds.save_as(tmp_path / "nopix.dcm", enforce_file_format=True)
        result = archive.ingest.store_file(tmp_path / "nopix.dcm", IMPORT)
        assert result.validation is not None
        errors = [f for f in result.validation.findings if f.severity == "error"]
        assert errors and all("7FE0,0010" in f.path or "PixelData" in f.path for f in errors), \
            errors


class TestAgreementWithTheFileValidator:
    """Validation on ingest (header only, pixel data judged by length) finds what the
    validator finds on the whole dataset read from the file."""

    @pytest.mark.parametrize("name", PYDICOM_FILES)
    def test_same_findings(self, open_archive: OpenArchive, name: str) -> None:
        path = pydicom_test_file(name)
        if path is None:
            pytest.skip(f"{name} is not shipped with this pydicom")
        archive = open_archive(duplicate_policy="replace")
        result = archive.ingest.store_file(path, IMPORT)
        stored = archive.index.validation_of(result.sop_instance_uid)
        assert stored is not None and stored["validated"]
        full = validate_dataset(pydicom.dcmread(path))
        expected = sorted((f.severity.value, f.rule_id, f.path) for f in full)
        got = sorted((f["severity"], f["rule_id"], f["path"]) for f in stored["findings"])
        assert got == expected
