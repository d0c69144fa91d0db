"""``archivist import`` on a hostile file system (QA round 4, command line).

Found by hand: a symbolic link loop in the folder ended the import with a Python traceback
(pathlib's RuntimeError) before anything was imported; a folder the user cannot read was passed
over in silence (exit 0, nothing said, its files not imported); a rejected file whose name is
not valid UTF-8 crashed the summary with UnicodeEncodeError when the output's errors are strict
(any UTF-8 locale other than C.UTF-8); a DICOMDIR whose file IDs exist only in lower case (a CD
mounted or copied on another system) imported nothing and said nothing, and a file it names
that is absent was not reported.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import traceback
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archivist.cli.main import app
from archivist.testing.datasets import make_instance, new_uid

SRC = Path(__file__).parents[2] / "src"


def archivist(*args: str, env: dict[str, str] | None = None,
              prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line in a process of its own; output errors strict, as in any UTF-8
    locale but C.UTF-8 (PYTHONIOENCODING=utf-8 sets exactly that)."""
    full = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200",
            "PYTHONIOENCODING": "utf-8", **(env or {})}
    return subprocess.run([*(prefix or []), sys.executable, "-m", "archivist.cli.main", *args],
                          check=False, capture_output=True, text=True, env=full, timeout=120)


def in_process(*args: str) -> tuple[int, str]:
    """The command line in this process (typer's runner), where the output's encoding does
    not matter: faster than a process of its own."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return 1, "".join(traceback.format_exception(result.exception))
    return result.exit_code, result.output


def stored_count(data: Path) -> int:
    with sqlite3.connect(data / "index.sqlite") as con:
        return int(con.execute("SELECT count(*) FROM instance").fetchone()[0])


def without_file_permissions() -> list[str]:
    """A prefix that makes a root process obey file permissions (as a normal user does)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions are not enforced")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


class TestHostileFolder:
    def test_symbolic_link_loops_are_skipped_not_a_traceback(self, tmp_path: Path) -> None:
        folder = tmp_path / "in"
        folder.mkdir()
        make_instance(folder / "a.dcm", study_uid=new_uid())
        (folder / "loop1").symlink_to("loop2")
        (folder / "loop2").symlink_to("loop1")
        (folder / "self").symlink_to("self")
        status, output = in_process("import", "-q", "--data", str(tmp_path / "data"),
                                    str(folder))
        assert status == 0, output
        assert "1 stored" in output and "skipped 3: symbolic link loop" in output

    def test_an_unreadable_folder_is_reported_and_fails_the_import(self, tmp_path: Path) -> None:
        prefix = without_file_permissions()
        folder = tmp_path / "in"
        closed = folder / "closed"
        closed.mkdir(parents=True)
        make_instance(folder / "a.dcm", study_uid=new_uid())
        make_instance(closed / "b.dcm", study_uid=new_uid())
        closed.chmod(0)
        try:
            result = archivist("import", "-q", "--data", str(tmp_path / "data"), str(folder),
                               prefix=prefix)
        finally:
            closed.chmod(0o755)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 stored" in result.stdout
        assert f"rejected {closed}{os.sep}: cannot read: Permission denied" in result.stdout

    def test_a_rejected_file_with_a_name_not_in_utf8_is_listed(self, tmp_path: Path) -> None:
        folder = tmp_path / "in"
        folder.mkdir()
        whole = make_instance(tmp_path / "whole.dcm", study_uid=new_uid())
        assert whole
        raw = (tmp_path / "whole.dcm").read_bytes()
        with open(os.path.join(os.fsencode(folder), b"caf\xe9-cut.dcm"), "wb") as fh:
            fh.write(raw[: len(raw) - 7])  # truncated: refused by the ingest
        result = archivist("import", "-q", "--data", str(tmp_path / "data"), str(folder))
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 1
        assert "caf\\xe9-cut.dcm: truncated" in result.stdout, result.stdout

    def test_a_file_turned_into_a_fifo_is_not_waited_for(self, tmp_path: Path) -> None:
        from archivist.cli.importer import _head_of_regular_file

        fifo = tmp_path / "was-a-file.dcm"
        os.mkfifo(fifo)
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.append(_head_of_regular_file(fifo)),
                                  daemon=True)
        reader.start()
        reader.join(30)  # at once unless it blocks (generous for a loaded machine)
        if reader.is_alive():  # unblock the thread before failing
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail("reading the head of a FIFO blocked")
        assert got == [None]


class TestDicomdir:
    @pytest.fixture
    def media(self, tmp_path: Path) -> Path:
        """A DICOMDIR written by pydicom, with two images, its folders renamed to lower case
        as a CD mounted with lower-case names shows them."""
        from pydicom import dcmread
        from pydicom.fileset import FileSet

        study, series = new_uid(), new_uid()
        fs = FileSet()
        for n in (1, 2):
            path = tmp_path / f"src{n}.dcm"
            make_instance(path, study_uid=study, series_uid=series, instance_number=n)
            fs.add(dcmread(path))
        out = tmp_path / "cd"
        fs.write(out)
        for dirpath, dirnames, _ in os.walk(out, topdown=False):
            for name in dirnames:
                os.rename(Path(dirpath) / name, Path(dirpath) / name.lower())
        for path in sorted(out.rglob("*")):
            if path.is_file() and path.name != "DICOMDIR":
                path.rename(path.with_name(path.name.lower()))
        return out

    def test_file_ids_are_found_whatever_their_case(self, media: Path, tmp_path: Path) -> None:
        status, output = in_process("import", "-q", "--data", str(tmp_path / "data"),
                                    str(media / "DICOMDIR"))
        assert status == 0, output
        assert "2 stored" in output, output
        assert stored_count(tmp_path / "data") == 2

    def test_a_file_it_names_that_is_absent_is_rejected(self, media: Path,
                                                         tmp_path: Path) -> None:
        gone = next(p for p in sorted(media.rglob("*")) if p.is_file() and p.name != "DICOMDIR")
        gone.unlink()
        status, output = in_process("import", "-q", "--data", str(tmp_path / "data"),
                                    str(media / "DICOMDIR"))
        assert status == 1, output
        assert "1 stored" in output and "not found" in output, output
