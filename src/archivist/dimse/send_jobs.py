"""Runs the send jobs queued over HTTP (``POST /api/studies/{study}/send``,
:mod:`archivist.archive.jobs`): a thread in each ``serve`` worker looks for them every second
and sends each as ``archivist send`` does (:func:`archivist.dimse.send.send_instances`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from archivist.archive.jobs import SendJobs
from archivist.core.levels import QueryLevel

if TYPE_CHECKING:
    from archivist.archive.archive import Archive

log = logging.getLogger("archivist.dimse.send")

POLL_SECONDS = 1.0


class SendJobRunner:
    """A thread that carries out queued send jobs."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.jobs = SendJobs(archive.settings.data_dir)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="send-jobs", daemon=True)

    def start(self) -> SendJobRunner:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.jobs.run_pending(self._run)
            except Exception:
                log.exception("send jobs")
            self._stop.wait(POLL_SECONDS)

    def _run(self, job: dict[str, Any],
             report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        from archivist.dimse.send import send_instances

        to = str(job.get("to") or "")
        peer = self.archive.settings.peer(to)
        if peer is None:
            return {"sent": 0, "failed": [], "error": f"{to} is not a configured peer"}
        pairs = [("StudyInstanceUID", str(job.get("study") or ""))]
        if job.get("series"):
            pairs.append(("SeriesInstanceUID", str(job["series"])))
        query = self.archive.search.query_from_pairs(QueryLevel.IMAGE, pairs)
        refs = list(self.archive.retrieve.instances(query))
        if not refs:
            return {"sent": 0, "failed": [], "error": "nothing is stored under those UIDs now"}
        done = {"sent": 0, "failures": 0}

        def progress(_ref: Any, outcome: str) -> None:
            done["sent" if outcome != "failure" else "failures"] += 1
            if (done["sent"] + done["failures"]) % 25 == 0:
                report({"sent": done["sent"], "total": len(refs)})

        try:
            result = send_instances(self.archive, peer.host, peer.port, peer.aet, refs,
                                    progress=progress)
        except Exception as exc:  # noqa: BLE001 - refused, unreachable, timed out
            reason = str(exc) or type(exc).__name__
            log.warning("send job to %s: cannot associate: %s", peer.aet, reason)
            return {"sent": 0, "total": len(refs), "failed": [],
                    "error": f"cannot associate with {peer.aet} at {peer.host}:{peer.port}: "
                             f"{reason}"}
        log.info("send job to %s: %d of %d instances sent", peer.aet, result.sent, len(refs))
        return {"sent": result.sent, "total": len(refs), "warnings": result.warnings,
                "failed": [{"sop": sop, "reason": why} for sop, why in result.failed]}
