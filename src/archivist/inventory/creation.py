"""Inventory Creation (PS3.4 Annex KK): persistent jobs, one per Transaction UID.

States (KK.2.1.1, Transaction Status (0008,0417)): ``PROCESSING`` -> ``COMPLETE`` or ``FAILURE``;
``PROCESSING`` <-> ``PAUSED``; ``PROCESSING``/``PAUSED`` -> ``CANCELED``.

A job is a row of ``inventory_job`` in the index database, so it survives a restart and any
process on the data directory sees it. A worker claims a PROCESSING job with a lease (renewed as
it works; a lease older than the setting ``inventory_lease_seconds``, 30 s by default, is taken
over, which is how a job interrupted by a crash resumes). The study records in scope are fixed
when the job starts (every study whose record key is at most the largest one at that moment,
PS3.17 YYYY.3.2); leaves are built ``studies_per_instance`` studies at a time (the setting
``inventory_studies_per_instance``) and staged as Part 10 files under the data directory (named
by job number, never by a UID), and progress is committed after each leaf. On completion the
leaves and a root go through the one ingest; a cancel with Retain Instances NO discards the
staged leaves (nothing was stored), with YES stores them under a PARTIAL root.

Events (KK.2.3) of a job with a requester are queued durably (:mod:`archivist.inventory.outbox`,
files under the data directory) before they are sent, and handed to a ``notify(job,
event_type_id, dataset)`` callable by an engine that has one: the DIMSE layer sends them as
N-EVENT-REPORT over a new association. An event that could not be delivered is retried; events a
crashed process queued are delivered by the next one (at least once, in order per job).

Table ``inventory_job`` is part of the index schema (``index/schema.py``, Alembic revision 0003).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import (
    func,
    insert,
    or_,
    select,
    update,
)

from archivist.archive.archive import Archive
from archivist.errors import ArchivistError
from archivist.index.schema import inventory_job, study
from archivist.inventory import INVENTORY_STORAGE
from archivist.inventory.builder import (
    InventoryBuilder,
    InventorySpec,
    mark_partial,
    to_part10,
)
from archivist.inventory.outbox import Outbox, Pending, Sender

log = logging.getLogger("archivist.inventory.creation")

PROCESSING, COMPLETE, FAILURE, CANCELED, PAUSED = (
    "PROCESSING", "COMPLETE", "FAILURE", "CANCELED", "PAUSED")
TERMINAL = (COMPLETE, FAILURE, CANCELED)
#: N-EVENT-REPORT Event Type IDs (Table KK.2-2).
EVENT_TERMINATED_WITH_INSTANCES, EVENT_STATUS, EVENT_TERMINATED_WITHOUT_INSTANCES = 11, 12, 13

class JobError(ArchivistError):
    """An N-ACTION that cannot be applied (unknown transaction, wrong state, duplicate)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    """One row of ``inventory_job``."""

    pk: int
    transaction_uid: str
    state: str
    level: str
    scope: list[tuple[str, str]]
    purpose: str
    requester_aet: str
    status_interval: int
    studies_per_instance: int
    snapshot_pk: int
    studies_total: int
    studies_done: int
    leaves: list[str]
    container: tuple[str, str]
    root_uid: str | None
    retain: str | None
    comment: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        """The inverse of ``dataclasses.asdict`` (a job as kept with a queued event)."""
        return cls(**{**d, "scope": [tuple(p) for p in d["scope"]],
                      "container": tuple(d["container"])})

    @classmethod
    def from_row(cls, row: Any) -> Job:
        m = row._mapping
        return cls(
            pk=int(m["pk"]), transaction_uid=m["transaction_uid"], state=m["state"],
            level=m["level"], scope=[tuple(p) for p in json.loads(m["scope"])],  # type: ignore[misc]
            purpose=m["purpose"] or "", requester_aet=m["requester_aet"] or "",
            status_interval=int(m["status_interval"]),
            studies_per_instance=int(m["studies_per_instance"]),
            snapshot_pk=int(m["snapshot_pk"]), studies_total=int(m["studies_total"]),
            studies_done=int(m["studies_done"]), leaves=json.loads(m["leaves"]),
            container=(m["container_study"], m["container_series"]), root_uid=m["root_uid"],
            retain=m["retain"], comment=m["comment"] or "",
        )

    def status_dataset(self) -> Dataset:
        """Event Information of an Inventory Status event (12) or a termination without
        instances (13)."""
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        ds.TransactionStatus = self.state
        if self.comment:
            ds.TransactionStatusComment = self.comment[:10240]
        ds.TotalNumberOfStudyRecords = self.studies_total
        return ds


