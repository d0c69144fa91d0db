"""The archive's own inventories are stored whatever the validation policy: they copy what is
stored, and an object stored under `warn` (or imported) may hold invalid values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from archivist.testing.datasets import make_instance


def _archivist(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **env})


def test_inventory_of_a_stored_invalid_object_under_reject(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bad = tmp_path / "bad.dcm"
    make_instance(bad, extra={"PatientBirthDate": "ZZ190102"})
    r = _archivist("import", "--data", str(data), "-q", str(bad))
    assert "1 stored" in r.stdout, r.stdout + r.stderr
    made = _archivist("inventory", "create", "--data", str(data),
                      ARCHIVIST_VALIDATION_POLICY="reject")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "1 studies" in made.stdout, made.stdout
