"""``archivist migrate`` at a few thousand instances: Orthanc (Debian package) as the legacy
archive holding 2,000 tiny instances, pulled with C-GET by the CLI, ending in a diff of zero.

Marked ``slow`` (CI deselects it): about 100-140 s on a shared 2-core machine, most of it the
migration (~85-120 s: one C-GET per study, each instance stored and committed before its C-STORE
response). Run it with ``pytest -m slow tests/inventory``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from legacy_peers import make_files, start_orthanc, store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STUDIES, SERIES, INSTANCES = 20, 10, 10  # 2,000 instances


def test_orthanc_two_thousand_instances_with_cli(tmp_path: Path) -> None:
    total = STUDIES * SERIES * INSTANCES
    started = time.monotonic()
    make_files(tmp_path / "files", studies=STUDIES, series=SERIES, instances=INSTANCES)
    peer = start_orthanc(tmp_path / "orthanc", dest_aet="ARCHIVIST", dest_port=1)
    try:
        store(tmp_path / "files", peer.aet, peer.port)
        fed = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "archivist.cli.main", "migrate", "--from",
                            peer.address, "--data", str(tmp_path / "data"), "--quiet"],
                           capture_output=True, text=True, timeout=800, check=False)
        migrated = time.monotonic()
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{total} instances; 0 already here, {total} retrieved" in r.stdout, r.stdout
        assert "PROOF: every instance of the source is here." in r.stdout, r.stdout
    finally:
        peer.stop()
    print(f"\n{total} instances: generated and fed to Orthanc in {fed - started:.1f} s, "
          f"archivist migrate (C-GET + diff) in {migrated - fed:.1f} s")
