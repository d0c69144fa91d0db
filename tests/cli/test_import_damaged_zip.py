"""`archivist import` of a damaged .zip (QA s22): a truncated archive was counted as "skipped
1: not DICOM", unnamed, exit 0, though none of its objects was imported; a ZIP inside a ZIP
likewise. Each is now listed as rejected with its reason, and the command exits 1."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from pydicom.data import get_testdata_file


def test_damaged_and_nested_zips_are_named(tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.write(get_testdata_file("CT_small.dcm"), "a.dcm")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(good.read_bytes()[:2000])
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(good, "inner.zip")
    done = subprocess.run([sys.executable, "-m", "archivist.cli.main", "import", "--data",
                           str(tmp_path / "data"), str(broken), str(outer), str(good)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 stored" in done.stdout
    assert f"rejected {broken}: a damaged or truncated ZIP archive" in done.stdout
    assert f"rejected {outer}!inner.zip: a ZIP archive inside a ZIP archive" in done.stdout
    assert "skipped 1: not DICOM" not in done.stdout
