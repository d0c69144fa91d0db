"""Send jobs: "send this study (or series) to that peer", asked for over HTTP and carried out
by whichever ``serve`` worker takes it (the HTTP side cannot speak DIMSE; the DIMSE side runs
them: :mod:`archivist.dimse.send_jobs`).

A job is one JSON file under ``<data>/jobs/send/``, named by time, process and a counter (never
by a UID), written to a temporary name, fsync'd and renamed, so it survives a restart; its
progress and outcome go to ``<name>.state.json`` beside it, written the same way. A runner
locks the job file (``flock``) while it works on it, so one worker runs it; one killed
mid-way leaves the job unfinished and the next runner starts it again (instances already sent
are sent again: peers keep the first copy or replace it). Jobs and their states are removed a
week after they were queued.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SendJobs"]

KEEP_SECONDS = 7 * 24 * 3600.0
_NAME_CHARS = frozenset("0123456789-")


class SendJobs:
    """The send jobs of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = Path(data_dir) / "jobs" / "send"
        self._counter = itertools.count(1)
        #: Jobs seen done (a final state): not read again at each pass of :meth:`run_pending`.
        self._done: set[str] = set()

    # -- queueing and reading (the HTTP side) ----------------------------------------------------

    def queue(self, to: str, study: str, series: str | None, instances: int) -> str:
        """Queue a job durably; returns its name."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._counter):06d}"
        self._write(self.folder / f"{name}.json",
                    {"to": to, "study": study, "series": series, "instances": instances,
                     "queued_at": time.time()})
        return name

    def status(self, name: str) -> dict[str, Any] | None:
        """A job as queued, with its state (``queued``, ``running``, ``done``); None when there
        is no such job (or `name` is not a job name)."""
        if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
            return None
        job = self._read(self.folder / f"{name}.json")
        if job is None:
            return None
        state = self._read(self.folder / f"{name}.state.json") or {"state": "queued"}
        return {"job": name, **job, **state}

    # -- running (the DIMSE side) ----------------------------------------------------------------

    def run_pending(self, run: Callable[[dict[str, Any], Callable[[dict[str, Any]], None]],
                                        dict[str, Any]]) -> int:
        """Run every unfinished job nobody else holds, oldest first; returns how many ran.

        `run(job, report)` carries one out, calling ``report(progress)`` as it goes, and returns
        its outcome (written as the job's state, with ``state: done``).
        """
        ran = 0
        try:
            names = sorted(n[:-5] for n in os.listdir(self.folder)
                           if n.endswith(".json") and not n.endswith(".state.json"))
        except FileNotFoundError:
            return 0
        now = time.time()
        self._done.intersection_update(names)  # removed ones need no memory
        for name in names:
            if name in self._done:
                continue
            path = self.folder / f"{name}.json"
            state_path = self.folder / f"{name}.state.json"
            try:
                queued = int(name.split("-", 1)[0]) / 1e9
            except ValueError:
                continue
            if now - queued > KEEP_SECONDS:
                path.unlink(missing_ok=True)
                state_path.unlink(missing_ok=True)
                continue
            state = self._read(state_path)
            if state is not None and state.get("state") == "done":
                self._done.add(name)
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another worker runs it
                state = self._read(state_path)
                if state is not None and state.get("state") == "done":
                    self._done.add(name)
                    continue
                job = self._read(path)
                if job is None:
                    continue

                def report(progress: dict[str, Any], _path: Path = state_path) -> None:
                    self._write(_path, {"state": "running", **progress})

                report({"started_at": time.time()})
                outcome = run(job, report)
                self._write(state_path, {"state": "done", "finished_at": time.time(),
                                         **outcome})
                self._done.add(name)
                ran += 1
            finally:
                os.close(fd)
        return ran

    # -- files -----------------------------------------------------------------------------------

    @staticmethod
    def _write(path: Path, body: dict[str, Any]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps(body))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            body = json.loads(path.read_text())
        except (FileNotFoundError, ValueError, OSError):
            return None
        return body if isinstance(body, dict) else None
