"""``archivist codes check`` and ``archivist inventory`` on hostile input (QA round 4).

Found by hand: ``codes check`` given a FIFO waited for a writer for ever; a folder holding a
file or a subfolder the user cannot read was reported as clean (the file counted as "not
DICOM", the subfolder passed over), exit 0; a file name not valid UTF-8 crashed the output
with UnicodeEncodeError (strict output errors, as in any UTF-8 locale but C.UTF-8).
``inventory list`` with a mistyped ``--data`` created an empty archive there and printed
nothing (exit 0); with the index file emptied it deleted every stored object (the start-up
sweep of the archive it opened).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.cli.main import app
from archivist.config import load_settings
from archivist.testing.datasets import make_instance, new_uid

SRC = Path(__file__).parents[2] / "src"


def archivist(*args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line in a process of its own, output errors strict."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([*(prefix or []), sys.executable, "-m", "archivist.cli.main", *args],
                          check=False, capture_output=True, text=True, env=env, timeout=60)


def without_file_permissions() -> list[str]:
    """A prefix that makes a root process obey file permissions (as a normal user does)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions are not enforced")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


class TestCodesCheck:
    def test_a_fifo_is_refused_not_waited_for(self, tmp_path: Path) -> None:
        fifo = tmp_path / "pipe.dcm"
        os.mkfifo(fifo)
        try:
            result = archivist("codes", "check", str(fifo))
        except subprocess.TimeoutExpired:
            pytest.fail("codes check waited on the FIFO")
        assert result.returncode == 2 and "not a regular file" in result.stderr

    def test_a_broken_dicom_file_in_a_folder_is_an_error_not_skipped(self,
                                                                      tmp_path: Path) -> None:
        """A truncated DICOM file (preamble and DICM present) is reported with exit 2, as when
        named alone; a file that is not DICOM at all is still skipped and counted."""
        folder = tmp_path / "in"
        folder.mkdir()
        make_instance(folder / "ok.dcm", study_uid=new_uid())
        whole = (folder / "ok.dcm").read_bytes()
        (folder / "cut.dcm").write_bytes(whole[: len(whole) // 2])
        (folder / "notes.txt").write_text("not DICOM")
        result = archivist("codes", "check", str(folder))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "cut.dcm: cannot read" in result.stderr
        assert "1 file(s) in the folders given were not DICOM" in result.stdout
        assert "ok.dcm: 0 finding(s)" in result.stdout

    def test_unreadable_content_of_a_folder_is_an_error(self, tmp_path: Path) -> None:
        prefix = without_file_permissions()
        folder = tmp_path / "in"
        closed = folder / "closed"
        closed.mkdir(parents=True)
        make_instance(folder / "ok.dcm", study_uid=new_uid())
        make_instance(folder / "locked.dcm", study_uid=new_uid())
        make_instance(closed / "hidden.dcm", study_uid=new_uid())
        (folder / "locked.dcm").chmod(0)
        closed.chmod(0)
        try:
            result = archivist("codes", "check", str(folder), prefix=prefix)
        finally:
            closed.chmod(0o755)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"{closed}: cannot read the folder" in result.stderr
        assert "locked.dcm: cannot read" in result.stderr
        assert "ok.dcm: 0 finding(s)" in result.stdout

    def test_a_name_not_in_utf8_is_printed_escaped(self, tmp_path: Path) -> None:
        folder = tmp_path / "in"
        folder.mkdir()
        make_instance(tmp_path / "x.dcm", study_uid=new_uid())
        shutil.copy(tmp_path / "x.dcm", os.path.join(os.fsencode(folder), b"caf\xe9.dcm"))
        result = archivist("codes", "check", str(folder))
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 0 and "caf\\xe9.dcm: 0 finding(s)" in result.stdout


class TestInventoryDataDirectory:
    def test_a_mistyped_data_directory_is_an_error_and_stays_absent(self,
                                                                   tmp_path: Path) -> None:
        result = CliRunner().invoke(app, ["inventory", "list", "--data", str(tmp_path / "typo")])
        assert result.exit_code == 2 and "no archive at" in result.output
        assert not (tmp_path / "typo").exists()

    def test_an_emptied_index_does_not_cost_the_stored_objects(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
        try:
            make_instance(tmp_path / "a.dcm", study_uid=new_uid())
            archive.ingest.store_file(tmp_path / "a.dcm", Origin("test"))
        finally:
            archive.close()
        for path in data.glob("index.sqlite*"):
            path.unlink()
        (data / "index.sqlite").write_bytes(b"")
        result = CliRunner().invoke(app, ["inventory", "list", "--data", str(data)])
        assert result.exit_code == 2 and "holds stored objects" in result.output
        assert [p for p in (data / "blobs").rglob("*") if p.is_file()]
