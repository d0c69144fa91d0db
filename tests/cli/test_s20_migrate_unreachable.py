"""`archivist migrate` from an address where nothing listens: exit 2 with the reason, and the
data directory is not created (it was, empty, before the source was found to be down)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from archivist.testing.server import free_port


def test_a_source_that_is_down_creates_nothing(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "new-archive"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVIST_")}
    run = subprocess.run([sys.executable, "-m", "archivist.cli.main", "migrate", "--from",
                          f"ORTHANC@127.0.0.1:{port}", "--data", str(data), "--quiet"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "could not be reached" in run.stderr and f"127.0.0.1:{port}" in run.stderr
    assert not data.exists()
