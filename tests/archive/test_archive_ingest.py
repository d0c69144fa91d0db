"""The one ingest pipeline: byte-for-byte storage, refusals, duplicates, failure clean-up."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
from pathlib import Path

import pydicom
import pydicom.uid
import pytest

import archivist.archive.ingest as ingest_module
from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin, StoreStatus
from archivist.errors import DuplicateRejected, IndexError_, InvalidObject, SOPClassMismatch
from archivist.testing.datasets import (
    make_instance,
    new_uid,
    pydicom_test_file,
    pydicom_test_files,
)

IMPORT = Origin("import")
PYDICOM_FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm", "rtdose.dcm",
                 "SC_rgb_rle.dcm", "SC_rgb_rle_2frame.dcm", "MR_small_implicit.dcm",
                 "MR_small_bigendian.dcm", "test-SR.dcm", "liver_1frame.dcm"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pydicom_file(name: str) -> Path:
    path = pydicom_test_file(name)
    if path is None:
        pytest.skip(f"{name} is not shipped with this pydicom (it would need a download)")
    return path


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _assert_empty(archive: Archive) -> None:
    assert archive.index.counts() == {"patient": 0, "study": 0, "series": 0, "instance": 0}
    assert list(archive.blobs.keys()) == []
    assert list(archive.settings.tmp_dir.iterdir()) == []


class TestStoreFile:
    @pytest.mark.parametrize("name", PYDICOM_FILES)
    def test_pydicom_files_stored_byte_for_byte(self, archive: Archive, name: str) -> None:
        source = _pydicom_file(name)
        result = archive.ingest.store_file(source, Origin("dimse", "MODALITY", "10.0.0.9"))
        assert result.status is StoreStatus.STORED
        assert result.size == source.stat().st_size
        row = archive.index.get_instance(result.sop_instance_uid)
        assert row is not None
        assert row["sha256"] == _sha(source)
        assert (row["source_aet"], row["source_address"]) == ("MODALITY", "10.0.0.9")
        with archive.blobs.open(row["storage_key"]) as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == _sha(source)
        assert source.exists()
        assert archive.index.counts()["instance"] == 1

    def test_transfer_syntax_and_frames_recorded(self, archive: Archive) -> None:
        rle = archive.ingest.store_file(_pydicom_file("SC_rgb_rle_2frame.dcm"), IMPORT)
        dose = archive.ingest.store_file(_pydicom_file("rtdose.dcm"), IMPORT)
        rle_row = archive.index.get_instance(rle.sop_instance_uid)
        dose_row = archive.index.get_instance(dose.sop_instance_uid)
        assert rle_row is not None and dose_row is not None
        assert rle_row["transfer_syntax_uid"] == "1.2.840.10008.1.2.5"
        assert rle_row["number_of_frames"] == 2
        assert dose_row["transfer_syntax_uid"] == "1.2.840.10008.1.2"
        assert dose_row["number_of_frames"] == 15

    def test_generated_multiframe(self, archive: Archive, tmp_path: Path) -> None:
        make_instance(tmp_path / "mf.dcm", frames=5, rows=3, columns=3)
        result = archive.ingest.store_file(tmp_path / "mf.dcm", IMPORT)
        row = archive.index.get_instance(result.sop_instance_uid)
        assert row is not None and row["number_of_frames"] == 5

    def test_result_identifiers(self, archive: Archive, tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "a.dcm")
        result = archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        assert (result.sop_instance_uid, result.sop_class_uid, result.study_instance_uid,
                result.series_instance_uid) == (ds.SOPInstanceUID, ds.SOPClassUID,
                                                ds.StudyInstanceUID, ds.SeriesInstanceUID)
        assert result.change_seq == 1 and result.warnings == []

    def test_consume_moves_the_file(self, archive: Archive) -> None:
        tmp = archive.settings.tmp_dir / "incoming.dcm"
        shutil.copy(_pydicom_file("CT_small.dcm"), tmp)
        digest = _sha(tmp)
        result = archive.ingest.store_file(tmp, IMPORT, consume=True)
        assert not tmp.exists()
        row = archive.index.get_instance(result.sop_instance_uid)
        assert row is not None and row["sha256"] == digest

    def test_store_bytes(self, archive: Archive) -> None:
        data = _pydicom_file("MR_small.dcm").read_bytes()
        result = archive.ingest.store_bytes(data, Origin("stow"))
        assert result.status is StoreStatus.STORED and result.size == len(data)
        assert list(archive.settings.tmp_dir.iterdir()) == []

    def test_expected_sop_class_mismatch(self, archive: Archive) -> None:
        with pytest.raises(SOPClassMismatch):
            archive.ingest.store_file(_pydicom_file("CT_small.dcm"), IMPORT,
                                      expected_sop_class="1.2.840.10008.5.1.4.1.1.4")
        _assert_empty(archive)

    def test_expected_sop_class_match(self, archive: Archive) -> None:
        result = archive.ingest.store_file(_pydicom_file("CT_small.dcm"), IMPORT,
                                           expected_sop_class="1.2.840.10008.5.1.4.1.1.2\x00")
        assert result.status is StoreStatus.STORED


class TestRefusals:
    @pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm",
                                      "JPEG2000.dcm", "SC_rgb_rle.dcm", "test-SR.dcm"])
    @pytest.mark.parametrize("keep", [0.5, 0.9, -2])
    @pytest.mark.parametrize("way", ["file", "bytes", "file-read-in-place"])
    def test_truncated(self, archive: Archive, tmp_path: Path, name: str, keep: float,
                       way: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """The same cuts are found whether the object is a small file (read whole and parsed
        from memory), bytes held in memory (a C-STORE that was never spilled) or a large file
        (parsed where it lies)."""
        data = _pydicom_file(name).read_bytes()
        cut = len(data) + int(keep) if keep < 0 else int(len(data) * keep)
        (tmp_path / "cut.dcm").write_bytes(data[:cut])
        if way == "file-read-in-place":
            monkeypatch.setattr(ingest_module, "_PARSE_IN_MEMORY", 0)
        with pytest.raises(InvalidObject):
            if way == "bytes":
                archive.ingest.store_bytes(data[:cut], IMPORT)
            else:
                archive.ingest.store_file(tmp_path / "cut.dcm", IMPORT)
        _assert_empty(archive)

    @pytest.mark.parametrize("way", ["file", "bytes", "file-read-in-place"])
    def test_whole_objects_are_stored_byte_for_byte_every_way(
            self, archive: Archive, tmp_path: Path, way: str,
            monkeypatch: pytest.MonkeyPatch) -> None:
        if way == "file-read-in-place":
            monkeypatch.setattr(ingest_module, "_PARSE_IN_MEMORY", 0)
        for name in ("CT_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "test-SR.dcm"):
            data = _pydicom_file(name).read_bytes()
            if way == "bytes":
                result = archive.ingest.store_bytes(data, IMPORT)
            else:
                result = archive.ingest.store_file(_pydicom_file(name), IMPORT)
            assert result.status is StoreStatus.STORED, name
            row = archive.index.get_instance(result.sop_instance_uid)
            assert row is not None and row["sha256"] == hashlib.sha256(data).hexdigest()
            with archive.blobs.open(row["storage_key"]) as fh:
                assert fh.read() == data, name
        assert list(archive.settings.tmp_dir.iterdir()) == []

    @pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
    def test_pydicom_truncated_samples(self, archive: Archive, name: str) -> None:
        with pytest.raises(InvalidObject, match="truncated"):
            archive.ingest.store_file(_pydicom_file(name), IMPORT)
        _assert_empty(archive)

    def test_compressed_fragments_under_a_native_syntax(self, archive: Archive,
                                                        tmp_path: Path) -> None:
        """A JPEG 2000 object relabelled Explicit VR Little Endian (as odil's storescu sends
        one): refused with what is wrong, not as truncated."""
        ds = pydicom.dcmread(_pydicom_file("JPEG2000.dcm"))
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
        with pytest.raises(InvalidObject, match="compressed fragments but transfer syntax"):
            archive.ingest.store_file(tmp_path / "x.dcm", IMPORT)
        _assert_empty(archive)

    @pytest.mark.parametrize("content", [b"", b"hello world", b"\0" * 132, os.urandom(4096),
                                         b"\0" * 128 + b"DICM" + b"\xff" * 20])
    def test_not_dicom(self, archive: Archive, tmp_path: Path, content: bytes) -> None:
        (tmp_path / "x.dcm").write_bytes(content)
        with pytest.raises(InvalidObject):
            archive.ingest.store_file(tmp_path / "x.dcm", IMPORT)
        _assert_empty(archive)

    @pytest.mark.parametrize("name", ["no_meta.dcm", "meta_missing_tsyntax.dcm"])
    def test_without_file_meta(self, archive: Archive, name: str) -> None:
        with pytest.raises(InvalidObject):
            archive.ingest.store_file(_pydicom_file(name), IMPORT)
        _assert_empty(archive)

    def test_dicomdir_refused(self, archive: Archive) -> None:
        dicomdir = _pydicom_file("DICOMDIR")
        with pytest.raises(InvalidObject):
            archive.ingest.store_file(dicomdir, IMPORT)
        _assert_empty(archive)

    @pytest.mark.parametrize("uid", [
        "../x", "1.2.3/../../x", "1." + "2" * 63, "", "1.2\x003", "1.2.3\n4", "/etc/passwd",
        "..", "1.2.3\\..\\x",
    ])
    @pytest.mark.parametrize("field", ["sop_uid", "study_uid", "series_uid"])
    def test_hostile_uids(self, archive: Archive, tmp_path: Path, uid: str, field: str) -> None:
        src = tmp_path / "in" / "hostile.dcm"
        src.parent.mkdir()
        make_instance(src, validate_uids=False, **{field: uid or "\x00"} if not uid else {field: uid})
        before = _files_under(tmp_path) - _files_under(tmp_path / "data")
        with pytest.raises(InvalidObject, match="UID"):
            archive.ingest.store_file(src, IMPORT)
        _assert_empty(archive)
        after = _files_under(tmp_path) - _files_under(tmp_path / "data")
        assert after == before
        assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()

    def test_missing_sop_instance_uid(self, archive: Archive, tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "a.dcm")
        del ds.SOPInstanceUID
        ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
        with pytest.raises(InvalidObject, match="SOP Instance UID is missing"):
            archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        _assert_empty(archive)


class TestCompleteButInvalid:
    """Objects that arrived whole but break the standard: the validation policy decides."""

    def _header_only(self, tmp_path: Path) -> Path:
        ds = make_instance(tmp_path / "a.dcm")
        del ds.PixelData
        ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
        return tmp_path / "a.dcm"

    def test_image_without_pixel_data_is_kept_under_warn(self, open_archive: object,
                                                          tmp_path: Path) -> None:
        archive = open_archive(validation_policy="warn")  # type: ignore[operator]
        result = archive.ingest.store_file(self._header_only(tmp_path), IMPORT)
        assert result.status is StoreStatus.STORED
        assert result.validation is not None and result.validation.errors >= 1
        assert any("PixelData" in f.path or "Pixel Data" in f.message
                   for f in result.validation.findings)

    def test_image_without_pixel_data_is_refused_under_reject(self, open_archive: object,
                                                              tmp_path: Path) -> None:
        from archivist.errors import ValidationRejected

        archive = open_archive(validation_policy="reject")  # type: ignore[operator]
        with pytest.raises(ValidationRejected):
            archive.ingest.store_file(self._header_only(tmp_path), IMPORT)
        _assert_empty(archive)

    def test_an_undecodable_element_is_named(self, archive: Archive, tmp_path: Path) -> None:
        raw = _pydicom_file("CT_small.dcm").read_bytes()
        columns = b"\x28\x00\x11\x00US\x02\x00"  # (0028,0011) US, 2 bytes
        at = raw.index(columns)
        bad = raw[:at] + columns[:6] + b"\x03\x00" + raw[at + 8:at + 10] + b"\x00" + raw[at + 10:]
        (tmp_path / "bad.dcm").write_bytes(bad)
        with pytest.raises(InvalidObject, match=r"\(0028,0011\)"):
            archive.ingest.store_file(tmp_path / "bad.dcm", IMPORT)
        _assert_empty(archive)


class TestDuplicates:
    def test_keep(self, archive: Archive, tmp_path: Path) -> None:
        sop = new_uid()
        make_instance(tmp_path / "a.dcm", sop_uid=sop, patient_name="FIRST")
        make_instance(tmp_path / "b.dcm", sop_uid=sop, patient_name="SECOND")
        first = archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        second = archive.ingest.store_file(tmp_path / "b.dcm", IMPORT)
        assert (first.status, second.status) == (StoreStatus.STORED, StoreStatus.ALREADY_STORED)
        row = archive.index.get_instance(sop)
        assert row is not None and row["sha256"] == _sha(tmp_path / "a.dcm")
        assert list(archive.blobs.keys()) == [row["storage_key"]]

    def test_reject(self, open_archive: object, tmp_path: Path) -> None:
        archive = open_archive(duplicate_policy="reject")  # type: ignore[operator]
        make_instance(tmp_path / "a.dcm", sop_uid="1.2.3.4")
        archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        with pytest.raises(DuplicateRejected):
            archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        assert archive.index.counts()["instance"] == 1
        assert len(list(archive.blobs.keys())) == 1

    def test_replace(self, open_archive: object, tmp_path: Path) -> None:
        archive = open_archive(duplicate_policy="replace")  # type: ignore[operator]
        same = {"sop_uid": "1.2.3.4", "study_uid": "1.2.3.1", "series_uid": "1.2.3.2"}
        make_instance(tmp_path / "a.dcm", instance_number=1, **same)
        make_instance(tmp_path / "b.dcm", instance_number=2, **same)
        archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        result = archive.ingest.store_file(tmp_path / "b.dcm", IMPORT)
        assert result.status is StoreStatus.REPLACED
        row = archive.index.get_instance("1.2.3.4")
        assert row is not None and row["sha256"] == _sha(tmp_path / "b.dcm")
        assert row["instance_number"] == 2
        assert list(archive.blobs.keys()) == [row["storage_key"]]
        assert archive.index.counts()["instance"] == 1

    def test_concurrent_same_sop_leaves_one_row_and_one_blob(self, archive: Archive,
                                                             tmp_path: Path) -> None:
        make_instance(tmp_path / "a.dcm", sop_uid="1.2.3.5")
        statuses: list[StoreStatus] = []
        barrier = threading.Barrier(6)

        def work() -> None:
            barrier.wait()
            statuses.append(archive.ingest.store_file(tmp_path / "a.dcm", IMPORT).status)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(s.value for s in statuses) == ["already-stored"] * 5 + ["stored"]
        assert archive.index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 1}
        assert len(list(archive.blobs.keys())) == 1


class TestIndexFailure:
    def test_failed_index_write_removes_the_blob(self, archive: Archive, tmp_path: Path) -> None:
        with sqlite3.connect(archive.settings.index_path) as conn:
            conn.execute("DROP TABLE change")
        make_instance(tmp_path / "a.dcm")
        with pytest.raises(IndexError_):
            archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        assert list(archive.blobs.keys()) == []
        assert list(archive.settings.tmp_dir.iterdir()) == []
        assert (tmp_path / "a.dcm").exists()

    def test_refusing_trigger_is_a_failure_not_a_duplicate(self, archive: Archive,
                                                           tmp_path: Path) -> None:
        with sqlite3.connect(archive.settings.index_path) as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON instance "
                         "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        make_instance(tmp_path / "a.dcm")
        with pytest.raises(IndexError_):
            archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        _assert_empty(archive)


class TestSweep:
    def test_orphans_and_partials_removed_on_open(self, open_archive: object,
                                                  tmp_path: Path) -> None:
        archive = open_archive()  # type: ignore[operator]
        make_instance(tmp_path / "a.dcm")
        kept = archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        orphan = archive.blobs.put_bytes(b"orphan")
        (archive.settings.tmp_dir / "x.part").write_bytes(b"partial")
        archive.close()
        reopened = open_archive()  # type: ignore[operator]
        row = reopened.index.get_instance(kept.sop_instance_uid)
        assert row is not None
        assert list(reopened.blobs.keys()) == [row["storage_key"]]
        assert orphan.key not in set(reopened.blobs.keys())
        assert list(reopened.settings.tmp_dir.iterdir()) == []
        # Moved aside, not deleted: an index restored from an older backup lacks newer rows.
        kept_aside = reopened.settings.data_dir / "orphans" / orphan.key
        assert kept_aside.read_bytes() == b"orphan"

    def test_a_lost_index_is_refused_and_nothing_is_moved(self, open_archive: object,
                                                          tmp_path: Path) -> None:
        from archivist.errors import IndexLost

        archive = open_archive()  # type: ignore[operator]
        make_instance(tmp_path / "a.dcm")
        archive.ingest.store_file(tmp_path / "a.dcm", IMPORT)
        keys = list(archive.blobs.keys())
        archive.close()
        for path in archive.settings.data_dir.glob("index.sqlite*"):
            path.unlink()
        with pytest.raises(IndexLost, match="is missing"):
            open_archive()  # type: ignore[operator]
        assert list(archive.blobs.keys()) == keys
        assert not (archive.settings.data_dir / "orphans").exists()
        archive.settings.index_path.write_bytes(b"")  # emptied (a failed copy)
        with pytest.raises(IndexLost, match="is empty"):
            open_archive()  # type: ignore[operator]


@pytest.mark.parametrize("name", pydicom_test_files(charsets=True), ids=lambda p: Path(p).name)
def test_the_header_decodes_as_pydicom_decodes_it(archive: Archive, name: str) -> None:
    """Ingest converts the raw elements itself (fewer look-ups than ``ds[tag]``): every value
    and VR must be what pydicom's own decode gives, whatever the transfer syntax, character
    set, private or ambiguous-VR elements, sequences and deferred values."""
    import pydicom

    try:
        ours, _ = archive.ingest.read_header(Path(name))
    except InvalidObject:
        pytest.skip("refused by ingest")
    try:
        ref = pydicom.dcmread(name, defer_size=1024)
    except Exception:  # noqa: BLE001
        pytest.skip("pydicom cannot read it")
    assert len(ours._dict) > 0
    for tag in list(ours._dict):
        mine, theirs = ours._dict[tag], ref[tag]
        assert mine.VR == theirs.VR, tag
        assert mine.value == theirs.value, tag
        assert type(mine.value) is type(theirs.value), tag
        assert mine.private_creator == theirs.private_creator, tag
