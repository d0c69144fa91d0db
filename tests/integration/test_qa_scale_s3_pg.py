"""QA of the PostgreSQL + S3 deployment's failure modes, black-box: real ``archivist serve``
processes, moto's S3 server (or a tiny fake S3 endpoint answering errors), a throw-away
PostgreSQL, DCMTK and pynetdicom as peers.

- a refusal to start (database or bucket unusable) is a one-line reason, not a traceback;
- an object larger than ``s3_cache_bytes`` is still served (it is in the bucket);
- two nodes replacing the same instances at once leave no object in the bucket without a row;
- a database outage: failure statuses with comments, nothing acknowledged lost, healed without a
  restart; the HTTP API answers 503 with a readable body meanwhile;
- an object store answering 403 at run time: failure statuses with the reason, nothing left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
import requests
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
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
needs_pg = pytest.mark.skipif(not postgres.available(), reason="PostgreSQL needed")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


def _bucket(endpoint: str, tmp: Path) -> tuple[str, S3BlobStore]:
    return new_bucket(endpoint, tmp, "qa")


def _env(endpoint: str, bucket: str, database: str | None = None,
         **more: str) -> dict[str, str]:
    env = {"ARCHIVIST_S3_ENDPOINT": endpoint, "ARCHIVIST_S3_BUCKET": bucket,
           "ARCHIVIST_S3_ACCESS_KEY": "test", "ARCHIVIST_S3_SECRET_KEY": "test", **ENV}
    if database:
        env["ARCHIVIST_DATABASE_URL"] = database
    env.update(more)
    return env


def _files(folder: Path, n: int, **kw: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    study, series = new_uid(), new_uid()
    out = []
    for i in range(n):
        path = folder / f"{i}.dcm"
        make_instance(path, study_uid=study, series_uid=series, patient_id="QA-SCALE",
                      instance_number=i + 1, **kw)
        out.append(path)
    return out


def _storescu(port: int, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk_tool("storescu"), "-aec", "ARCHIVIST", "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **ENV}, check=False)


def _index_keys(url: str) -> set[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return {str(k) for k in conn.execute(text("SELECT storage_key FROM instance"))
                    .scalars()}
    finally:
        engine.dispose()


def _serve_once(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "serve", "--data", str(tmp_path / "data"),
         "--dicom-port", str(free_port()), "--http-port", str(free_port())],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False)


# -- refusing to start --------------------------------------------------------------------------


def test_a_database_that_cannot_be_reached_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    """`serve` with an unreachable database (or a wrong password, or no such database) printed
    a 40-line Python traceback ending with the reason: the reason alone is wanted, as for every
    other refusal (`error: ...`)."""
    url = f"postgresql://archivist:Pw-Secret-77@127.0.0.1:{free_port()}/archive"
    done = _serve_once(tmp_path, {"ARCHIVIST_DATABASE_URL": url})
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "cannot be reached" in out
    assert "Pw-Secret-77" not in out
    assert "Traceback" not in out, out[-3000:]


def test_a_missing_bucket_on_a_new_archive_is_a_message_not_a_traceback(s3: str,
                                                                        tmp_path: Path) -> None:
    """A new data directory (no index yet) and a bucket that does not exist: the start-up's
    lost-index check lists the bucket, and its failure escaped as a traceback."""
    env = _env(s3, "no-such-bucket-qa", ARCHIVIST_S3_SECRET_KEY="S3-Secret-Key-99")
    done = _serve_once(tmp_path, env)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "NoSuchBucket" in out
    assert "S3-Secret-Key-99" not in out
    assert "Traceback" not in out, out[-3000:]


# -- the local cache ----------------------------------------------------------------------------


def test_an_object_larger_than_the_cache_is_still_served(s3: str, tmp_path: Path) -> None:
    """s3_cache_bytes below one object's size: the object is fetched, put in the cache, trimmed
    away at once (it alone exceeds the limit) and then answered as "missing from the store"
    (404; C-GET refused): an acknowledged object that cannot be read back from any node."""
    bucket, probe = _bucket(s3, tmp_path)
    env = _env(s3, bucket, ARCHIVIST_S3_CACHE_BYTES="100000")
    (path,) = _files(tmp_path / "in", 1, rows=512, columns=512)  # ~256 KiB
    srv = ServerProcess(tmp_path / "data", env=env, extra_args=["--workers", "1"]).start()
    try:
        done = _storescu(srv.dicom_port, [path])
        assert done.returncode == 0, done.stdout + done.stderr
        assert len(list(probe.keys())) == 1
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        got = requests.get(f"{srv.url}/wado", params={
            "requestType": "WADO", "studyUID": ds.StudyInstanceUID,
            "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID,
            "contentType": "application/dicom"}, timeout=60)
        assert got.status_code == 200, got.text[:300]
        back = tmp_path / "back.dcm"
        back.write_bytes(got.content)
        assert pydicom.dcmread(back).PixelData == pydicom.dcmread(path).PixelData
    finally:
        srv.stop()


# -- two nodes ----------------------------------------------------------------------------------


@pytest.mark.slow  # ~13 s; .ci/run leaves it out to stay within 20 minutes
@needs_pg
def test_concurrent_replace_on_two_nodes_leaves_no_object_without_a_row(s3: str,
                                                                       tmp_path: Path) -> None:
    """--duplicates replace, the same instances sent at once to two nodes (two senders each):
    every replace deletes the object its row named before, but the row is read without a lock,
    so two replaces of one instance both delete the same old object and the one written in
    between stays in the bucket, named by no row, swept by nobody (a shared bucket is not)."""
    pg = postgres.PostgresServer().start()
    try:
        bucket, probe = _bucket(s3, tmp_path)
        database = pg.new_database()
        env = _env(s3, bucket, database)
        args = ["--workers", "1", "--duplicates", "replace"]
        one = ServerProcess(tmp_path / "one", env=env, extra_args=args).start()
        two = ServerProcess(tmp_path / "two", env=env, extra_args=args).start()
        try:
            files = _files(tmp_path / "in", 20)
            for _ in range(2):
                with ThreadPoolExecutor(4) as pool:
                    runs = list(pool.map(lambda port: _storescu(port, files),
                                         [one.dicom_port, two.dicom_port] * 2))
                assert all(r.returncode == 0 for r in runs), [r.stdout for r in runs]
            rows = _index_keys(database)
            assert len(rows) == 20
            keys = set(probe.keys())
            assert rows <= keys  # every row's object is there
            assert keys - rows == set(), f"{len(keys - rows)} objects named by no row"
        finally:
            one.stop()
            two.stop()
    finally:
        pg.stop()


# -- a database outage --------------------------------------------------------------------------


def _pg_stop(pg: postgres.PostgresServer) -> None:
    pg._run(str(pg.bindir / "pg_ctl"), "-D", str(pg.data), "-m", "fast", "-w", "stop")


def _pg_start(pg: postgres.PostgresServer) -> None:
    options = (f"-p {pg.port} -k {pg.folder} -c listen_addresses=127.0.0.1 "
               "-c max_connections=200")
    pg._run(str(pg.bindir / "pg_ctl"), "-D", str(pg.data), "-o", options, "-l",
            str(pg.folder / "log"), "-w", "-t", "60", "start")


@needs_pg
def test_a_database_outage_fails_clearly_loses_nothing_and_heals(s3: str,
                                                                 tmp_path: Path) -> None:
    """PostgreSQL stopped under a 2-worker serve: C-STORE and C-FIND answer 0xA700 with an
    Error Comment, QIDO-RS 503 with a JSON body, C-ECHO still works; PostgreSQL back: the same
    serve stores again, and every acknowledged instance is in the index with its object."""
    pg = postgres.PostgresServer().start()
    try:
        bucket, probe = _bucket(s3, tmp_path)
        database = pg.new_database()
        srv = ServerProcess(tmp_path / "data", env=_env(s3, bucket, database),
                            extra_args=["--workers", "2"]).start()
        try:
            files = _files(tmp_path / "in", 6)
            ae = AE(ae_title="QA")
            ae.add_requested_context(CTImageStorage)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
            ae.add_requested_context(Verification)
            ae.dimse_timeout = 60
            acked = []
            assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
            assert assoc.is_established
            for path in files[:2]:
                status = assoc.send_c_store(pydicom.dcmread(path))
                assert status.Status == 0
                acked.append(path)
            _pg_stop(pg)
            status = assoc.send_c_store(pydicom.dcmread(files[2]))
            assert status.Status == 0xA700 and status.get("ErrorComment")
            query = pydicom.Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ""
            final = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
            assert final[-1][0].Status == 0xA700 and final[-1][0].get("ErrorComment")
            assert assoc.send_c_echo().Status == 0
            assoc.release()
            qido = requests.get(f"{srv.url}/dicomweb/studies", timeout=60)
            assert qido.status_code == 503 and qido.json()["error"]
            _pg_start(pg)
            done = _storescu(srv.dicom_port, files[2:])
            assert done.returncode == 0, done.stdout + done.stderr
            acked += files[2:]
            rows = _index_keys(database)
            assert len(rows) == len(acked)
            assert rows == set(probe.keys())  # the refused one left nothing in the bucket
        finally:
            srv.stop()
    finally:
        pg.stop()


@needs_pg
def test_the_http_api_answers_503_with_a_reason_while_the_database_is_down(
        tmp_path: Path) -> None:
    """DICOMweb answers 503 {"error": "index read failed: ..."} while PostgreSQL is down, but
    /api/stats, /api/changes, /api/mpps and /api/validation answered a bare 500 "Internal
    Server Error" (text/plain), each with a traceback in the log."""
    pg = postgres.PostgresServer().start()
    try:
        srv = ServerProcess(tmp_path / "data", extra_args=["--workers", "1"],
                            env={"ARCHIVIST_DATABASE_URL": pg.new_database(), **ENV}).start()
        try:
            _pg_stop(pg)
            answers = {}
            for route in ("/dicomweb/studies", "/api/stats", "/api/changes", "/api/mpps",
                          "/api/validation"):
                r = requests.get(f"{srv.url}{route}", timeout=60)
                answers[route] = (r.status_code, r.headers.get("content-type", ""),
                                  r.text[:100])
            bad = {k: v for k, v in answers.items()
                   if v[0] != 503 or "json" not in v[1]}
            assert bad == {}, answers
            _pg_start(pg)
            assert requests.get(f"{srv.url}/api/stats", timeout=60).status_code == 200
        finally:
            srv.stop()
    finally:
        pg.stop()


