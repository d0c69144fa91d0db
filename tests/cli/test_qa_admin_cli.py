"""Administration commands against a data directory (QA, third-party walk through the README):
``archivist delete``, ``purge-tombstones``, ``reindex --codes`` and ``validate --stored``.

Found by hand: a mistyped ``--data`` made delete and purge create an empty archive there
(and report "no such study"); ``purge-tombstones --older-than -1`` purged every tombstone; an
index that refuses the write (locked by another program past the busy timeout, failing) gave a
Python traceback and exit status 1, which ``delete`` documents as "nothing by those UIDs";
``validate --stored --html FILE`` wrote no file. The index failure is produced here by the
database itself (a trigger that aborts the write), as SQLite reports a lock or an I/O error.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from archivist.archive.archive import Archive
from archivist.archive.delete import Deletion
from archivist.archive.ingest import Origin
from archivist.config import Settings, load_settings
from archivist.errors import QueryError
from archivist.index.removal import count
from archivist.testing.datasets import code_item, make_instance, new_uid, pydicom_test_file

SRC = Path(__file__).parents[2] / "src"


def settings_of(data: Path) -> Settings:
    return load_settings(env={}, overrides={"data_dir": data})


def archivist(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own (as an administrator runs it)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args], check=False,
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, list[str], str, str]:
    """A data directory holding one study of one series and three instances, one of them
    without Pixel Spacing (a validation error kept at ingest), with a Procedure Code."""
    data = tmp_path / "data"
    study, series = new_uid(), new_uid()
    archive = Archive.open(settings_of(data))
    sops = []
    try:
        for n in range(1, 4):
            path = tmp_path / f"{n}.dcm"
            ds = make_instance(path, study_uid=study, series_uid=series, instance_number=n,
                               extra={"ProcedureCodeSequence": [
                                   code_item("10200004", "SCT", "CT chest")]})
            archive.ingest.store_file(path, Origin("test"))
            sops.append(str(ds.SOPInstanceUID))
    finally:
        archive.close()
    return data, sops, study, series


def refuse_writes(data: Path, table: str, event: str) -> None:
    """Make the index abort every `event` (INSERT, DELETE) on `table`, as a failing database
    would; SQLite reports it to the writer as it reports a lock or an I/O error."""
    with sqlite3.connect(data / "index.sqlite") as con:
        con.execute(f"CREATE TRIGGER qa_refuse_{table}_{event.lower()} BEFORE {event} ON "
                    f"{table} BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")


class TestNoArchiveAtTheDataDirectory:
    @pytest.mark.parametrize("command", [
        ["delete", "--study", "1.2.3"],
        ["purge-tombstones"],
    ])
    def test_a_mistyped_data_directory_is_an_error_and_stays_absent(
            self, tmp_path: Path, command: list[str]) -> None:
        missing = tmp_path / "typo"
        result = archivist(*command, "--data", str(missing))
        assert result.returncode == 2, result.stderr
        assert "no archive at" in result.stderr
        assert not missing.exists()


class TestPurgeAge:
    def test_a_negative_age_is_refused_and_purges_nothing(self, stored) -> None:  # type: ignore[no-untyped-def]
        data, sops, study, series = stored
        assert archivist("delete", "--data", str(data), "--study", study, "--series", series,
                         "--instance", sops[0]).returncode == 0
        result = archivist("purge-tombstones", "--data", str(data), "--older-than", "-1")
        assert result.returncode == 2
        archive = Archive.open(settings_of(data))
        try:
            assert count(archive.index) == 1
            with pytest.raises(QueryError):
                Deletion(archive.index, archive.blobs).purge(-0.5)
            assert count(archive.index) == 1
            assert Deletion(archive.index, archive.blobs).purge(0) == 1
        finally:
            archive.close()


class TestIndexRefusingTheWrite:
    def test_delete_exits_3_with_a_message_and_changes_nothing(self, stored) -> None:  # type: ignore[no-untyped-def]
        data, sops, study, _ = stored
        refuse_writes(data, "tombstone", "INSERT")
        result = archivist("delete", "--data", str(data), "--study", study)
        assert result.returncode == 3, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert "index could not be written" in result.stderr
        assert "nothing was deleted" in result.stderr
        archive = Archive.open(settings_of(data))
        try:
            assert all(archive.index.get_instance(sop) is not None for sop in sops)
            assert sorted(archive.index.storage_keys()) == sorted(archive.blobs.keys())
        finally:
            archive.close()

    def test_purge_exits_3_with_a_message(self, stored) -> None:  # type: ignore[no-untyped-def]
        data, sops, study, series = stored
        assert archivist("delete", "--data", str(data), "--study", study, "--series", series,
                         "--instance", sops[0]).returncode == 0
        refuse_writes(data, "tombstone", "DELETE")
        result = archivist("purge-tombstones", "--data", str(data))
        assert result.returncode == 3, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert "nothing was purged" in result.stderr

    def test_reindex_exits_3_with_a_message(self, stored) -> None:  # type: ignore[no-untyped-def]
        data, _, _, _ = stored
        refuse_writes(data, "instance_code", "DELETE")
        result = archivist("reindex", "--codes", "--data", str(data))
        assert result.returncode == 3, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert "index could not be written" in result.stderr


class TestValidateStoredHtml:
    def test_the_html_report_of_stored_findings_is_written(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        path = tmp_path / "bad.dcm"
        ds = make_instance(path)
        del ds.Rows  # a Type 1 attribute of Image Pixel: an error kept at ingest
        ds.save_as(path, enforce_file_format=True)
        archive = Archive.open(settings_of(data))
        try:
            archive.ingest.store_file(path, Origin("test"))
        finally:
            archive.close()
        report = tmp_path / "report.html"
        result = archivist("validate", "--data", str(data), "--stored",
                           str(ds.SOPInstanceUID), "--html", str(report))
        assert result.returncode == 1, result.stderr
        assert report.is_file(), result.stdout
        html = report.read_text(encoding="utf-8")
        assert str(ds.SOPInstanceUID) in html and "iod.type1-missing" in html
        # With --json the report is written too, and stdout stays JSON only.
        report.unlink()
        result = archivist("validate", "--data", str(data), "--stored",
                           str(ds.SOPInstanceUID), "--html", str(report), "--json")
        assert result.returncode == 1 and report.is_file()
        assert result.stdout.lstrip().startswith("{")


def test_a_stored_instance_without_findings_names_its_iod(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = tmp_path / "ok.dcm"
    source = pydicom_test_file("CT_small.dcm")
    assert source is not None
    path.write_bytes(Path(source).read_bytes())
    archive = Archive.open(settings_of(data))
    try:
        stored = archive.ingest.store_file(path, Origin("test"))
    finally:
        archive.close()
    result = archivist("validate", "--data", str(data), "--stored", stored.sop_instance_uid)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CT Image" in result.stdout and "unknown IOD" not in result.stdout
