"""Durable N-EVENT-REPORT deliveries for Inventory Creation jobs (PS3.4 KK.2.3).

An event is written to the job's storage under the data directory (``inventory-events/``) before
anything tries to send it, and removed only once it was handed over (the requester answered the
N-EVENT-REPORT, or it has nobody to be sent to). A process that crashes leaves its undelivered
events there; the next process that serves Inventory Creation on the data directory delivers
them. Delivery is at least once: a process killed between the requester's answer and the removal
sends that event again.

Files are named ``<time ns>-<job number>-<pid>-<counter>.json`` (never by a UID) and written to
a temporary name, fsync'd and renamed, so a reader sees whole events only. Events of one job are
delivered in the order they were queued; a failed delivery is retried with a growing delay (1 s
doubling up to 60 s) and, while it waits, holds back the later events of the same job, so the
final 11 or 13 never overtakes the 12 before it. An event still undelivered ``KEEP_SECONDS``
after it was queued is dropped with a warning. Several senders (threads or processes) may read
the same directory: each event file is locked (``flock``) while it is sent, and a sender skips
one another holds, and the later events of its job.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

log = logging.getLogger("archivist.inventory.events")

#: An event not delivered this long after it was queued is given up (seconds).
KEEP_SECONDS = 24 * 3600.0
#: An event is sent once it is this old: the N-ACTION response that caused it goes first.
SETTLE_SECONDS = 0.05
#: How often a sender looks for events other processes queued (seconds).
POLL_SECONDS = 1.0
_RETRY_FIRST, _RETRY_MAX = 1.0, 60.0


@dataclass(frozen=True)
class Pending:
    """One queued event, as read back from its file."""

    name: str
    job: dict[str, Any]
    event_type: int
    dataset: Dataset


#: Delivers one event: raises when it could not be delivered (it is retried).
Deliver = Callable[[Pending], None]


class Outbox:
    """The queued events of the Inventory Creation jobs of one data directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._counter = itertools.count(1)

    # -- writing ---------------------------------------------------------------------------------

    def put(self, job_pk: int, job: dict[str, Any], event_type: int, ds: Dataset) -> str:
        """Queue an event durably; returns its name."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = (f"{time.time_ns():020d}-{job_pk:08d}-{os.getpid()}-"
                f"{next(self._counter):06d}.json")
        body = json.dumps({"job": job, "event_type": int(event_type),
                           "dataset": ds.to_json_dict()}).encode()
        tmp = self.folder / (name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.folder / name)
        try:
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:  # pragma: no cover - a file system without directory fsync
            pass
        return name

    # -- reading ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Queued events, oldest first."""
        try:
            return sorted(n for n in os.listdir(self.folder) if n.endswith(".json"))
        except FileNotFoundError:
            return []

    @staticmethod
    def queued_at(name: str) -> float:
        return int(name.split("-", 1)[0]) / 1e9

    @staticmethod
    def job_of(name: str) -> int:
        return int(name.split("-")[1])

    def deliver(self, name: str, send: Deliver) -> bool | None:
        """Send one event under its lock and remove it once sent.

        Returns True when delivered (or already gone), None when another sender holds it, and
        raises what `send` raised when the delivery failed (the event stays queued).
        """
        path = self.folder / name
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    return True
            except FileNotFoundError:
                return True  # another sender delivered it and removed it meanwhile
            with os.fdopen(os.dup(fd), "rb") as fh:
                raw = json.loads(fh.read())
            pending = Pending(name, raw["job"], int(raw["event_type"]),
                              Dataset.from_json(raw["dataset"]))
            send(pending)
            path.unlink(missing_ok=True)
            return True
        finally:
            os.close(fd)

    def drop(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)


class Sender:
    """A thread delivering an :class:`Outbox` in order, job by job, with retries."""

    def __init__(self, outbox: Outbox, send: Deliver, *, alive: Callable[[], bool],
                 label: str = "inventory event") -> None:
        self.outbox = outbox
        self.send = send
        self.alive = alive
        self.label = label  # what the log lines call an event
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._retry: dict[str, tuple[int, float]] = {}  # name -> (failures, next attempt)
        self._tried: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name=label.replace(" ", "-") + "s",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def settled(self, names: set[str]) -> bool:
        """Whether each of `names` was delivered, or waits behind an event of its job that
        was tried at least once (and failed)."""
        queued = self.outbox.names()
        first: dict[int, str] = {}
        for name in queued:
            first.setdefault(self.outbox.job_of(name), name)
        present = set(queued)
        return all(first[self.outbox.job_of(n)] in self._tried for n in names if n in present)

    def _loop(self) -> None:
        while not self._stop.is_set() and self.alive():
            delay = self._pass()
            self._wake.wait(delay)
            self._wake.clear()

    def _pass(self) -> float:
        """Try every event that is due; returns how long to wait before the next pass."""
        now = time.time()
        wait = POLL_SECONDS
        held: set[int] = set()  # jobs whose earlier event is not delivered yet
        names = self.outbox.names()
        listed = set(names)
        self._tried.intersection_update(listed)  # what is gone needs no memory
        self._retry = {n: r for n, r in self._retry.items() if n in listed}
        for name in names:
            if self._stop.is_set():
                break
            job = self.outbox.job_of(name)
            if job in held:
                continue
            age = now - self.outbox.queued_at(name)
            if age < SETTLE_SECONDS:
                wait = min(wait, SETTLE_SECONDS - age)
                held.add(job)
                continue
            failures, due = self._retry.get(name, (0, 0.0))
            if due > time.monotonic():
                wait = min(wait, due - time.monotonic())
                held.add(job)
                continue
            try:
                result = self.outbox.deliver(name, self.send)
            except Exception as exc:  # noqa: BLE001 - a requester that cannot be reached
                failures += 1
                self._tried.add(name)
                if age > KEEP_SECONDS:
                    log.warning("%s %s given up after %d attempts over %.0f s: %s",
                                self.label, name, failures, age, exc)
                    self.outbox.drop(name)
                    self._retry.pop(name, None)
                    continue
                pause = min(_RETRY_MAX, _RETRY_FIRST * 2 ** (failures - 1))
                (log.warning if failures == 1 else log.debug)(
                    "%s %s not delivered (attempt %d, next in %.0f s): %s",
                    self.label, name, failures, pause, exc)
                self._retry[name] = (failures, time.monotonic() + pause)
                wait = min(wait, pause)
                held.add(job)
                continue
            if result is None:  # another sender has it: later events of the job wait
                held.add(job)
                wait = min(wait, 0.2)
                continue
            self._tried.add(name)
            self._retry.pop(name, None)
        return max(0.01, wait)