Notify = Callable[[Job, int, Dataset], None]


def _now() -> datetime:
    return datetime.now(UTC)


class InventoryCreation:
    """The Inventory Creation SCP's job engine (N-ACTION semantics and the worker).

    Parameters
    ----------
    archive
        The archive to inventory and to store inventories in.
    notify
        Sends an N-EVENT-REPORT (raises when it could not); called from the event sender
        thread. An engine without one still queues the events of jobs that have a requester;
        an engine with one delivers them, whichever process queued them.
    studies_per_instance
        How many study records one leaf instance holds (default: the setting
        ``inventory_studies_per_instance``).
    lease_seconds
        How long a job whose worker stopped renewing its lease is left alone before another
        worker resumes it (default: the setting ``inventory_lease_seconds``).
    """

    def __init__(self, archive: Archive, notify: Notify | None = None, *,
                 studies_per_instance: int | None = None, lease_seconds: float | None = None,
                 autostart: bool = True) -> None:
        self.archive = archive
        self.engine = archive.index.writer
        self.notify = notify
        settings = archive.settings
        self.studies_per_instance = studies_per_instance or settings.inventory_studies_per_instance
        self.lease_seconds = lease_seconds or settings.inventory_lease_seconds
        self.autostart = autostart
        self.owner = uuid.uuid4().hex
        self.staging = Path(archive.settings.data_dir) / "inventory-staging"
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._timer: threading.Thread | None = None
        self.outbox = Outbox(Path(archive.settings.data_dir) / "inventory-events")
        self._sender: Sender | None = None
        self._queued: set[str] = set()  # events this engine queued, until tried once

    # -- rows ----------------------------------------------------------------------------------

    def get(self, transaction_uid: str) -> Job | None:
        with self.archive.index.reader.connect() as conn:
            row = conn.execute(select(inventory_job).where(
                inventory_job.c.transaction_uid == transaction_uid)).first()
        return Job.from_row(row) if row is not None else None

    def jobs(self) -> list[Job]:
        with self.archive.index.reader.connect() as conn:
            rows = conn.execute(select(inventory_job).order_by(inventory_job.c.pk)).all()
        return [Job.from_row(r) for r in rows]

    def _update(self, pk: int, **values: Any) -> None:
        values["updated_at"] = _now()
        with self._lock, self.engine.begin() as conn:
            conn.execute(update(inventory_job).where(inventory_job.c.pk == pk).values(values))

    def _transition(self, transaction_uid: str, allowed: tuple[str, ...], new: str, *,
                    while_storing: bool = True, **values: Any) -> Job:
        """Move a job to `new` from one of the `allowed` states; with `while_storing` False,
        not while its worker stores the finished inventory (see :meth:`_claim_finish`)."""
        with self._lock, self.engine.begin() as conn:
            row = conn.execute(select(inventory_job).where(
                inventory_job.c.transaction_uid == transaction_uid)).first()
            if row is None:
                raise JobError("no Inventory Creation with this Transaction UID", 0x0112)
            if row._mapping["state"] not in allowed:
                raise JobError(f"transaction is {row._mapping['state']}", 0x0110)
            if (not while_storing and row._mapping["state"] == PROCESSING
                    and row._mapping["root_uid"]):
                raise JobError("transaction is storing its completed inventory", 0x0110)
            conn.execute(update(inventory_job).where(inventory_job.c.pk == row._mapping["pk"])
                         .values(state=new, updated_at=_now(), **values))
        job = self.get(transaction_uid)
        assert job is not None
        return job

    # -- N-ACTION ------------------------------------------------------------------------------

    def initiate(self, transaction_uid: str, spec: InventorySpec, *, requester_aet: str,
                 status_interval: int = 0) -> Job:
        """Action 11: start a job (PROCESSING).

        Raises
        ------
        JobError
            The Transaction UID is already in use (0x0111).
        """
        if self.get(transaction_uid) is not None:
            raise JobError("Transaction UID already used", 0x0111)
        with self.archive.index.reader.connect() as conn:
            snapshot = int(conn.execute(select(func.max(study.c.pk))).scalar() or 0)
        from pydicom.uid import generate_uid

        now = _now()
        with self._lock, self.engine.begin() as conn:
            conn.execute(insert(inventory_job).values(
                transaction_uid=transaction_uid, state=PROCESSING, level=spec.level,
                scope=json.dumps(spec.scope), purpose=spec.purpose, requester_aet=requester_aet,
                status_interval=max(0, int(status_interval)),
                studies_per_instance=self.studies_per_instance, snapshot_pk=snapshot,
                studies_total=0, studies_done=0, leaves="[]",
                container_study=generate_uid(), container_series=generate_uid(),
                created_at=now, updated_at=now))
        job = self.get(transaction_uid)
        assert job is not None
        log.info("inventory creation %s initiated by %s: level %s", transaction_uid,
                 requester_aet, spec.level)
        self._event(job, EVENT_STATUS)
        if self.autostart:
            self.start()
        self._wake.set()
        return job

    def request_status(self, transaction_uid: str, status_interval: int | None = None) -> Job:
        """Action 12: an Inventory Status event now (and a new interval, if given)."""
        job = self.get(transaction_uid)
        if job is None:
            raise JobError("no Inventory Creation with this Transaction UID", 0x0112)
        if status_interval is not None:
            self._update(job.pk, status_interval=max(0, int(status_interval)))
        self._event(job, EVENT_STATUS)
        return job

    def pause(self, transaction_uid: str) -> Job:
        """Action 14: PROCESSING -> PAUSED (the worker stops at the next study)."""
        job = self._transition(transaction_uid, (PROCESSING,), PAUSED, while_storing=False)
        self._event(job, EVENT_STATUS)
        return job

    def resume(self, transaction_uid: str) -> Job:
        """Action 15: PAUSED -> PROCESSING."""
        job = self._transition(transaction_uid, (PAUSED,), PROCESSING, owner=None)
        self._event(job, EVENT_STATUS)
        if self.autostart:
            self.start()
        self._wake.set()
        return job

    def cancel(self, transaction_uid: str, retain: bool) -> Job:
        """Action 13: -> CANCELED; staged leaves are stored (Retain Instances YES) or dropped."""
        job = self._transition(transaction_uid, (PROCESSING, PAUSED), CANCELED,
                               while_storing=False, retain="YES" if retain else "NO")
        # The worker notices at the next study; if none runs the job, finish it here.
        if not self._owned_by_live_worker(job):
            self._finish_canceled(job)
        return job

    def _owned_by_live_worker(self, job: Job) -> bool:
        with self.archive.index.reader.connect() as conn:
            row = conn.execute(select(inventory_job.c.owner, inventory_job.c.heartbeat_at)
                               .where(inventory_job.c.pk == job.pk)).first()
        if row is None or not row.owner or row.heartbeat_at is None:
            return False
        beat = row.heartbeat_at if row.heartbeat_at.tzinfo else row.heartbeat_at.replace(
            tzinfo=UTC)
        return _now() - beat < timedelta(seconds=self.lease_seconds)

    # -- events --------------------------------------------------------------------------------

    def _event(self, job: Job, event_type: int, ds: Dataset | None = None) -> None:
        """Queue an event durably (a job without a requester has nobody to tell); a sender
        delivers it after the N-ACTION response that caused it has gone."""
        if not job.requester_aet:
            return
        name = self.outbox.put(job.pk, dataclasses.asdict(job), event_type,
                               ds if ds is not None else job.status_dataset())
        if self.notify is not None:
            self._queued.add(name)
            self.start_events()

    def start_events(self) -> None:
        """Deliver queued events (also those a previous process left) from a sender thread;
        only an engine with a ``notify`` has one."""
        if self.notify is None:
            return
        with self._lock:
            if self._sender is None:
                data_dir = Path(self.archive.settings.data_dir)
                self._sender = Sender(self.outbox, self._deliver, alive=data_dir.exists)
        self._sender.wake()

    def _deliver(self, pending: Pending) -> None:
        assert self.notify is not None
        job = Job.from_dict(pending.job)
        self.notify(job, pending.event_type, pending.dataset)

    def drain_events(self, timeout: float = 30.0) -> None:
        """Wait until every event this engine queued was delivered, or waits behind a failed
        one of its job (tests, shutdown); what failed stays queued for a later attempt."""
        sender = self._sender
        if sender is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queued = set(self._queued)
            if sender.settled(queued):
                self._queued -= queued
                return
            time.sleep(0.02)

    # -- the worker ----------------------------------------------------------------------------

    def pending(self) -> bool:
        """Whether any job is PROCESSING or PAUSED (work a worker may have to resume)."""
        with self.archive.index.reader.connect() as conn:
            return conn.execute(select(inventory_job.c.pk).where(
                inventory_job.c.state.in_((PROCESSING, PAUSED))).limit(1)).first() is not None

    def start(self) -> None:
        """Run jobs in a background thread (resuming any a previous process left).

        The thread releases the jobs it holds when the process exits normally, so that the
        next process resumes them at once (after a crash, once the lease has expired).
        """
        if self._thread is not None:
            return
        import atexit

        atexit.register(self.stop)
        self._thread = threading.Thread(target=self._loop, name="inventory-creation",
                                        daemon=True)
        self._thread.start()
        self._timer = threading.Thread(target=self._status_loop, name="inventory-status",
                                       daemon=True)
        self._timer.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in (self._thread, self._timer):
            if t is not None:
                t.join(timeout)
        self._thread = self._timer = None
        self.drain_events(timeout)
        if self._sender is not None:
            self._sender.stop()
            self._sender = None
        try:
            with self._lock, self.engine.begin() as conn:
                conn.execute(update(inventory_job).where(inventory_job.c.owner == self.owner)
                             .values(owner=None))
        except Exception as exc:  # noqa: BLE001 - the lease expires anyway
            log.debug("releasing inventory jobs failed: %s", type(exc).__name__)

    def _claim(self) -> Job | None:
        cutoff = _now() - timedelta(seconds=self.lease_seconds)
        with self._lock, self.engine.begin() as conn:
            row = conn.execute(select(inventory_job).where(
                inventory_job.c.state == PROCESSING,
                or_(inventory_job.c.owner.is_(None), inventory_job.c.owner == self.owner,
                    inventory_job.c.heartbeat_at < cutoff),
            ).order_by(inventory_job.c.pk).limit(1)).first()
            if row is None:
                return None
            conn.execute(update(inventory_job).where(inventory_job.c.pk == row._mapping["pk"])
                         .values(owner=self.owner, heartbeat_at=_now()))
        job = Job.from_row(row)
        if row._mapping["owner"] not in (None, self.owner):
            log.info("inventory creation %s: taken over from a worker whose lease expired, "
                     "resuming at %d/%d studies", job.transaction_uid, job.studies_done,
                     job.studies_total)
        return job

    def _loop(self) -> None:
        data_dir = Path(self.archive.settings.data_dir)
        while not self._stop.is_set() and data_dir.exists():
            job = None
            try:
                job = self._claim()
                if job is not None:
                    self.run_job(job)
                    continue
            except Exception as exc:
                log.exception("inventory creation worker failed")
                if job is not None:
                    self._fail(job, f"internal error: {type(exc).__name__}")
            self._wake.wait(1.0)
            self._wake.clear()

    def _status_loop(self) -> None:
        """Inventory Status events at each job's Requested Status Interval (seconds)."""
        last: dict[int, float] = {}
        data_dir = Path(self.archive.settings.data_dir)
        while not self._stop.wait(0.5) and data_dir.exists():
            try:
                for job in self.jobs():
                    if job.state in TERMINAL or job.status_interval <= 0:
                        continue
                    due = last.get(job.pk, time.monotonic())
                    last.setdefault(job.pk, due)
                    if time.monotonic() - due >= job.status_interval:
                        last[job.pk] = time.monotonic()
                        self._event(job, EVENT_STATUS)
            except Exception:
                log.exception("inventory status timer failed")

    def _state(self, pk: int) -> str:
        with self.archive.index.reader.connect() as conn:
            return str(conn.execute(select(inventory_job.c.state)
                                    .where(inventory_job.c.pk == pk)).scalar())

    def _stage_dir(self, job: Job) -> Path:
        return self.staging / f"job-{job.pk}"

    def claim(self) -> Job | None:
        """Take the next PROCESSING job no live worker holds (for :meth:`run_job`)."""
        return self._claim()

    def run_job(self, job: Job, *, max_leaves: int | None = None) -> None:
        """Build the job's inventory from where it stopped; store it when done.

        With `max_leaves`, stop (as a stopped process would) after building that many leaves.
        """
        spec = InventorySpec(level=job.level, scope=job.scope,
                             studies_per_instance=job.studies_per_instance, purpose=job.purpose,
                             transaction_uid=job.transaction_uid,
                             retrieve_aet=self.archive.settings.aet)
        builder = InventoryBuilder(self.archive)
        keys = [k for k in builder.study_keys(spec) if k <= job.snapshot_pk]
        self._update(job.pk, studies_total=len(keys))
        job.studies_total = len(keys)
        stage = self._stage_dir(job)
        stage.mkdir(parents=True, exist_ok=True)
        if job.leaves and not all((stage / f"leaf-{n:06d}.dcm").exists()
                                  for n in range(1, len(job.leaves) + 1)):
            # Its leaves so far were staged by another node (each has a data directory of its
            # own; the job's progress is in the shared index) or lost with a data directory:
            # built again from the start here, else the root would name only the leaves this
            # process built and the inventory would miss the studies of the others.
            log.info("inventory creation %s: %d leaves built elsewhere are not here; "
                     "building them again", job.transaction_uid, len(job.leaves))
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir(parents=True, exist_ok=True)
            job.leaves, job.studies_done = [], 0
            self._update(job.pk, studies_done=0, leaves="[]")
        state = {"checked": 0.0, "value": PROCESSING}

        def should_stop() -> bool:
            if time.monotonic() - state["checked"] > 0.2:  # type: ignore[operator]
                state["checked"] = time.monotonic()
                state["value"] = self._state(job.pk)
                self._update(job.pk, heartbeat_at=_now())
            return state["value"] != PROCESSING or self._stop.is_set()

        leaves = list(job.leaves)
        # Leaves only (the root is built once every study is done), always split so that
        # progress can be kept leaf by leaf.
        spec_leaves = InventorySpec(level=spec.level, scope=spec.scope,
                                    studies_per_instance=spec.studies_per_instance,
                                    purpose=spec.purpose, transaction_uid=spec.transaction_uid,
                                    retrieve_aet=spec.retrieve_aet)
        done = job.studies_done
        started = self._started(job.pk)
        for offset in range(job.studies_done, len(keys), spec.studies_per_instance):
            chunk = keys[offset:offset + spec.studies_per_instance]
            items = list(builder.iter_build(spec_leaves, keys=chunk, should_stop=should_stop,
                                            container=job.container, started=started))
            built, leaf = items[0]
            stopped = built < len(chunk)
            if leaf.InventoriedStudiesSequence:
                leaf.InstanceNumber = 2 + len(leaves)
                leaf.TotalNumberOfStudyRecords = len(keys)
                path = stage / f"leaf-{len(leaves) + 1:06d}.dcm"
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(to_part10(leaf))
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                tmp.replace(path)
                if not stopped:
                    leaves.append(str(leaf.SOPInstanceUID))
                    done = offset + built
                    self._update(job.pk, studies_done=done, leaves=json.dumps(leaves))
                else:
                    path.unlink()  # a partial chunk is rebuilt on resume
            if stopped:
                break
            if max_leaves is not None and len(leaves) - len(job.leaves) >= max_leaves:
                self._update(job.pk, owner=None)
                return
        root_uid = None if self._stop.is_set() else self._claim_finish(job.pk)
        if root_uid is None:
            current = self._state(job.pk)
            if current == PAUSED:
                self._update(job.pk, owner=None)
                log.info("inventory creation %s paused at %d/%d studies", job.transaction_uid,
                         done, len(keys))
            elif current == CANCELED:
                job = self.get(job.transaction_uid) or job
                self._finish_canceled(job)
            else:  # stopping
                self._update(job.pk, owner=None)
            return
        job = self.get(job.transaction_uid) or job
        self._store(job, complete=True, root_uid=root_uid)
        finished = self._transition(job.transaction_uid, (PROCESSING,), COMPLETE, owner=None)
        self._event(finished, EVENT_STATUS)
        self._event(finished, EVENT_TERMINATED_WITH_INSTANCES, self._with_instances(finished))
        log.info("inventory creation %s complete: %d studies", job.transaction_uid, len(keys))

    def _started(self, pk: int) -> datetime:
        """When the job was initiated: the Content Date and Time of all its instances (the time
        creation began, C.38.1.1.1; the studies in scope are those stored then)."""
        with self.archive.index.reader.connect() as conn:
            value = conn.execute(select(inventory_job.c.created_at)
                                 .where(inventory_job.c.pk == pk)).scalar()
        if value is None:
            return _now()
        return value if value.tzinfo else value.replace(tzinfo=UTC)  # naive values are UTC

    def _claim_finish(self, pk: int) -> str | None:
        """Mark a PROCESSING job as storing its completed inventory: its root's SOP Instance UID
        is chosen and kept in the row, and from now on Pause and Cancel are refused (0x0110), so
        that they cannot land between the store and COMPLETE (which left a canceled job with
        its inventory stored and no final event). Returns that UID (the one already chosen when
        a process died while storing), or None when the job is no longer PROCESSING."""
        from pydicom.uid import generate_uid

        with self._lock, self.engine.begin() as conn:
            row = conn.execute(select(inventory_job.c.state, inventory_job.c.root_uid)
                               .where(inventory_job.c.pk == pk)).first()
            if row is None or row.state != PROCESSING:
                return None
            root_uid = str(row.root_uid or generate_uid())
            conn.execute(update(inventory_job).where(inventory_job.c.pk == pk)
                         .values(root_uid=root_uid, updated_at=_now()))
        return root_uid

    def _store(self, job: Job, *, complete: bool, root_uid: str | None = None
               ) -> tuple[str, int]:
        """Store the staged leaves and a root (with `root_uid`, if given) through the one
        ingest; returns the root UID and the root's Total Number of Study Records (for a kept
        canceled job: the records its leaves hold, see :func:`mark_partial`)."""
        from pydicom.sequence import Sequence

        builder = InventoryBuilder(self.archive)
        stage = self._stage_dir(job)
        staged = sorted(stage.glob("leaf-*.dcm")) if stage.exists() else []
        leaves: list[Dataset] = [pydicom.dcmread(p) for p in staged]
        spec = InventorySpec(level=job.level, scope=job.scope,
                             studies_per_instance=job.studies_per_instance,
                             purpose=job.purpose, transaction_uid=job.transaction_uid)
        root: Dataset
        if len(leaves) == 1 and complete:
            root = leaves[0]
            root.InstanceNumber = 1
            leaves = []
        else:
            root = builder._instance(spec, self._started(job.pk), job.container, 1)
            root.NumberOfStudyRecordsInInstance = 0
            root.TotalNumberOfStudyRecords = job.studies_total
            refs = []
            for leaf in leaves:
                ref = Dataset()
                ref.ReferencedSOPClassUID = INVENTORY_STORAGE
                ref.ReferencedSOPInstanceUID = leaf.SOPInstanceUID
                refs.append(ref)
            root.IncorporatedInventoryInstanceSequence = Sequence(refs)
        total = int(root.TotalNumberOfStudyRecords)
        if not complete:
            total = mark_partial([root, *leaves])
        if root_uid:
            root.SOPInstanceUID = root_uid
        beat = time.monotonic()
        for ds in [*leaves, root]:
            builder.store(ds)
            if time.monotonic() - beat > 0.2:  # keep the lease while storing many leaves
                beat = time.monotonic()
                self._update(job.pk, heartbeat_at=_now())
        shutil.rmtree(stage, ignore_errors=True)
        return str(root.SOPInstanceUID), total

    def _with_instances(self, job: Job) -> Dataset:
        ds = job.status_dataset()
        ds.ReferencedSOPClassUID = INVENTORY_STORAGE
        ds.ReferencedSOPInstanceUID = job.root_uid
        ds.RetrieveAETitle = self.archive.settings.aet
        return ds

    def _finish_canceled(self, job: Job) -> None:
        stage = self._stage_dir(job)
        has_leaves = stage.exists() and any(stage.glob("leaf-*.dcm"))
        if job.retain == "YES" and has_leaves:
            root_uid, total = self._store(job, complete=False)
            self._update(job.pk, root_uid=root_uid, owner=None)
            job = self.get(job.transaction_uid) or job
            self._event(job, EVENT_STATUS)
            # Event 11 names the kept inventory: its total is what the root says, the study
            # records it holds (the job's studies_total stays the number that were in scope).
            terminated = self._with_instances(job)
            terminated.TotalNumberOfStudyRecords = total
            self._event(job, EVENT_TERMINATED_WITH_INSTANCES, terminated)
        else:
            shutil.rmtree(stage, ignore_errors=True)
            self._update(job.pk, owner=None)
            job = self.get(job.transaction_uid) or job
            self._event(job, EVENT_STATUS)
            self._event(job, EVENT_TERMINATED_WITHOUT_INSTANCES)
        log.info("inventory creation %s canceled (retain %s)", job.transaction_uid, job.retain)

    def _fail(self, job: Job, comment: str) -> None:
        try:
            failed = self._transition(job.transaction_uid, (PROCESSING, PAUSED), FAILURE,
                                      comment=comment, owner=None, root_uid=None)
        except JobError:
            return
        shutil.rmtree(self._stage_dir(job), ignore_errors=True)
        self._event(failed, EVENT_STATUS)
        self._event(failed, EVENT_TERMINATED_WITHOUT_INSTANCES)
