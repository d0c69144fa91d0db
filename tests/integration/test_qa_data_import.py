"""`archivist import` of a DICOMDIR that is not named DICOMDIR: recognised by its File Meta
(Media Storage Directory Storage), its records followed, never refused as an object."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from archivist.testing.datasets import pydicom_test_file


def _archivist(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """pydicom's DICOMDIR test set, copied: a DICOMDIR and the files its records name."""
    dicomdir = pydicom_test_file("dicomdirtests/DICOMDIR")
    assert dicomdir is not None
    root = tmp_path / "cd"
    shutil.copytree(Path(dicomdir).parent, root)
    return root


def _referenced(dicomdir: Path) -> int:
    ds = pydicom.dcmread(dicomdir)
    return sum(1 for r in ds.DirectoryRecordSequence if r.get("ReferencedFileID"))


@pytest.mark.parametrize("name", ["DICOMDIR-bigEnd", "DICOMDIR-implicit", "renamed.dcm"])
def test_dicomdir_by_content(media: Path, tmp_path: Path, name: str) -> None:
    given = media / name
    if not given.exists():  # a DICOMDIR copied under a name of its own
        shutil.copy(media / "DICOMDIR", given)
    expected = _referenced(given)
    assert expected > 0
    r = _archivist("import", "--data", str(tmp_path / "data"), "-q", str(given))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Imported: {expected} stored" in r.stdout, r.stdout
    assert "rejected" not in r.stdout.split("\n", 1)[1], r.stdout


def test_folder_with_dicomdir_copies_rejects_nothing(media: Path, tmp_path: Path) -> None:
    r = _archivist("import", "--data", str(tmp_path / "data"), "-q", str(media))
    assert r.returncode == 0, r.stdout + r.stderr
    assert ", 0 rejected," in r.stdout, r.stdout  # the DICOMDIR-* copies are not objects
