"""Helpers for the Supplement 223 tests (imported by the test modules: a conftest.py here would
shadow tests/integration/conftest.py on sys.path): embedded archives filled through the one
ingest, and real ``archivist serve`` processes on loopback."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.config import load_settings
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess


def fill(archive: Archive, tmp: Path, *, studies: int, series: int = 1, instances: int = 1,
         patient_prefix: str = "P", modality: str = "CT") -> list[dict[str, Any]]:
    """Store `studies` x `series` x `instances` generated objects; returns their UIDs."""
    tmp.mkdir(parents=True, exist_ok=True)
    made: list[dict[str, Any]] = []
    for s in range(studies):
        study_uid = new_uid()
        for e in range(series):
            series_uid = new_uid()
            for i in range(instances):
                path = tmp / f"{new_uid()}.dcm"
                ds = make_instance(path, study_uid=study_uid, series_uid=series_uid,
                                   patient_id=f"{patient_prefix}{s}",
                                   patient_name=f"NAME^{patient_prefix}{s}", modality=modality,
                                   series_number=e + 1, instance_number=i + 1,
                                   study_date=f"2024{1 + s % 12:02d}{1 + s % 28:02d}")
                archive.ingest.store_file(path, Origin("import"), consume=True)
                made.append({"study": study_uid, "series": series_uid,
                             "sop": str(ds.SOPInstanceUID), "class": str(ds.SOPClassUID)})
    return made


def job_row(data: Path, uid: str) -> dict[str, Any] | None:
    """The Inventory Creation job's row, read from the data directory's SQLite index without
    the server's help (it may be dead)."""
    with sqlite3.connect(f"file:{data / 'index.sqlite'}?mode=ro", uri=True, timeout=5) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM inventory_job WHERE transaction_uid = ?",
                           (uid,)).fetchone()
    return dict(row) if row is not None else None


def initiate_job(assoc: Any, uid: str, level: str = "INSTANCE") -> int:
    """Send an Inventory Creation Initiate (N-ACTION 11) for the whole archive on `assoc`;
    the response's status."""
    from pydicom.dataset import Dataset

    from archivist.inventory import INVENTORY_CREATION, STORAGE_MANAGEMENT_INSTANCE

    info = Dataset()
    info.TransactionUID = uid
    info.InventoryLevel = level
    status, _ = assoc.send_n_action(info, 11, INVENTORY_CREATION, STORAGE_MANAGEMENT_INSTANCE)
    return int(status.Status)


def wait_until(predicate: Callable[[], Any], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


OpenArchive = Callable[..., Archive]


@pytest.fixture
def open_archive(tmp_path: Path) -> Iterator[OpenArchive]:
    opened: list[Archive] = []

    def _open(data: Path | None = None, **overrides: Any) -> Archive:
        settings = load_settings(env={}, overrides={"data_dir": data or tmp_path / "data",
                                                    **overrides})
        archive = Archive.open(settings)
        opened.append(archive)
        return archive

    yield _open
    for archive in opened:
        archive.close()


@pytest.fixture
def archive(open_archive: OpenArchive) -> Archive:
    return open_archive()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*args: str, data: Path | None = None, **kw: Any) -> ServerProcess:
        srv = ServerProcess(data or tmp_path / "data", extra_args=list(args), **kw)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()
