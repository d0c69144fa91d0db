"""The series metadata warmer yields to stores that arrive while it is building, and waits while
DICOM associations are open."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.config import load_settings
from archivist.dimse.acceptor import AssociationCount
from archivist.testing.datasets import make_instance
from archivist.web.dicomweb import wado


def _store(archive: Archive, path: Path, series: str) -> None:
    make_instance(path, series_uid=series)
    archive.ingest.store_file(path, Origin("import"))


def test_warmer_stops_building_when_stores_resume(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(env={}, overrides={"data_dir": tmp_path / "data"})
    archive = Archive.open(settings)
    state = SimpleNamespace(archive=archive, last_request=0.0, health=None)
    quiet = 0.6
    series = [f"1.2.826.0.1.3680043.8.498.{n}" for n in range(1, 6)]

    calls: list[tuple[float, str]] = []
    resumed: list[float] = []
    done = threading.Event()

    def warm(self: wado.MetadataCache, study: str, series_uid: str) -> None:
        calls.append((time.monotonic(), series_uid))
        if len(calls) == 1:
            # An object arrives while the warmer builds its first series.
            _store(archive, tmp_path / "late.dcm", "1.2.826.0.1.3680043.8.498.99")
            resumed.append(time.monotonic())
        if len(calls) == len(series) + 1:
            done.set()

    monkeypatch.setattr(wado.MetadataCache, "warm", warm)
    stop = wado.start_warmer(state, quiet=quiet, poll=0.05, patience=60)
    time.sleep(0.3)  # it has read where the change log ends
    for n, uid in enumerate(series):
        _store(archive, tmp_path / f"s{n}.dcm", uid)
    try:
        assert done.wait(20), f"the warmer built {len(calls)} of {len(series) + 1} series"
    finally:
        stop.set()
        archive.close()
    # After the store it built nothing more until the archive had been quiet again.
    assert calls[1][0] - resumed[0] >= quiet, [round(t - resumed[0], 3) for t, _ in calls]
    assert {s for _, s in calls} == {*series, "1.2.826.0.1.3680043.8.498.99"}


def test_warmer_waits_for_dicom_quiet(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(env={}, overrides={"data_dir": tmp_path / "data"})
    archive = Archive.open(settings)
    cells = multiprocessing.Array("i", 4, lock=False)
    stamps = multiprocessing.Array("d", 2, lock=False)
    worker0 = AssociationCount(cells, 0, 2, stamps=stamps)  # the warmer's worker
    worker1 = AssociationCount(cells, 1, 2, stamps=stamps)
    health = SimpleNamespace(stopping=False, dimse_quiet_for=worker0.quiet_for)
    state = SimpleNamespace(archive=archive, last_request=0.0, health=health)
    built: list[float] = []
    monkeypatch.setattr(wado.MetadataCache, "warm",
                        lambda self, study, series: built.append(time.monotonic()))
    stop = wado.start_warmer(state, quiet=0.2, poll=0.05, patience=60)
    time.sleep(0.3)
    _store(archive, tmp_path / "a.dcm", "1.2.826.0.1.3680043.8.498.7")
    try:
        # Associations one after the other on the OTHER worker, with gaps between them, for
        # far longer than `quiet`: nothing is built.
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            worker1.set(1)
            time.sleep(0.03)
            worker1.set(0)
            time.sleep(0.03)
        assert built == []
        last = stamps[1]  # when the last association ended
        deadline = time.monotonic() + 10
        while not built and time.monotonic() < deadline:
            time.sleep(0.05)
        assert built and built[0] - last >= 0.5  # half a second of DICOM quiet first
    finally:
        stop.set()
        archive.close()
