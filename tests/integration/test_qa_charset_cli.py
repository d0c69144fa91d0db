"""``archivist find`` with names in other scripts, found wrong by black-box QA.

- On an output that is not UTF-8 (a latin-1 or cp1252 console, a file redirected on Windows,
  ``PYTHONIOENCODING``), a Japanese name made the table and ``--json`` end in a
  UnicodeEncodeError traceback.
- A key the locale cannot decode (``PatientName=M\\xfcller*`` typed in Latin-1 under a UTF-8
  locale) ended in a traceback from the database driver ("surrogates not allowed").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom.data
import pytest

AMBIENT = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8")}


def archivist(*args: str | bytes, encoding: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = dict(AMBIENT)
    if encoding:
        env["PYTHONIOENCODING"] = encoding
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args], env=env,
                          check=False, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("qa_charset_cli") / "data"
    files = [pydicom.data.get_charset_files(n)[0] for n in ("chrH31.dcm", "chrGerm.dcm")]
    run = archivist("import", "--data", str(data), *files)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    return data


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_table_on_an_output_that_is_not_utf8(data: Path, encoding: str) -> None:
    run = archivist("find", "--data", str(data), "PatientName=Yamada*", encoding=encoding)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert b"Traceback" not in run.stderr
    assert b"1 match" in run.stdout


@pytest.mark.parametrize("encoding", ["latin-1", "ascii", "utf-8"])
def test_json_on_any_output_is_the_same_json(data: Path, encoding: str) -> None:
    run = archivist("find", "--data", str(data), "PatientName=*", "--json", encoding=encoding)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    names = sorted(d["00100010"]["Value"][0].get("Ideographic", d["00100010"]["Value"][0]
                                                 ["Alphabetic"])
                   for d in json.loads(run.stdout.decode(encoding)))
    assert names == ["Äneas^Rüdiger", "山田^太郎"]


def test_a_key_the_locale_cannot_decode_is_an_error(data: Path) -> None:
    run = archivist("find", "--data", str(data), b"PatientName=M\xfcller*")
    assert run.returncode == 2
    assert b"Traceback" not in run.stderr
    assert b"not valid text" in run.stderr


def test_non_ascii_keys_match(data: Path) -> None:
    run = archivist("find", "--data", str(data), "PatientName=äneas*", "--json",
                    encoding="utf-8")
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    [found] = json.loads(run.stdout)
    assert found["00100010"]["Value"] == [{"Alphabetic": "Äneas^Rüdiger"}]
