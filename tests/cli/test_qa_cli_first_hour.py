"""What a new user meets first on the command line (found by QA): help texts that name files
the repository has, no traceback when the output is piped into ``head``, and ``inventory diff``
exiting 2 with a readable message (not 1, "they differ") when an input cannot be read."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from archivist.archive.archive import Archive
from archivist.cli.main import app
from archivist.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


def _archivist(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args], cwd=cwd, check=False,
                          capture_output=True, text=True, timeout=120, env={
                              "PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"})


def _commands() -> list[list[str]]:
    """Every command and subcommand, as argument lists."""
    found: list[list[str]] = []

    def walk(cmd: object, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            found.append(path)
            return
        for name, sub in subs.items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_every_command_is_listed() -> None:
    names = {" ".join(c) for c in _commands()}
    assert {"serve", "import", "find", "inventory diff", "codes search"} <= names


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c))
def test_help_names_only_files_that_exist(command: list[str]) -> None:
    result = _archivist(*command, "--help")
    assert result.returncode == 0, result.stderr
    for path in re.findall(r"\b(?:docs|tools|bench)/[\w./-]+\.\w+", result.stdout):
        assert (ROOT / path).exists(), f"`archivist {' '.join(command)} --help` names {path}"
    if "README" in result.stdout and "Configuration section" in result.stdout:
        assert "\n## Configuration\n" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("args", [["codes", "cid", "4"], ["codes", "schemes"],
                                  ["codes", "search", "liver"], ["--help"]])
def test_closed_pipe_is_not_a_traceback(args: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "archivist.cli.main", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


class TestInventoryDiffInputs:
    @pytest.fixture
    def data(self, tmp_path: Path) -> Path:
        return tmp_path / "data"

    def _diff(self, a: str, data: Path) -> subprocess.CompletedProcess[str]:
        return _archivist("inventory", "diff", a, "archive", "--data", str(data))

    def test_a_missing_file(self, tmp_path: Path, data: Path) -> None:
        result = self._diff(str(tmp_path / "inventory.json"), data)
        assert result.returncode == 2, result.stderr
        assert "no such file or folder" in result.stderr and "Traceback" not in result.stderr

    def test_a_missing_dicom_file_is_not_called_not_dicom(self, tmp_path: Path,
                                                          data: Path) -> None:
        result = self._diff(str(tmp_path / "inventory.dcm"), data)
        assert result.returncode == 2
        assert "no such file or folder" in result.stderr and "not a DICOM" not in result.stderr

    def test_json_that_does_not_parse(self, tmp_path: Path, data: Path) -> None:
        bad = tmp_path / "inventory.json"
        bad.write_text('{"format": "archivist-inventory/1", ')
        result = self._diff(str(bad), data)
        assert result.returncode == 2, result.stderr
        assert "not readable JSON" in result.stderr and "Traceback" not in result.stderr

    def test_an_empty_folder_is_not_an_empty_inventory(self, tmp_path: Path,
                                                       data: Path) -> None:
        empty = tmp_path / "inventories"
        empty.mkdir()
        result = self._diff(str(empty), data)
        assert result.returncode == 2, result.stdout
        assert "empty folder" in result.stderr

    def test_a_real_export_still_compares(self, tmp_path: Path, data: Path) -> None:
        out = tmp_path / "inventory.json"
        Archive.open(load_settings(env={}, overrides={"data_dir": data})).close()
        made = _archivist("inventory", "export", "--fresh", str(out), "--data", str(data))
        assert made.returncode == 0, made.stderr
        result = self._diff(str(out), data)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "identical" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["inventory", "diff", "ARCHIVIST@127.0.0.1:9", "archive", "--level", "bogus"],
     "level must be study, series or instance"),
    (["inventory", "diff", "ARCHIVIST@127.0.0.1:9", "archive", "--method", "bogus"],
     "method must be auto, rq or find"),
    (["migrate", "--from", "ARCHIVIST@127.0.0.1:9", "--query", "bogus", "-q"],
     "must be auto, rq or find"),
])
def test_bad_option_values_are_usage_errors(tmp_path: Path, args: list[str],
                                            message: str) -> None:
    # Checked before any association is tried (nothing listens on port 9).
    result = _archivist(*args, "--data", str(tmp_path / "data"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
