"""`archivist inventory export --inventory UID` with the UID of a leaf of a split inventory
(QA s22) exported the whole inventory without a word; it is a usage error naming what to give
(the root's SOP Instance UID), exit 2. The root exports root and leaves as before."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from archivist.testing.datasets import make_instance


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args], check=False,
                          capture_output=True, text=True, timeout=120)


def test_a_leaf_uid_is_refused_the_root_exports(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for n in range(3):
        make_instance(tmp_path / "in" / f"{n}.dcm")
    data = str(tmp_path / "data")
    assert _cli("import", "--data", data, str(tmp_path / "in")).returncode == 0
    done = _cli("inventory", "create", "--data", data, "--studies-per-instance", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = _cli("inventory", "list", "--data", data, "--json")
    assert listed.returncode == 0, listed.stderr
    (root,) = json.loads(listed.stdout)
    root_uid = root["SOPInstanceUID"]
    out = tmp_path / "inv.dcm"
    done = _cli("inventory", "export", str(out), "--inventory", root_uid, "--data", data)
    assert done.returncode == 0, done.stderr
    leaves = sorted(tmp_path.glob("inv-*.dcm"))
    assert len(leaves) == 3
    import pydicom

    leaf_uid = str(pydicom.dcmread(leaves[0]).SOPInstanceUID)
    done = _cli("inventory", "export", str(tmp_path / "x.json"), "--inventory", leaf_uid,
                "--data", data)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not its root" in done.stderr and "Traceback" not in done.stderr
