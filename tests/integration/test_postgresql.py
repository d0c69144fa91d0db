"""The index in PostgreSQL (``database_url``): a real PostgreSQL server (Debian's, started for the
module), ``archivist serve`` with two workers on it, DCMTK's ``storescu``/``findscu``/``getscu``
and HTTP clients as peers; the command-line tools beside a running server; restarts, a
database that cannot be reached and a lost index behave as on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from tests.integration.conftest import dcmtk_tool

from archivist.testing import postgres
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

pytestmark = [
    pytest.mark.skipif(not postgres.available(),
                       reason="PostgreSQL needed (apt-get install postgresql)"),
    pytest.mark.timeout(300),
]
ENV = {"TCP_NODELAY": "1"}


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.PostgresServer]:
    server = postgres.PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def database(pg: postgres.PostgresServer) -> str:
    return pg.new_database()


def _serve(data: Path, url: str, *args: str) -> ServerProcess:
    return ServerProcess(data, extra_args=list(args),
                         env={"ARCHIVIST_DATABASE_URL": url}).start()


def _study(folder: Path, study: str, patient: str, name: str, date: str, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    series = new_uid()
    files = []
    for i in range(n):
        path = folder / f"{study[-8:]}-{i}.dcm"
        make_instance(path, study_uid=study, series_uid=series, patient_id=patient,
                      patient_name=name, study_date=date, charset="ISO_IR 192")
        files.append(path)
    return files


def _storescu(srv: ServerProcess, files: list[Path]) -> None:
    done = subprocess.run([dcmtk_tool("storescu"), "-aec", srv.aet, "127.0.0.1",
                           str(srv.dicom_port), *map(str, files)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **ENV},
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _findscu(srv: ServerProcess, out: Path, *keys: str) -> list[pydicom.Dataset]:
    out.mkdir(parents=True)
    args = [dcmtk_tool("findscu"), "-S", "-aec", srv.aet, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run([*args, "127.0.0.1", str(srv.dicom_port)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **ENV}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_an_archive_on_postgresql_end_to_end(database: str, tmp_path: Path) -> None:
    srv = _serve(tmp_path / "data", database, "--workers", "2")
    try:
        a, b = new_uid(), new_uid()
        _storescu(srv, _study(tmp_path / "in", a, "PG-1", "Müller^Anna", "20240105", 3)
                  + _study(tmp_path / "in", b, "PG-2", "Smith^Bob", "20250610", 2))
        # C-FIND: a person name wildcard (matching Müller: case and accents folded), a date range.
        got = _findscu(srv, tmp_path / "f1", "QueryRetrieveLevel=STUDY", "StudyInstanceUID=",
                       "PatientName=muller*", "NumberOfStudyRelatedInstances=")
        assert [(str(d.StudyInstanceUID), int(d.NumberOfStudyRelatedInstances))
                for d in got] == [(a, 3)]
        got = _findscu(srv, tmp_path / "f2", "QueryRetrieveLevel=STUDY", "StudyInstanceUID=",
                       "StudyDate=20250101-20251231", "ModalitiesInStudy=")
        assert [str(d.StudyInstanceUID) for d in got] == [b]
        # QIDO-RS and WADO-RS on the same index.
        found = requests.get(f"{srv.url}/dicomweb/studies", params={"PatientID": "PG-1"},
                             timeout=30).json()
        assert [s["0020000D"]["Value"][0] for s in found] == [a]
        meta = requests.get(f"{srv.url}/dicomweb/studies/{b}/metadata", timeout=30)
        assert meta.status_code == 200 and len(meta.json()) == 2
        # One instance by its path (the index's lookup by SOP Instance UID), and under a
        # study it is not in: 404.
        item = meta.json()[0]
        series, sop = item["0020000E"]["Value"][0], item["00080018"]["Value"][0]
        one = requests.get(f"{srv.url}/dicomweb/studies/{b}/series/{series}/instances/{sop}"
                           "/metadata", timeout=30)
        assert one.status_code == 200 and one.json()[0]["00080018"]["Value"] == [sop]
        wrong = requests.get(f"{srv.url}/dicomweb/studies/{a}/series/{series}/instances/{sop}"
                             "/metadata", timeout=30)
        assert wrong.status_code == 404, wrong.text
        # C-GET back every object of study a, byte counts as stored.
        out = tmp_path / "got"
        out.mkdir()
        done = subprocess.run([dcmtk_tool("getscu"), "-S", "-aec", srv.aet, "-od", str(out),
                               "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={a}",
                               "127.0.0.1", str(srv.dicom_port)], capture_output=True,
                              text=True, timeout=120, env={**os.environ, **ENV}, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert len(list(out.iterdir())) == 3
        # Delete over HTTP: gone from queries, and the change log says so.
        assert requests.delete(f"{srv.url}/api/studies/{b}", timeout=30).status_code == 200
        none = requests.get(f"{srv.url}/dicomweb/studies", params={"StudyInstanceUID": b},
                            timeout=30)
        assert none.status_code == 200 and none.json() == []
        kinds = [c["kind"] for c in requests.get(f"{srv.url}/api/changes",
                                                  timeout=30).json()["changes"]]
        assert kinds.count("stored") == 5 and kinds[-1] == "removed"
        # MPPS kept in the same database.
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=srv.aet)
        assert assoc.is_established
        ds = pydicom.Dataset()
        item = pydicom.Dataset()
        item.StudyInstanceUID = a
        ds.ScheduledStepAttributesSequence = [item]
        ds.PerformedStationAETitle = "MODALITY"
        ds.PerformedProcedureStepStartDate = "20240105"
        ds.PerformedProcedureStepStartTime = "1000"
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.PerformedProcedureStepID = "1"
        ds.Modality = "CT"
        status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, new_uid())
        assoc.release()
        assert status.Status == 0
        assert len(requests.get(f"{srv.url}/api/mpps", params={"study": a},
                                timeout=30).json()["mpps"]) == 1
    finally:
        assert srv.stop() == 0
    # A restart finds everything where it was.
    again = _serve(tmp_path / "data", database)
    try:
        got = _findscu(again, tmp_path / "f3", "QueryRetrieveLevel=STUDY", "StudyInstanceUID=")
        assert [str(d.StudyInstanceUID) for d in got] == [a]
    finally:
        again.stop()
    assert "index.sqlite" not in os.listdir(tmp_path / "data")


@pytest.mark.slow  # ~8 s; .ci/run leaves it out to stay within 20 minutes
def test_command_line_tools_use_the_database_while_serve_runs(database: str,
                                                              tmp_path: Path) -> None:
    """`archivist find` and `archivist delete` on the data directory of a running server read
    and write the same PostgreSQL index."""
    srv = _serve(tmp_path / "data", database)
    env = {**os.environ, "ARCHIVIST_DATABASE_URL": database}
    try:
        study = new_uid()
        _storescu(srv, _study(tmp_path / "in", study, "PG-3", "Cli^User", "20240101", 2))
        found = subprocess.run([sys.executable, "-m", "archivist.cli.main", "find", "--data",
                                str(tmp_path / "data"), "--level", "study", "--json",
                                "PatientID=PG-3"], capture_output=True, text=True,
                               timeout=120, env=env, check=False)
        assert found.returncode == 0, found.stderr
        assert study in found.stdout
        gone = subprocess.run([sys.executable, "-m", "archivist.cli.main", "delete", "--data",
                               str(tmp_path / "data"), "--study", study], capture_output=True,
                              text=True, timeout=120, env=env, check=False)
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert _findscu(srv, tmp_path / "f", "QueryRetrieveLevel=STUDY",
                        f"StudyInstanceUID={study}") == []
    finally:
        srv.stop()


def test_a_database_that_cannot_be_reached_stops_serve_with_the_reason(
        pg: postgres.PostgresServer, tmp_path: Path) -> None:
    url = pg.url("no_such_database").replace("archivist@", "archivist:secret-pw@")
    done = subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "serve", "--data", str(tmp_path / "data")],
        env={**os.environ, "ARCHIVIST_DATABASE_URL": url}, capture_output=True, text=True,
        timeout=120, check=False)
    assert done.returncode != 0
    assert "no_such_database" in done.stderr and "cannot be reached" in done.stderr
    assert "secret-pw" not in done.stderr + done.stdout


def test_an_empty_database_beside_stored_objects_is_refused(database: str, pg, tmp_path: Path
                                                            ) -> None:  # type: ignore[no-untyped-def]
    """The index lost (a new, empty database) while the data directory holds objects: refused,
    nothing moved, as a missing index.sqlite is."""
    srv = _serve(tmp_path / "data", database)
    try:
        _storescu(srv, _study(tmp_path / "in", new_uid(), "PG-4", "Lost^Index", "20240101", 1))
    finally:
        srv.stop()
    blobs = sorted(p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file())
    done = subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "serve", "--data", str(tmp_path / "data")],
        env={**os.environ, "ARCHIVIST_DATABASE_URL": pg.new_database()}, capture_output=True,
        text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert "holds no index" in done.stderr, done.stderr
    assert sorted(p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()) == blobs


def test_healthz_says_503_while_the_database_is_down(tmp_path: Path) -> None:
    """A load balancer polling /healthz takes a node out while its database does not answer
    (it said 200 throughout), and puts it back when the database is up again."""
    own = postgres.PostgresServer().start()  # its own server: this test stops it
    try:
        srv = _serve(tmp_path / "data", own.new_database(), "--workers", "1")
        try:
            url = f"http://127.0.0.1:{srv.http_port}/healthz"
            assert requests.get(url, timeout=10).status_code == 200
            own.pause()
            deadline = time.monotonic() + 20
            while True:
                r = requests.get(url, timeout=10)
                if r.status_code == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert r.status_code == 503, r.text
            assert r.json()["status"] == "index unavailable"
            assert "index" in r.json()["detail"] and r.headers.get("Retry-After")
            own.resume()
            deadline = time.monotonic() + 30
            while requests.get(url, timeout=10).status_code != 200:
                assert time.monotonic() < deadline, "still 503 with the database back"
                time.sleep(0.3)
        finally:
            srv.stop()
    finally:
        own.stop()
