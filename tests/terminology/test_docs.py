"""The command examples of docs/terminology.md, run and compared with what they print."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

DOC = Path(__file__).resolve().parents[2] / "docs" / "terminology.md"
BLOCK = re.compile(r"```\n\$ (archivist codes [^\n]+)\n(.*?)```", re.DOTALL)
EXAMPLES = BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize(("command", "expected"), EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_example_output(command: str, expected: str) -> None:
    # Run where pydicom keeps its test files, so that `check liver_1frame.dcm` finds the file.
    test_files = Path(str(get_testdata_file("test-SR.dcm", download=False))).parent
    args = shlex.split(command)[2:]
    out = subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "codes", *args],
        check=False, capture_output=True, text=True, timeout=60, cwd=test_files,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert out.stdout == expected, out.stderr
