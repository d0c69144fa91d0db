# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""A clean stop (SIGTERM) of ``archivist serve`` in the middle of an Inventory Creation job
releases the job (its owner is cleared), so that the next start resumes it at once instead of
waiting for the lease to expire, as after a crash (test_inventory_restart.py). Both with one
process and with worker processes: the workers ended with ``os._exit`` and did not release
the jobs they held."""

from __future__ import annotations

from pathlib import Path

import pytest
from inventory_helpers import (  # noqa: F401
    fill,
    initiate_job,
    job_row,
    make_server,
    open_archive,
    wait_until,
)
from pynetdicom import AE

from archivist.inventory import INVENTORY_CREATION

STUDIES = 120


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stopped_server_releases_the_job_it_was_running(open_archive, make_server,
                                                          tmp_path: Path, workers: str) -> None:
    data = tmp_path / "srv"
    archive = open_archive(data)
    fill(archive, tmp_path / "in", studies=STUDIES)
    archive.close()
    # One study per leaf (~30 ms each): the job is still running when the server is stopped.
    # The lease is long: a job left owned would wait for it.
    env = {"ARCHIVIST_INVENTORY_STUDIES_PER_INSTANCE": "1",
           "ARCHIVIST_INVENTORY_LEASE_SECONDS": "600"}
    srv = make_server("--workers", workers, data=data, env=env)
    uid = "2.25.4343"
    requester = AE(ae_title="INVREQ")
    requester.add_requested_context(INVENTORY_CREATION)
    assoc = requester.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        assert initiate_job(assoc, uid) == 0x0000
    finally:
        assoc.release()
    wait_until(lambda: (job_row(data, uid) or {}).get("studies_done", 0) >= 3)
    running = job_row(data, uid)
    assert running is not None and running["owner"], running
    assert srv.stop() == 0
    stopped = job_row(data, uid)
    assert stopped is not None
    assert stopped["state"] == "PROCESSING" and stopped["studies_done"] < STUDIES, \
        "the job ended before the stop: nothing was tested"
    assert stopped["owner"] is None, "the stopped server still holds the job"
    # The next start takes it up at once (the lease is 10 minutes).
    make_server("--workers", workers, data=data, env=env)
    wait_until(lambda: (job_row(data, uid) or {}).get("state") == "COMPLETE", timeout=90)
