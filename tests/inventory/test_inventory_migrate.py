# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""``archivist migrate`` and ``archivist inventory diff`` against real legacy archives: DCMTK
dcmqrscp (C-MOVE) and Orthanc (C-GET, 300 instances), a source that drops the
association mid-study, and a migration killed part-way and run again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from inventory_helpers import open_archive  # noqa: F401
from legacy_peers import (
    DroppingProxy,
    make_files,
    start_dcmqrscp,
    start_orthanc,
    store,
)

from archivist.inventory.migrate import Migration
from archivist.inventory.remote import Remote
from archivist.inventory.sources import of_archive, of_remote
from archivist.testing.server import free_port

pytestmark = pytest.mark.timeout(600)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args],
                          check=False, capture_output=True, text=True, timeout=timeout)


def test_dcmqrscp_by_move_with_cli(tmp_path: Path) -> None:
    uids = make_files(tmp_path / "files", studies=6, series=2, instances=10)
    recv = free_port()
    peer = start_dcmqrscp(tmp_path / "qr", dest_aet="ARCHIVIST", dest_port=recv)
    try:
        store(tmp_path / "files", peer.aet, peer.port)
        data = str(tmp_path / "data")
        r = _cli("migrate", "--from", peer.address, "--via", "move", "--port", str(recv),
                 "--data", data)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "120 instances; 0 already here, 120 retrieved" in r.stdout
        assert "PROOF: every instance of the source is here." in r.stdout
        # An independent check: the diff command, live C-FIND against our index (dcmqrscp
        # returns no counts or modalities: what one side does not know is not compared).
        r = _cli("inventory", "diff", peer.address, "archive", "--data", data)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "120 instances (down to INSTANCE level): identical" in r.stdout
        # Run again: nothing to do.
        r = _cli("migrate", "--from", peer.address, "--via", "move", "--port", str(recv),
                 "--data", data, "--quiet")
        assert r.returncode == 0 and "120 already here, 0 retrieved" in r.stdout
    finally:
        peer.stop()
    assert len(uids) == 120


def test_orthanc_many_instances_by_get(open_archive, tmp_path: Path) -> None:
    make_files(tmp_path / "files", studies=12, series=5, instances=5)
    peer = start_orthanc(tmp_path / "orthanc", dest_aet="ARCHIVIST", dest_port=1)
    archive = open_archive(tmp_path / "data")
    try:
        store(tmp_path / "files", peer.aet, peer.port)
        started = time.monotonic()
        seen: list[tuple[str, int, int]] = []
        report = Migration(archive, Remote.parse(peer.address), method="get",
                           progress=lambda *a: seen.append(a)).run()
        elapsed = time.monotonic() - started
        print(f"\nOrthanc -> Archivist, 300 instances by C-GET: {elapsed:.1f} s "
              f"({report.requests} requests)")
        assert report.source_counts == {"studies": 12, "series": 60, "instances": 300}
        assert report.complete and report.proof is not None and report.proof.identical
        assert report.retrieved == 300 and report.retries == 0
        assert archive.index.counts()["instance"] == 300
        assert seen[-2][0] == "retrieve" and seen[-2][1:] == (300, 300)
        # Orthanc also reports counts and modalities: the diff compared them too.
        source = of_remote(Remote.parse(peer.address), "SERIES")
        assert all(st.number_of_instances == 25 for st in source.studies.values())
    finally:
        peer.stop()


@pytest.mark.slow  # CI time (20 min); covered in a full run: pytest -m slow
def test_source_drops_the_association_mid_study(open_archive, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # As in `archivist serve`: pynetdicom streams received data sets to files (the C-STORE
    # handler must take them from there, not from memory).
    import pynetdicom._config

    monkeypatch.setattr(pynetdicom._config, "STORE_RECV_CHUNKED_DATASET", True)
    make_files(tmp_path / "files", studies=4, series=2, instances=10)
    peer = start_orthanc(tmp_path / "orthanc", dest_aet="ARCHIVIST", dest_port=1)
    proxy = DroppingProxy(peer.port, after=25_000, drops=2)
    archive = open_archive(tmp_path / "data")
    try:
        store(tmp_path / "files", peer.aet, peer.port)
        report = Migration(archive, Remote("ORTHANC", "127.0.0.1", proxy.port, dimse_timeout=10),
                           method="get", attempts=4).run()
        assert proxy.dropped == 2
        assert report.retries >= 1
        assert report.complete, [d.line() for d in report.proof.differences]  # type: ignore[union-attr]
        assert archive.index.counts()["instance"] == 80
    finally:
        proxy.close()
        peer.stop()


def _stored(data: Path) -> int:
    index = data / "index.sqlite"
    if not index.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM instance").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow  # CI time (20 min); covered in a full run: pytest -m slow
def test_killed_and_resumed(tmp_path: Path) -> None:
    make_files(tmp_path / "files", studies=4, series=2, instances=10)
    peer = start_orthanc(tmp_path / "orthanc", dest_aet="ARCHIVIST", dest_port=1)
    data = str(tmp_path / "data")
    try:
        store(tmp_path / "files", peer.aet, peer.port)
        proc = subprocess.Popen([sys.executable, "-m", "archivist.cli.main", "migrate", "--from",
                                 peer.address, "--rate", "15", "--data", data, "--quiet"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            # At 15 instances/s the 80 instances take about 5 s: kill it part-way.
            deadline = time.monotonic() + 60
            while _stored(Path(data)) < 20 and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()[0]
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(10)
        r = _cli("migrate", "--from", peer.address, "--data", data, "--quiet")
        assert r.returncode == 0, r.stdout + r.stderr
        line = r.stdout.splitlines()[0]
        already = int(line.split("; ")[1].split(" already")[0])
        assert 0 < already < 80, line
        assert "PROOF: every instance of the source is here." in r.stdout
    finally:
        peer.stop()


def test_diff_of_two_live_archives_finds_what_is_missing(open_archive, tmp_path: Path) -> None:
    make_files(tmp_path / "files", studies=3, series=1, instances=4)
    peer = start_orthanc(tmp_path / "orthanc", dest_aet="ARCHIVIST", dest_port=1)
    archive = open_archive(tmp_path / "data")
    try:
        store(tmp_path / "files", peer.aet, peer.port)
        Migration(archive, Remote.parse(peer.address), method="get").run()
        # Lose one instance on the source side's copy of the inventory: the diff must say so.
        source = of_remote(Remote.parse(peer.address), "INSTANCE")
        here = of_archive(archive)
        study = next(iter(here.studies.values()))
        series = next(iter(study.series.values()))
        lost = next(iter(series.instances))
        del series.instances[lost]
        from archivist.inventory.diff import diff

        result = diff(source, here)
        assert [(d.kind, d.level, d.uid) for d in result.differences] == [
            ("missing", "INSTANCE", lost)]
    finally:
        peer.stop()
