"""``archivist migrate`` at a few thousand instances, ending in a diff of zero:

- Orthanc (Debian package) holding 2,000 tiny instances, pulled with C-GET;
- DCMTK dcmqrscp holding 2,000 tiny instances, pulled with C-MOVE to our receiver (dcmqrscp
  returns no SOP Class UIDs, counts or modalities, so the proof compares UIDs only), then
  checked once more by ``archivist inventory diff`` and a second run that has nothing to do.

Marked ``slow`` (CI deselects them): each takes minutes on a shared 2-core machine, most of it
the migration (one retrieve per study, each instance stored and committed before its C-STORE
response). Run them with ``pytest -m slow tests/inventory``; each prints its times."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from legacy_peers import make_files, start_dcmqrscp, start_orthanc, store

from archivist.testing.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STUDIES, SERIES, INSTANCES = 20, 10, 10  # 2,000 instances


def _cli(*args: str, timeout: float = 800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_orthanc_two_thousand_instances_with_cli(tmp_path: Path) -> None:
    total = STUDIES * SERIES * INSTANCES
    started = time.monotonic()
    make_files(tmp_path / "files", studies=STUDIES, series=SERIES, instances=INSTANCES)
    peer = start_orthanc(tmp_path / "orthanc", dest_aet="ARCHIVIST", dest_port=1)
    try:
        store(tmp_path / "files", peer.aet, peer.port)
        fed = time.monotonic()
        r = _cli("migrate", "--from", peer.address, "--data", str(tmp_path / "data"), "--quiet")
        migrated = time.monotonic()
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{total} instances; 0 already here, {total} retrieved" in r.stdout, r.stdout
        assert "PROOF: every instance of the source is here." in r.stdout, r.stdout
    finally:
        peer.stop()
    print(f"\n{total} instances: generated and fed to Orthanc in {fed - started:.1f} s, "
          f"archivist migrate (C-GET + diff) in {migrated - fed:.1f} s")


def test_dcmqrscp_two_thousand_instances_by_move_with_cli(tmp_path: Path) -> None:
    total = STUDIES * SERIES * INSTANCES
    started = time.monotonic()
    uids = make_files(tmp_path / "files", studies=STUDIES, series=SERIES, instances=INSTANCES,
                      prefix="QR")
    assert len(set(uids)) == total
    recv = free_port()
    peer = start_dcmqrscp(tmp_path / "qr", dest_aet="ARCHIVIST", dest_port=recv)
    data = str(tmp_path / "data")
    try:
        store(tmp_path / "files", peer.aet, peer.port)
        fed = time.monotonic()
        r = _cli("migrate", "--from", peer.address, "--via", "move", "--port", str(recv),
                 "--data", data, "--quiet")
        migrated = time.monotonic()
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{STUDIES} studies, {STUDIES * SERIES} series, {total} instances; " \
               f"0 already here, {total} retrieved" in r.stdout, r.stdout
        assert "PROOF: every instance of the source is here." in r.stdout, r.stdout
        # Independent of the migration's own proof: the diff command (live C-FIND on both
        # sides) and the index itself hold every SOP Instance UID the files were made with.
        r = _cli("inventory", "diff", peer.address, "archive", "--data", data)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{total} instances (down to INSTANCE level): identical" in r.stdout, r.stdout
        r = _cli("find", "--level", "instance", "--data", data, "SOPInstanceUID=", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert {u for u in uids if u in r.stdout} == set(uids)
        diffed = time.monotonic()
        # Run again: nothing to do.
        r = _cli("migrate", "--from", peer.address, "--via", "move", "--port", str(recv),
                 "--data", data, "--quiet")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{total} already here, 0 retrieved" in r.stdout, r.stdout
    finally:
        peer.stop()
    print(f"\n{total} instances: generated and fed to dcmqrscp in {fed - started:.1f} s, "
          f"archivist migrate (C-MOVE + diff) in {migrated - fed:.1f} s, diff and find "
          f"{diffed - migrated:.1f} s, second run {time.monotonic() - diffed:.1f} s")