# -- an object store answering errors ----------------------------------------------------------


class _FakeS3(BaseHTTPRequestHandler):
    """Lists an empty bucket (so serve starts), answers everything else 403 AccessDenied."""

    protocol_version = "HTTP/1.1"
    LIST = (b'<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/'
            b'2006-03-01/"><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated>'
            b'</ListBucketResult>')
    DENIED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
              b'<Message>Access Denied</Message></Error>')

    def _answer(self) -> None:
        left = int(self.headers.get("content-length") or 0)
        while left > 0:
            left -= len(self.rfile.read(min(left, 1 << 20)) or b"x" * left)
        listing = self.command == "GET" and "list-type" in self.path
        body = self.LIST if listing else self.DENIED
        self.send_response(200 if listing else 403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_a_store_answering_403_gives_failure_statuses_with_the_reason(tmp_path: Path) -> None:
    """Pinned: PUTs answered 403 AccessDenied: C-STORE 0xA700 with an Error Comment, STOW-RS
    409 whose Failure Reason is 0xA700 and whose comment names the store's answer; the server
    goes on answering C-ECHO."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeS3)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        env = _env(f"http://127.0.0.1:{httpd.server_address[1]}", "denied")
        srv = ServerProcess(tmp_path / "data", env=env, extra_args=["--workers", "1"]).start()
        try:
            files = _files(tmp_path / "in", 2)
            ae = AE(ae_title="QA")
            ae.add_requested_context(CTImageStorage)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
            assert assoc.is_established
            status = assoc.send_c_store(pydicom.dcmread(files[0]))
            assert status.Status == 0xA700 and status.get("ErrorComment")
            assert assoc.send_c_echo().Status == 0
            assoc.release()
            body = (b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + files[1].read_bytes()
                    + b"\r\n--XX--\r\n")
            stow = requests.post(f"{srv.url}/dicomweb/studies", data=body, timeout=60,
                                 headers={"Content-Type": 'multipart/related; '
                                          'type="application/dicom"; boundary=XX'})
            assert stow.status_code == 409
            failed = stow.json()["00081198"]["Value"][0]
            assert failed["00081197"]["Value"] == [0xA700]
            assert "AccessDenied" in failed["00000902"]["Value"][0]
        finally:
            srv.stop()
    finally:
        httpd.shutdown()
