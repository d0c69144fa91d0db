"""What the system refuses a command (QA s22: `inventory export` to a folder that does not
exist or to a directory, `validate --html` likewise, `migrate --port` on a port in use) is one
line on standard error and exit status 2, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args], check=False,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("oserr") / "data"
    done = _cli("import", "--data", str(folder), str(get_testdata_file("CT_small.dcm")))
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


@pytest.mark.parametrize("args,reason", [
    (("inventory", "export", "/nonexistent-archivist/x.json", "--fresh"),
     "No such file or directory: /nonexistent-archivist/x.json"),
    (("inventory", "export", "/tmp", "--fresh"), "Is a directory: /tmp"),
])
def test_inventory_export(data: Path, args: tuple[str, ...], reason: str) -> None:
    done = _cli(*args, "--data", str(data))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {reason}", done.stderr
    assert "Traceback" not in done.stderr


def test_validate_html() -> None:
    done = _cli("validate", "--html", "/nonexistent-archivist/x.html",
                str(get_testdata_file("CT_small.dcm")))
    assert done.returncode == 2
    assert "error: No such file or directory: /nonexistent-archivist/x.html" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("option", [("--rate", "-1"), ("--attempts", "0")])
def test_migrate_refuses_a_negative_rate_and_no_attempts(option: tuple[str, str]) -> None:
    # QA s22: both were accepted (a negative rate, no retrieve attempt at all)
    done = _cli("migrate", "--from", "X@127.0.0.1:1", *option)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Invalid value for '{option[0]}'" in done.stderr
