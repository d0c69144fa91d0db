# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""``archivist inventory diff`` against a live repository read by Repository Query: a series
and an instance deleted since the reference inventory come out as removed from operational use,
with their Reason for Removal, as they do when the other side is a DICOM or JSON inventory
(QA: the walk did not ask for removed records, so the diff said only "12 instances")."""

from __future__ import annotations

from pathlib import Path

from inventory_helpers import fill, make_server, open_archive  # noqa: F401

from archivist.archive.delete import Deletion
from archivist.index.removal import REASONS
from archivist.inventory.diff import diff
from archivist.inventory.remote import Remote
from archivist.inventory.sources import of_archive, of_remote


def test_live_diff_names_deletions_with_their_reason(open_archive, make_server,
                                                     tmp_path: Path) -> None:
    data = tmp_path / "srv"
    archive = open_archive(data)
    made = fill(archive, tmp_path / "in", studies=3, series=2, instances=2)
    before = of_archive(archive)
    gone_series, gone_sop = made[0], made[4]  # study 0 series 0; study 1 series 0 instance 0
    deletion = Deletion(archive.index, archive.blobs)
    deletion.delete(gone_series["study"], gone_series["series"], reason=REASONS["safety"])
    deletion.delete(gone_sop["study"], gone_sop["series"], gone_sop["sop"],
                    reason=REASONS["retention"])
    archive.close()
    server = make_server(data=data)
    live = of_remote(Remote("ARCHIVIST", "127.0.0.1", server.dicom_port, dimse_timeout=30),
                     "INSTANCE", method="rq", page_size=3)
    assert live.counts() == {"studies": 3, "series": 5, "instances": 9}
    result = diff(before, live)
    missing = sorted((d.level, d.uid, d.detail, d.reason) for d in result.differences
                     if d.kind == "missing")
    assert missing == sorted([
        ("SERIES", gone_series["series"], "removed from operational use",
         "113037 DCM Rejected for Patient Safety Reasons"),
        ("INSTANCE", gone_sop["sop"], "removed from operational use",
         "113039 DCM Data Retention Policy Expired"),
    ])
    assert not [d for d in result.differences if d.kind == "extra"]
