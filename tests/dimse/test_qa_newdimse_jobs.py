"""Send jobs (:mod:`archivist.archive.jobs`) as the ``serve`` workers run them: each worker looks
for unfinished jobs every second, so a week of finished jobs must not be read again at every
pass (5,000 finished jobs cost each worker ~0.12 s of every second before)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archivist.archive.jobs import SendJobs


def test_a_finished_job_is_not_read_again(tmp_path: Path) -> None:
    jobs = SendJobs(tmp_path)
    names = [jobs.queue("PEER", "1.2.3", None, 1) for _ in range(3)]
    ran: list[dict[str, Any]] = []

    def run(job: dict[str, Any], report: Any) -> dict[str, Any]:
        ran.append(job)
        return {"sent": 1, "total": 1, "failed": []}

    assert jobs.run_pending(run) == 3
    # Its state can no longer be read (here: a folder where the file was): a runner that read
    # it again would take the job for unfinished and send the study a second time.
    state = jobs.folder / f"{names[0]}.state.json"
    state.unlink()
    state.mkdir()
    assert jobs.run_pending(run) == 0
    assert len(ran) == 3
    # A job queued later still runs.
    jobs.queue("PEER", "1.2.4", None, 1)
    assert jobs.run_pending(run) == 1
    assert [j["study"] for j in ran] == ["1.2.3", "1.2.3", "1.2.3", "1.2.4"]
