"""The series metadata warmer yields to stores that arrive while it is building, and waits while
DICOM associations are open."""

from __future__ import annotations

import itertools
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
from archivist.web.app import HttpActivity
from archivist.web.dicomweb import wado


def _store(archive: Archive, path: Path, series: str) -> None:
    make_instance(path, series_uid=series)
    archive.ingest.store_file(path, Origin("import"))


def _start_warmer(state: SimpleNamespace, monkeypatch, **kw: float) -> threading.Event:  # type: ignore[no-untyped-def]
    """wado.start_warmer, returned once its thread has read where the change log ends: what is
    stored after that is its to build (a fixed sleep before storing was a guess; on a loaded
    machine the thread can start later, and then it misses the stores)."""
    index = wado.cache_for(state).archive.index
    real = index.last_change
    read = threading.Event()

    def last_change() -> int:
        try:
            return real()
        finally:
            read.set()

    monkeypatch.setattr(index, "last_change", last_change)
    stop = wado.start_warmer(state, **kw)
    assert read.wait(60), "the warmer thread did not start"
    return stop


def test_warmer_stops_building_when_stores_resume(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(env={}, overrides={"data_dir": tmp_path / "data"})
    archive = Archive.open(settings)
    state = SimpleNamespace(archive=archive, health=None)
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
    stop = _start_warmer(state, monkeypatch, quiet=quiet, poll=0.05, patience=60)
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
    state = SimpleNamespace(archive=archive, health=health)
    built: list[float] = []
    monkeypatch.setattr(wado.MetadataCache, "warm",
                        lambda self, study, series: built.append(time.monotonic()))
    stop = _start_warmer(state, monkeypatch, quiet=0.2, poll=0.05, patience=60)
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


def test_http_activity_is_shared_by_the_workers() -> None:
    cells = multiprocessing.Array("d", 4, lock=False)
    worker0, worker1 = HttpActivity(cells, 0, 2), HttpActivity(cells, 1, 2)
    # Nothing yet anywhere: quiet for as long as the clock goes back (time.monotonic() counts
    # from the machine's boot, so no fixed number: a CI machine may have booted minutes ago).
    origin = time.monotonic()
    assert worker0.quiet_for() >= origin
    worker1.begin()
    assert worker0.quiet_for() == 0.0  # answering in the other worker
    time.sleep(0.05)
    assert worker0.quiet_for() == 0.0  # still answering, however long it takes
    ended = time.monotonic()
    worker1.end()
    time.sleep(0.1)
    # Counted from the other worker's end, however late this thread woke up.
    assert 0.1 <= worker0.quiet_for() <= time.monotonic() - ended


def _warmer_state(tmp_path: Path, worker0: HttpActivity) -> tuple[Archive, SimpleNamespace]:
    settings = load_settings(env={}, overrides={"data_dir": tmp_path / "data"})
    archive = Archive.open(settings)
    health = SimpleNamespace(stopping=False, dimse_quiet_for=None)
    return archive, SimpleNamespace(archive=archive, health=health,
                                    http_activity=worker0)


def test_warmer_waits_for_http_quiet_in_any_worker(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cells = multiprocessing.Array("d", 4, lock=False)
    worker0, worker1 = HttpActivity(cells, 0, 2), HttpActivity(cells, 1, 2)
    archive, state = _warmer_state(tmp_path, worker0)
    built: list[float] = []
    monkeypatch.setattr(wado.MetadataCache, "warm",
                        lambda self, study, series: built.append(time.monotonic()))
    stop = _start_warmer(state, monkeypatch, quiet=0.2, poll=0.05, patience=60)
    _store(archive, tmp_path / "a.dcm", "1.2.826.0.1.3680043.8.498.7")
    try:
        # Requests one after the other on the OTHER worker (the warmer's own saw none).
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            worker1.begin()
            time.sleep(0.03)
            worker1.end()
            time.sleep(0.03)
        assert built == []
        last = cells[1]  # when the last request ended
        deadline = time.monotonic() + 10
        while not built and time.monotonic() < deadline:
            time.sleep(0.05)
        assert built and built[0] - last >= 0.5
    finally:
        stop.set()
        archive.close()


def test_overdue_series_are_built_one_per_poll_while_serving(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cells = multiprocessing.Array("d", 4, lock=False)
    worker0, worker1 = HttpActivity(cells, 0, 2), HttpActivity(cells, 1, 2)
    archive, state = _warmer_state(tmp_path, worker0)
    built: list[float] = []
    monkeypatch.setattr(wado.MetadataCache, "warm",
                        lambda self, study, series: built.append(time.monotonic()))
    poll = 0.25
    stop = _start_warmer(state, monkeypatch, quiet=60, poll=poll, patience=0.1)
    worker1.begin()  # a long request in the other worker, all along
    try:
        for n in range(6):
            _store(archive, tmp_path / f"s{n}.dcm", f"1.2.826.0.1.3680043.8.498.{n + 1}")
        deadline = time.monotonic() + 15
        while len(built) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(built) == 6  # overdue: built although the server is busy...
        gaps = [b - a for a, b in itertools.pairwise(built)]
        assert min(gaps) >= poll * 0.8, gaps  # ...one per poll, not all at once
    finally:
        worker1.end()
        stop.set()
        archive.close()


def test_a_deleted_series_leaves_nothing_in_the_metadata_cache(tmp_path: Path) -> None:
    """The cached metadata of a series holds patient data: once the series is deleted, the
    warmer removes its file (it stayed on disk for ever), and keeps the others."""
    from archivist.archive.delete import Deletion

    settings = load_settings(env={}, overrides={"data_dir": tmp_path / "data"})
    archive = Archive.open(settings)
    study = "1.2.826.0.1.3680043.8.498.500"
    kept, deleted = "1.2.826.0.1.3680043.8.498.501", "1.2.826.0.1.3680043.8.498.502"
    for n, series in enumerate((kept, deleted)):
        make_instance(tmp_path / f"{n}.dcm", study_uid=study, series_uid=series)
        archive.ingest.store_file(tmp_path / f"{n}.dcm", Origin("import"))
    state = SimpleNamespace(archive=archive, health=None)
    cache = wado.cache_for(state)
    for series in (kept, deleted):
        cache.warm(study, series)
    files = sorted(p.name for p in cache.dir.glob("series-*.json.gz"))
    assert len(files) == 2
    stop = wado.start_warmer(state, quiet=60, poll=0.05, patience=60)
    try:
        time.sleep(0.3)
        assert len(list(cache.dir.glob("series-*.json.gz"))) == 2  # nothing deleted yet
        Deletion(archive.index, archive.blobs).delete(study, deleted)
        deadline = time.monotonic() + 10
        while len(list(cache.dir.glob("series-*.json.gz"))) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p.name for p in cache.dir.glob("series-*.json.gz")]
        assert len(left) == 1 and left[0] in files
        assert len(cache.templates) == 1
        cache.warm(study, kept)  # the kept series is still served from its file
    finally:
        stop.set()
        archive.close()
