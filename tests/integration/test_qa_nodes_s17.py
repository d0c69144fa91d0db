"""QA round 17: the scaled-out deployment, black-box. The index in a real PostgreSQL, the objects
in moto's S3 server, two or three ``archivist serve`` nodes with data directories of their own,
real clients (DCMTK, pynetdicom, requests) as peers.

Not repeated here (tests/integration/test_s3.py, test_postgresql.py, test_qa_scale_s3_*.py):
one node's store found by the other, a restart of one data directory, concurrent replaces, the
database outage of one node, 503s of the HTTP API, a store answering 403 or hanging.

- the change log that ``GET /api/changes``, forwarding and IAN follow: a client following it
  with ``since=last`` while two nodes store sees every change;
- Instance Availability Notification and forwarding with ``ian_to`` / ``forward_to`` set on
  every node: one notification per study, one copy per instance, not one per node;
- the same instances sent to two nodes at once under ``keep`` and ``reject``: one row each, no
  object without a row in the bucket;
- a delete on one node while another stores into the same study;
- a node killed (SIGKILL) while it ingests: what it acknowledged is there, no half row;
- an S3 outage: failure statuses and HTTP errors with a reason, healed without a restart;
- the services that keep their state in the index across nodes: Storage Commitment, MPPS,
  UPS events, inventories and Repository Query;
- a node started on an empty data directory reads everything back from the bucket;
- no patient name or ID in the logs at INFO.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from tests.integration.conftest import dcmtk_tool

from archivist.testing import postgres
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.net import wait_listening
from archivist.testing.s3server import MOTO, moto_server, new_bucket
from archivist.testing.server import ServerProcess, free_port

pytestmark = [
    pytest.mark.skipif(not MOTO.exists(), reason="moto_server (dev dependency) needed"),
    pytest.mark.skipif(not postgres.available(), reason="PostgreSQL needed"),
    pytest.mark.timeout(300),
]
ENV = {"TCP_NODELAY": "1"}
PATIENT_NAME = "Qanodes^Wilhelmina"
PATIENT_ID = "QAN-PID-4711"
CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.PostgresServer]:
    server = postgres.PostgresServer().start()
    yield server
    server.stop()


def _env(endpoint: str, bucket: str, database: str, **more: str) -> dict[str, str]:
    return {"ARCHIVIST_S3_ENDPOINT": endpoint, "ARCHIVIST_S3_BUCKET": bucket,
            "ARCHIVIST_S3_ACCESS_KEY": "test", "ARCHIVIST_S3_SECRET_KEY": "test",
            "ARCHIVIST_DATABASE_URL": database, **ENV, **more}


class Cluster:
    """Nodes on one bucket and one database."""

    def __init__(self, tmp: Path, s3: str, pg: postgres.PostgresServer, **more: str) -> None:
        self.tmp = tmp
        self.bucket, self.probe = new_bucket(s3, tmp, "qan")
        self.database = pg.new_database()
        self.env = _env(s3, self.bucket, self.database, **more)
        self.nodes: list[ServerProcess] = []

    def start(self, n: int, *args: str, **more: str) -> list[ServerProcess]:
        procs = [ServerProcess(self.tmp / f"node{len(self.nodes) + i}",
                               env={**self.env, **more}, extra_args=["--workers", "1", *args])
                 for i in range(n)]
        # All at once: each migrates the new database at start, one at a time (an advisory
        # lock), as the workers of one node do.
        self.nodes += procs
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda p: p.start(), procs))
        return procs

    def stop(self) -> None:
        with ThreadPoolExecutor(max(1, len(self.nodes))) as pool:
            list(pool.map(lambda p: p.stop(), self.nodes))

    def keys(self) -> set[str]:
        return set(self.probe.keys())

    def rows(self) -> dict[str, str]:
        """SOP Instance UID -> storage key of every instance row."""
        return {str(sop): str(key) for sop, key in self.sql(
            "SELECT sop_instance_uid, storage_key FROM instance")}

    def sql(self, query: str) -> list[Any]:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(query))]
        finally:
            engine.dispose()


@pytest.fixture
def cluster(s3: str, pg: postgres.PostgresServer, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, s3, pg)
    try:
        yield c
    finally:
        c.stop()


def _files(folder: Path, n: int, study: str | None = None, series: str | None = None,
           **kw: Any) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    study, series = study or new_uid(), series or new_uid()
    out = []
    for i in range(n):
        path = folder / f"{new_uid()[-10:]}.dcm"
        make_instance(path, study_uid=study, series_uid=series, patient_id=PATIENT_ID,
                      patient_name=PATIENT_NAME, instance_number=i + 1, **kw)
        out.append(path)
    return out


def _storescu(port: int, files: list[Path], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk_tool("storescu"), *args, "-aec", "ARCHIVIST", "127.0.0.1",
                           str(port), *map(str, files)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **ENV}, check=False)


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


class Scp:
    """A pynetdicom SCP recording what it gets: C-STOREs of CT images, IAN N-CREATEs."""

    def __init__(self, aet: str) -> None:
        self.aet = aet
        self.port = free_port()
        self.stored: list[str] = []
        self.ians: list[Dataset] = []
        self.reports: list[tuple[str, int, Dataset]] = []  # (SOP Class, event type, info)
        self._lock = threading.Lock()
        self._server: Any = None

    def _on_store(self, event: Any) -> int:
        with self._lock:
            self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    def _on_create(self, event: Any) -> tuple[int, None]:
        with self._lock:
            self.ians.append(event.attribute_list)
        return 0, None

    def _on_report(self, event: Any) -> tuple[int, None]:
        with self._lock:
            self.reports.append((str(event.request.AffectedSOPClassUID), int(event.event_type),
                                 event.event_information))
        return 0, None

    def start(self) -> Scp:
        from archivist.archive.ups import UPS_EVENT
        from archivist.dimse.commitment import STORAGE_COMMITMENT
        from archivist.dimse.ian import IAN_SOP_CLASS

        ae = AE(ae_title=self.aet)
        ae.add_supported_context(CT, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        ae.add_supported_context(IAN_SOP_CLASS)
        ae.add_supported_context(STORAGE_COMMITMENT, scu_role=True, scp_role=True)
        ae.add_supported_context(UPS_EVENT, scu_role=True, scp_role=True)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_STORE, self._on_store), (evt.EVT_N_CREATE, self._on_create),
            (evt.EVT_N_EVENT_REPORT, self._on_report)])
        wait_listening(self.port, what=self.aet)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    @property
    def peer(self) -> str:
        return f"{self.aet}=127.0.0.1:{self.port}"


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


# -- the change log ---------------------------------------------------------------------------


def test_a_client_following_the_change_log_misses_nothing_two_nodes_store(
        cluster: Cluster, tmp_path: Path) -> None:
    """`/api/changes?since=last`, polled while two nodes store at once (two senders each),
    sees every change the log holds at the end: sequence numbers that commit out of order
    (one node's transaction taking its number before another's commits) must not be skipped."""
    one, two = cluster.start(2)
    files = [_files(tmp_path / f"in{i}", 15) for i in range(4)]
    seen: list[int] = []
    stop = threading.Event()

    def follow() -> None:
        since = 0
        with requests.Session() as http:
            while True:
                done = stop.is_set()
                body = http.get(f"{one.url}/api/changes",
                                params={"since": since, "limit": 1000}, timeout=30).json()
                seen.extend(c["seq"] for c in body["changes"])
                since = body["last"]
                if done and body["done"]:
                    return

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(lambda a: _storescu(*a), [
                (one.dicom_port, files[0]), (two.dicom_port, files[1]),
                (one.dicom_port, files[2]), (two.dicom_port, files[3])]))
        assert all(r.returncode == 0 for r in runs), [(r.stdout + r.stderr)[-500:] for r in runs]
    finally:
        stop.set()
        follower.join(60)
    every = [int(s) for (s,) in cluster.sql("SELECT seq FROM change ORDER BY seq")]
    assert len(every) == 60
    assert sorted(seen) == every, f"missed {sorted(set(every) - set(seen))}"


# -- IAN and forwarding, configured on every node ------------------------------------------


def test_one_ian_per_study_and_one_forward_per_instance_not_one_per_node(
        cluster: Cluster, tmp_path: Path) -> None:
    """Every node has the same settings (ian_to = RIS, forward_to = BACKUP): each follows the
    shared change log, so each announced every study and forwarded every instance; the RIS
    got one IAN per node, the backup each instance once per node."""
    ris, backup = Scp("RIS").start(), Scp("BACKUP").start()
    try:
        nodes = cluster.start(2, "--peer", ris.peer, "--peer", backup.peer,
                              ARCHIVIST_IAN_TO="RIS", ARCHIVIST_IAN_DELAY="1",
                              ARCHIVIST_FORWARD_TO="BACKUP")
        study = new_uid()
        files = _files(tmp_path / "in", 4, study=study)
        assert _storescu(nodes[0].dicom_port, files[:2]).returncode == 0
        assert _storescu(nodes[1].dicom_port, files[2:]).returncode == 0
        sops = sorted(map(_uid, files))
        _wait(lambda: len(backup.stored) >= 4 and len(ris.ians) >= 1, 30, "nothing came")
        time.sleep(4)  # the other node's (duplicate) copies, if it sends any
        assert sorted(backup.stored) == sops
        assert len(ris.ians) == 1, f"{len(ris.ians)} IANs for one study"
        listed = sorted(str(i.ReferencedSOPInstanceUID) for s in ris.ians[0]
                        .ReferencedSeriesSequence for i in s.ReferencedSOPSequence)
        assert listed == sops
    finally:
        ris.stop()
        backup.stop()



def test_forwarding_moves_to_another_node_where_the_first_stopped(
        cluster: Cluster, tmp_path: Path) -> None:
    """The node forwarding to BACKUP stops; another takes over from the place it reached
    (kept in the index): what was stored after is forwarded, nothing is sent twice."""
    backup = Scp("BACKUP").start()
    try:
        nodes = cluster.start(2, "--peer", backup.peer, ARCHIVIST_FORWARD_TO="BACKUP")
        first = _files(tmp_path / "a", 2)
        assert _storescu(nodes[0].dicom_port, first).returncode == 0
        _wait(lambda: len(backup.stored) >= 2, 30, "not forwarded")
        for node in nodes:  # the one holding the slot (either) goes; a third comes
            node.stop()
            if node is nodes[0]:
                cluster.start(1, "--peer", backup.peer, ARCHIVIST_FORWARD_TO="BACKUP")
        last = cluster.nodes[-1]
        more = _files(tmp_path / "b", 2)
        assert _storescu(last.dicom_port, more).returncode == 0
        _wait(lambda: len(backup.stored) >= 4, 30, f"{len(backup.stored)} forwarded")
        time.sleep(2)
        assert sorted(backup.stored) == sorted(map(_uid, first + more))
    finally:
        backup.stop()

# -- inventories ------------------------------------------------------------------------------


def _job(node: ServerProcess, transaction: str) -> dict[str, Any]:
    return requests.get(f"{node.url}/api/inventories/jobs/{transaction}", timeout=30).json()


def test_an_inventory_job_finished_by_another_node_lists_every_study(
        cluster: Cluster, tmp_path: Path) -> None:
    """A job started on node one, paused there and resumed through node two (node one
    stopped meanwhile): node two builds the rest, then stored a root naming only the leaves
    it built itself, since the leaves built before were staged in node one's data directory;
    the job said COMPLETE over an inventory missing those studies."""
    one, two = cluster.start(2, ARCHIVIST_INVENTORY_STUDIES_PER_INSTANCE="1")
    files = []
    for i in range(40):
        files += _files(tmp_path / f"s{i}", 1)
    assert _storescu(one.dicom_port, files).returncode == 0
    job = requests.post(f"{one.url}/api/inventories", json={"level": "study"}, timeout=30)
    assert job.status_code == 202, job.text
    transaction = job.json()["transaction_uid"]
    _wait(lambda: _job(one, transaction)["studies_done"] >= 2, 30, "no progress")
    paused = requests.post(f"{one.url}/api/inventories/jobs/{transaction}/pause", timeout=30)
    assert paused.status_code == 200, paused.text
    _wait(lambda: _job(one, transaction)["state"] == "PAUSED", 30, "not paused")
    done_on_one = _job(one, transaction)["studies_done"]
    assert 0 < done_on_one < 40, "the job was not stopped half way: the test proves nothing"
    one.stop()
    assert requests.post(f"{two.url}/api/inventories/jobs/{transaction}/resume",
                         timeout=30).status_code == 200
    _wait(lambda: _job(two, transaction)["state"] == "COMPLETE", 60, "not completed")
    root = _job(two, transaction)["root"]
    got = requests.get(f"{two.url}/api/inventories/{root}", params={"format": "json"},
                       timeout=60)
    assert got.status_code == 200, got.text[:300]
    assert len(got.json()["studies"]) == 40


# -- the services that keep their state in the index, across nodes --------------------------


def test_commitment_mpps_and_ups_events_across_nodes(cluster: Cluster, tmp_path: Path) -> None:
    """Stored on node one, committed by node two (one report, every instance committed, the
    unknown one failed); an MPPS created on node one, completed on node two, read on node
    one; a workitem created on one node, watched through the other, claimed and completed on
    either: WATCHER gets each state report once, in order (both nodes send events)."""
    from archivist.dimse.commitment import STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
    from archivist.testing.mpps import completion as mpps_completion
    from archivist.testing.mpps import in_progress
    from archivist.testing.ups import Scu, workitem
    from archivist.testing.ups import completion as ups_completion

    modality, watcher = Scp("MODALITY").start(), Scp("WATCHER").start()
    try:
        one, two = cluster.start(2, "--peer", modality.peer, "--peer", watcher.peer)
        study = new_uid()
        files = _files(tmp_path / "in", 3, study=study)
        assert _storescu(one.dicom_port, files).returncode == 0
        # Storage Commitment through node two.
        info = Dataset()
        info.TransactionUID = new_uid()
        refs = []
        for sop in [*map(_uid, files), new_uid()]:
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CT, sop
            refs.append(item)
        info.ReferencedSOPSequence = refs
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(STORAGE_COMMITMENT)
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            ModalityPerformedProcedureStep,
        )
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate("127.0.0.1", two.dicom_port, ae_title="ARCHIVIST")
        assert assoc.is_established
        status, _ = assoc.send_n_action(info, 1, STORAGE_COMMITMENT,
                                        STORAGE_COMMITMENT_INSTANCE)
        assert status.Status == 0
        # MPPS: created through node two, completed through node one below.
        mpps_uid = new_uid()
        status, _ = assoc.send_n_create(in_progress(study), ModalityPerformedProcedureStep,
                                        mpps_uid)
        assert status.Status == 0
        assoc.release()
        assoc = ae.associate("127.0.0.1", one.dicom_port, ae_title="ARCHIVIST")
        status, _ = assoc.send_n_set(mpps_completion(list(map(_uid, files))),
                                     ModalityPerformedProcedureStep, mpps_uid)
        assoc.release()
        assert status.Status == 0
        step = requests.get(f"{two.url}/api/mpps/{mpps_uid}", timeout=30).json()
        assert step["status"] == "COMPLETED", step
        # UPS: created on one, watched through two, claimed on two, completed on one.
        with Scu(one) as a, Scu(two) as b:
            status, uid = a.create(workitem(), new_uid())
            assert status.Status in (0, 0xB300)
            assert b.subscribe(uid).Status == 0
            transaction = new_uid()
            assert b.state(uid, "IN PROGRESS", transaction).Status == 0
            assert a.set(uid, ups_completion(), transaction).Status == 0
            assert a.state(uid, "COMPLETED", transaction).Status == 0
        def states() -> list[str]:
            return [str(i.ProcedureStepState) for _, t, i in watcher.reports if t == 1]

        _wait(lambda: "COMPLETED" in states(), 30, f"UPS events: {states()}")
        _wait(lambda: len(modality.reports) >= 1, 30, "no commitment report")
        time.sleep(3)  # duplicates, if any
        assert states() == ["SCHEDULED", "IN PROGRESS", "COMPLETED"]
        assert len(modality.reports) == 1
        _, kind, report = modality.reports[0]
        assert kind == 2  # some failed
        assert len(report.ReferencedSOPSequence) == 3
        assert len(report.FailedSOPSequence) == 1
    finally:
        modality.stop()
        watcher.stop()


# -- duplicates, deletes and crashes ----------------------------------------------------------


@pytest.mark.parametrize("policy", ["keep", "reject"])
def test_the_same_instances_stored_on_two_nodes_at_once_end_as_one(
        cluster: Cluster, tmp_path: Path, policy: str) -> None:
    """keep / reject: four senders (two per node) send the same 15 instances at once: one row
    each, every object in the bucket named by a row (the losers' copies removed), the bytes
    retrievable; under reject the later copies are refused, under keep acknowledged."""
    one, two = cluster.start(2, "--duplicates", policy)
    files = _files(tmp_path / "in", 15)
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda port: _storescu(port, files),
                             [one.dicom_port, two.dicom_port] * 2))
    rows = cluster.rows()
    assert sorted(rows) == sorted(map(_uid, files))
    assert set(rows.values()) == cluster.keys()
    if policy == "keep":
        assert all(r.returncode == 0 for r in runs), [r.stderr[-300:] for r in runs]
    changes = requests.get(f"{two.url}/api/changes", params={"limit": 1000}, timeout=30).json()
    assert [c["kind"] for c in changes["changes"]] == ["stored"] * 15


def test_a_delete_on_one_node_while_another_stores_into_the_study(
        cluster: Cluster, tmp_path: Path) -> None:
    """Node two deletes a study while node one stores more of it: what is left afterwards is
    whole (every row has its object, every object its row) and what node one acknowledged
    after the delete answered is there."""
    one, two = cluster.start(2)
    study, series = new_uid(), new_uid()
    first = _files(tmp_path / "a", 10, study=study, series=series)
    assert _storescu(one.dicom_port, first).returncode == 0
    more = _files(tmp_path / "b", 20, study=study, series=series)
    with ThreadPoolExecutor(2) as pool:
        storing = pool.submit(_storescu, one.dicom_port, more)
        time.sleep(0.3)
        deleted = pool.submit(requests.delete, f"{two.url}/api/studies/{study}", timeout=60)
        assert deleted.result().status_code in (200, 404), deleted.result().text
        assert storing.result().returncode == 0
    rows = cluster.rows()
    assert set(rows.values()) == cluster.keys()
    left = requests.get(f"{two.url}/dicomweb/studies/{study}/metadata", timeout=30)
    listed = {i["00080018"]["Value"][0] for i in left.json()} if left.status_code == 200 else set()
    assert listed == set(rows)
    count = cluster.sql("SELECT number_of_study_related_instances FROM study") if rows else []
    assert not rows or count == [(len(rows),)]


def test_a_node_killed_while_it_ingests_loses_nothing_it_acknowledged(
        cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL of a node (two workers) while pynetdicom stores into it: each acknowledged
    instance has its row and its object (readable from the other node), no row without its
    object; the storage stops at the first failure."""
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    one, two = cluster.start(1, "--workers", "2")[0], cluster.start(1)[0]
    files = _files(tmp_path / "in", 200, rows=128, columns=128)
    acked: list[str] = []

    def send() -> None:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", one.dicom_port, ae_title="ARCHIVIST")
        try:
            for path in files:
                status = assoc.send_c_store(pydicom.dcmread(path))
                if not status or status.Status != 0:
                    return
                acked.append(_uid(path))
        except Exception:  # noqa: BLE001 - the node went away
            return
        finally:
            if assoc.is_established:
                assoc.abort()

    sender = threading.Thread(target=send)
    sender.start()
    _wait(lambda: len(acked) >= 20, 30, "nothing stored")
    one.kill()
    sender.join(60)
    assert len(acked) < len(files), "the kill came too late"
    rows = cluster.rows()
    assert set(acked) <= set(rows)
    assert set(rows.values()) <= cluster.keys()
    got = requests.get(f"{two.url}/api/changes", params={"limit": 1000}, timeout=30).json()
    assert len(got["changes"]) == len(rows)
    for sop in acked[-3:]:
        r = requests.get(f"{two.url}/wado", params={
            "requestType": "WADO", "studyUID": str(pydicom.dcmread(files[0]).StudyInstanceUID),
            "seriesUID": str(pydicom.dcmread(files[0]).SeriesInstanceUID), "objectUID": sop,
            "contentType": "application/dicom"}, timeout=30)
        assert r.status_code == 200


# -- an empty data directory; the logs --------------------------------------------------------


def test_a_node_on_an_empty_data_directory_serves_everything_and_logs_no_patient(
        cluster: Cluster, tmp_path: Path) -> None:
    """Node one stores (DCMTK and STOW-RS) and is stopped; a third node on a new, empty data
    directory answers C-FIND, C-GET (byte for byte) and WADO-RS from the bucket; no node logged
    the patient's name or ID at INFO."""
    (one,) = cluster.start(1)
    study = new_uid()
    files = _files(tmp_path / "in", 3, study=study)
    assert _storescu(one.dicom_port, files[:2]).returncode == 0
    body = (b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + files[2].read_bytes()
            + b"\r\n--XX--\r\n")
    stow = requests.post(f"{one.url}/dicomweb/studies", data=body, timeout=60, headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=XX'})
    assert stow.status_code == 200, stow.text[:300]
    one.stop()
    (fresh,) = cluster.start(1)
    out = tmp_path / "got"
    out.mkdir()
    done = subprocess.run([dcmtk_tool("getscu"), "-S", "-aec", "ARCHIVIST", "-od", str(out),
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                           "127.0.0.1", str(fresh.dicom_port)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **ENV}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    sent = {_uid(f): pydicom.dcmread(f).PixelData for f in files}
    back = {_uid(f): pydicom.dcmread(f).PixelData for f in out.iterdir()}
    assert back == sent
    found = requests.get(f"{fresh.url}/dicomweb/studies", params={"PatientID": PATIENT_ID},
                         timeout=30).json()
    assert [s["0020000D"]["Value"][0] for s in found] == [study]
    fresh.stop()
    for node in cluster.nodes:
        log = node.log()
        assert "Qanodes" not in log and PATIENT_ID not in log, log[-2000:]


# -- an S3 outage -----------------------------------------------------------------------------


class Switch:
    """A TCP proxy to the S3 server that can be turned off (connections refused, those open
    cut) and on again on the same port: an object store that goes away and comes back."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit("//", 1)[1].split(":")
        self.target = (host, int(port))
        self.port = free_port()
        self._listener: Any = None
        self._open: list[Any] = []
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self) -> None:
        import socket

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def off(self) -> None:
        import socket

        with __import__("contextlib").suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close does not)
        self._listener.close()
        with self._lock:
            for s in self._open:
                with __import__("contextlib").suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self._open.clear()

    def _accept(self, listener: Any) -> None:
        import socket

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: Any, b: Any) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with __import__("contextlib").suppress(OSError):
                    s.close()


def test_an_s3_outage_fails_clearly_loses_nothing_and_heals(
        s3: str, pg: postgres.PostgresServer, tmp_path: Path) -> None:
    """The object store goes away under two nodes: C-STORE answers a failure status with an
    Error Comment, STOW-RS a failure with a reason, WADO of an object not in the node's cache
    an error with a readable body, C-FIND and QIDO-RS still answer; the store back: the same
    nodes store and serve again, every acknowledged instance is there, nothing half-stored."""
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    switch = Switch(s3)
    switch.on()
    c = Cluster(tmp_path, s3, pg)
    c.env["ARCHIVIST_S3_ENDPOINT"] = switch.endpoint
    c.env["ARCHIVIST_S3_TIMEOUT"] = "5"
    try:
        one, two = c.start(2)
        study = new_uid()
        files = _files(tmp_path / "in", 6, study=study)
        assert _storescu(one.dicom_port, files[:2]).returncode == 0
        switch.off()
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", one.dicom_port, ae_title="ARCHIVIST")
        assert assoc.is_established
        status = assoc.send_c_store(pydicom.dcmread(files[2]))
        assoc.release()
        assert status.Status == 0xA700 and status.get("ErrorComment"), status
        body = (b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + files[3].read_bytes()
                + b"\r\n--XX--\r\n")
        stow = requests.post(f"{two.url}/dicomweb/studies", data=body, timeout=60, headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=XX'})
        assert stow.status_code in (409, 503), stow.text[:300]
        assert "00081198" in stow.json() or stow.json().get("error")
        # Node two never read the objects: not in its cache.
        wado = requests.get(f"{two.url}/dicomweb/studies/{study}", timeout=60,
                            headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert wado.status_code == 503 and "object store" in wado.text, wado.text[:300]
        uri = requests.get(f"{two.url}/wado", timeout=60, params={
            "requestType": "WADO", "studyUID": study,
            "seriesUID": str(pydicom.dcmread(files[0]).SeriesInstanceUID),
            "objectUID": _uid(files[0]), "contentType": "application/dicom"})
        assert uri.status_code == 503 and "object store" in uri.text, uri.text[:300]
        qido = requests.get(f"{two.url}/dicomweb/studies", params={"StudyInstanceUID": study},
                            timeout=30)
        assert qido.status_code == 200 and len(qido.json()) == 1
        switch.on()
        assert _storescu(one.dicom_port, files[2:4]).returncode == 0
        assert _storescu(two.dicom_port, files[4:]).returncode == 0
        wado = requests.get(f"{two.url}/dicomweb/studies/{study}", timeout=60,
                            headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert wado.status_code == 200
        rows = c.rows()
        assert sorted(rows) == sorted(map(_uid, files))
        assert set(rows.values()) == c.keys()
        # An outage is one line a request, not a traceback each (as for the index's).
        assert "Traceback" not in one.log() + two.log(), two.log()[-3000:]
    finally:
        c.stop()
        switch.off()
