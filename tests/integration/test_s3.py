"""The objects in an S3-compatible bucket (``s3_endpoint``/``s3_bucket``): moto's S3 server as
the store, PostgreSQL as the shared index, two ``archivist serve`` nodes with data directories
of their own. What one node stores the other finds, retrieves (C-GET, WADO-RS) and deletes;
a restart (its cache emptied) reads the objects back from the bucket; a store that cannot be
reached stops ``serve`` with the reason."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from tests.integration.conftest import dcmtk_tool

from archivist.store.s3 import S3BlobStore
from archivist.testing import postgres
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.s3server import MOTO, moto_server, new_bucket
from archivist.testing.server import ServerProcess, free_port

pytestmark = [
    pytest.mark.skipif(not MOTO.exists(), reason="moto_server (dev dependency) needed"),
    pytest.mark.timeout(300),
]
ENV = {"TCP_NODELAY": "1"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


def _bucket(endpoint: str, tmp: Path) -> tuple[str, S3BlobStore]:
    return new_bucket(endpoint, tmp, "archive")


def _env(endpoint: str, bucket: str, database: str | None) -> dict[str, str]:
    env = {"ARCHIVIST_S3_ENDPOINT": endpoint, "ARCHIVIST_S3_BUCKET": bucket,
           "ARCHIVIST_S3_ACCESS_KEY": "test", "ARCHIVIST_S3_SECRET_KEY": "test"}
    if database:
        env["ARCHIVIST_DATABASE_URL"] = database
    return env


def _files(folder: Path, study: str, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    series = new_uid()
    out = []
    for i in range(n):
        path = folder / f"{i}.dcm"
        make_instance(path, study_uid=study, series_uid=series, patient_id="S3-1",
                      rows=64, columns=64, instance_number=i + 1)
        out.append(path)
    return out


def _store(srv: ServerProcess, files: list[Path]) -> None:
    done = subprocess.run([dcmtk_tool("storescu"), "-aec", srv.aet, "127.0.0.1",
                           str(srv.dicom_port), *map(str, files)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **ENV}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _digests(folder: Path) -> set[str]:
    """SHA-256 of each file's data set (after the File Meta, which a retrieve may rewrite)."""
    import pydicom

    out = set()
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        out.add(hashlib.sha256(ds.PixelData).hexdigest() + str(ds.SOPInstanceUID))
    return out


@pytest.mark.skipif(not postgres.available(), reason="PostgreSQL needed")
def test_two_nodes_share_one_bucket_and_one_database(s3: str, tmp_path: Path) -> None:
    pg = postgres.PostgresServer().start()
    try:
        bucket, probe = _bucket(s3, tmp_path)
        env = _env(s3, bucket, pg.new_database())
        one = ServerProcess(tmp_path / "one", env=env)
        two = ServerProcess(tmp_path / "two", env=env)
        try:
            # Together: each migrates the new database in turn (an advisory lock).
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(ServerProcess.start, (one, two)))
            study = new_uid()
            files = _files(tmp_path / "in", study, 4)
            _store(one, files)
            assert len(list(probe.keys())) == 4  # in the bucket, not under a data directory
            # The start banner names where the index and the blobs are (no password).
            assert f"  blobs  s3 bucket {bucket} at " in one.log()
            assert "  index  postgresql" in one.log()
            assert not any(p.is_file() for p in (tmp_path / "one" / "blobs").rglob("*"))
            # Node two serves them: C-GET and WADO-RS, from the bucket through its cache.
            out = tmp_path / "got"
            out.mkdir()
            done = subprocess.run(
                [dcmtk_tool("getscu"), "-S", "-aec", two.aet, "-od", str(out),
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                 "127.0.0.1", str(two.dicom_port)], capture_output=True, text=True,
                timeout=120, env={**os.environ, **ENV}, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            sent = tmp_path / "sent"
            sent.mkdir()
            for f in files:
                (sent / f.name).write_bytes(f.read_bytes())
            assert _digests(out) == _digests(sent)
            meta = requests.get(f"{two.url}/dicomweb/studies/{study}/metadata", timeout=30)
            assert meta.status_code == 200 and len(meta.json()) == 4
            one_sop = meta.json()[0]["00080018"]["Value"][0]
            series = meta.json()[0]["0020000E"]["Value"][0]
            frame = requests.get(f"{two.url}/dicomweb/studies/{study}/series/{series}/"
                                 f"instances/{one_sop}/frames/1",
                                 headers={"Accept": "application/octet-stream"}, timeout=30)
            assert frame.status_code == 200 and len(frame.content) >= 64 * 64
            # Node two deletes the study: gone from the bucket and from node one's answers.
            assert requests.delete(f"{two.url}/api/studies/{study}",
                                   timeout=30).status_code == 200
            assert list(probe.keys()) == []
            found = requests.get(f"{one.url}/dicomweb/studies",
                                 params={"StudyInstanceUID": study}, timeout=30)
            assert found.status_code == 200 and found.json() == []
        finally:
            one.stop()
            two.stop()
    finally:
        pg.stop()


def test_objects_come_back_from_the_bucket_after_a_restart(s3: str, tmp_path: Path) -> None:
    """SQLite index, objects in S3: the restart empties the local cache, and WADO-RS reads the
    objects from the bucket again, byte for byte."""
    bucket, probe = _bucket(s3, tmp_path)
    env = _env(s3, bucket, None)
    srv = ServerProcess(tmp_path / "data", env=env).start()
    study = new_uid()
    files = _files(tmp_path / "in", study, 2)
    try:
        _store(srv, files)
    finally:
        srv.stop()
    assert len(list(probe.keys())) == 2
    again = ServerProcess(tmp_path / "data", env=env).start()
    try:
        assert list((tmp_path / "data" / "cache" / "blobs").iterdir()) == []
        meta = requests.get(f"{again.url}/dicomweb/studies/{study}/metadata", timeout=30).json()
        sop = meta[0]["00080018"]["Value"][0]
        series = meta[0]["0020000E"]["Value"][0]
        part10 = requests.get(f"{again.url}/wado", params={
            "requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop,
            "contentType": "application/dicom"}, timeout=30)
        assert part10.status_code == 200
        (tmp_path / "back").mkdir()
        (tmp_path / "back" / "one.dcm").write_bytes(part10.content)
        assert _digests(tmp_path / "back") <= _digests(tmp_path / "in")
    finally:
        again.stop()


def test_a_store_that_cannot_be_reached_stops_serve_with_the_reason(tmp_path: Path) -> None:
    env = _env(f"http://127.0.0.1:{free_port()}", "nowhere", None)
    done = subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "serve", "--data", str(tmp_path / "data")],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode != 0
    assert "cannot be reached" in done.stderr, done.stderr[-2000:]
