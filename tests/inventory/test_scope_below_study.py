# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""A scope key below STUDY level over plain C-FIND (QA s22): every scope key went into the
STUDY-level query. Orthanc (no relational queries) then matched no study for
``--scope Modality=CT``: ``migrate`` copied nothing and printed its proof; DCMTK's dcmqrscp
ignored the key and every series was copied. Each key is now sent at its own level, and a
study is in scope when some of its series match, as in this archive's own inventories."""

from __future__ import annotations

from pathlib import Path

import pytest
from inventory_helpers import open_archive  # noqa: F401
from legacy_peers import start_orthanc, store

from archivist.inventory.migrate import Migration
from archivist.inventory.remote import Remote
from archivist.inventory.sources import of_remote
from archivist.testing.datasets import make_instance, new_uid

pytestmark = pytest.mark.timeout(300)


def _files(folder: Path) -> dict[str, list[str]]:
    """Study A: a CT series of 3 and an OT series of 2; study B: an MR series of 2."""
    folder.mkdir(parents=True)
    made: dict[str, list[str]] = {"CT": [], "OT": [], "MR": []}
    a, b = new_uid(), new_uid()
    for study, modality, n in ((a, "CT", 3), (a, "OT", 2), (b, "MR", 2)):
        series = new_uid()
        for i in range(n):
            ds = make_instance(folder / f"{modality}{i}.dcm", study_uid=study, series_uid=series,
                               modality=modality, instance_number=i + 1)
            made[modality].append(str(ds.SOPInstanceUID))
    return made


def test_modality_scope_over_plain_find(open_archive, tmp_path: Path) -> None:
    made = _files(tmp_path / "files")
    peer = start_orthanc(tmp_path / "orthanc", dest_aet="ARCHIVIST", dest_port=1)
    archive = open_archive(tmp_path / "data")
    try:
        store(tmp_path / "files", peer.aet, peer.port)
        source = of_remote(Remote.parse(peer.address), "INSTANCE", [("Modality", "CT")],
                           method="find")
        (study,) = source.studies.values()
        (series,) = study.series.values()
        assert series.modality == "CT" and sorted(series.instances) == sorted(made["CT"])
        # At STUDY level the series walk only decides which studies are in scope.
        studies = of_remote(Remote.parse(peer.address), "STUDY", [("Modality", "CT")],
                            method="find")
        assert list(studies.studies) == [study.study_instance_uid]
        assert not studies.studies[study.study_instance_uid].series
        report = Migration(archive, Remote.parse(peer.address), method="get",
                           scope=[("Modality", "CT")]).run()
        assert report.retrieved == 3, report
        assert report.complete, report.proof
        assert archive.index.counts()["instance"] == 3
    finally:
        peer.stop()
