"""`archivist import` of Part 10 files written without the 128-byte preamble and DICM (the File
Meta group first, as pydicom writes datasets built in memory): stored with a preamble added,
as STOW-RS stores such parts; from a folder and from a zip."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pydicom

from archivist.testing.datasets import make_instance, new_uid


def _archivist(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_files_without_preamble_are_imported(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    study = new_uid()
    bare = []
    for n in range(3):
        whole = tmp_path / f"whole{n}.dcm"
        make_instance(whole, study_uid=study, instance_number=n + 1)
        data = whole.read_bytes()
        assert data[128:132] == b"DICM"
        bare.append(data[132:])
    (src / "a.dcm").write_bytes(bare[0])
    (src / "b").write_bytes(bare[1])
    with zipfile.ZipFile(src / "c.zip", "w") as zf:
        zf.writestr("inner.dcm", bare[2])
    (src / "notes.txt").write_bytes(b"\x02\x00 not a DICOM file at all, only two bytes alike")

    r = _archivist("import", "--data", str(tmp_path / "data"), "-q", str(src))

    assert r.returncode == 0, r.stdout + r.stderr
    assert "Imported: 3 stored" in r.stdout, r.stdout
    assert "1 skipped" in r.stdout, r.stdout
    found = _archivist("find", "--data", str(tmp_path / "data"), "--level", "image", "--json",
                       f"StudyInstanceUID={study}", "SOPInstanceUID=")
    assert found.returncode == 0, found.stderr
    assert found.stdout.count('"00080018"') == 3
    assert (src / "a.dcm").read_bytes() == bare[0]  # the given file is left as it was
    assert pydicom.dcmread(src / "a.dcm", force=True).StudyInstanceUID == study
