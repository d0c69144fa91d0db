# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""A scope key below STUDY level over Repository Query (QA s23): every study of the source was
kept, whether or not any of its series matched, so ``migrate --scope Modality=MR`` from another
Archivist reported the studies without MR as missing ("NOT COMPLETE", exit 1) after copying
every MR instance; ``inventory diff`` likewise. As over plain C-FIND (test_scope_below_study),
each key now goes to its own level and a study is in scope when some of it matches."""

from __future__ import annotations

from pathlib import Path

import pytest
from inventory_helpers import make_server, open_archive  # noqa: F401

from archivist.inventory.migrate import Migration
from archivist.inventory.remote import Remote
from archivist.inventory.sources import of_remote
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.http import stow

pytestmark = pytest.mark.timeout(300)


def _objects(folder: Path) -> tuple[list[bytes], dict[str, list[str]], dict[str, str]]:
    """Study A: a CT series of 3 and an OT series of 2; study B: an MR series of 2."""
    folder.mkdir(parents=True)
    made: dict[str, list[str]] = {"CT": [], "OT": [], "MR": []}
    studies = {"A": new_uid(), "B": new_uid()}
    data = []
    for study, modality, n in (("A", "CT", 3), ("A", "OT", 2), ("B", "MR", 2)):
        series = new_uid()
        for i in range(n):
            path = folder / f"{modality}{i}.dcm"
            ds = make_instance(path, study_uid=studies[study], series_uid=series,
                               modality=modality, instance_number=i + 1)
            made[modality].append(str(ds.SOPInstanceUID))
            data.append(path.read_bytes())
    return data, made, studies


def test_scope_below_study_over_repository_query(make_server, open_archive,
                                                 tmp_path: Path) -> None:
    data, made, studies = _objects(tmp_path / "files")
    source = make_server(data=tmp_path / "source")
    assert stow(source.url, data)[0] == 200
    remote = Remote.parse(f"ARCHIVIST@127.0.0.1:{source.dicom_port}")
    for modality, study in (("MR", "B"), ("CT", "A")):
        inv = of_remote(remote, "INSTANCE", [("Modality", modality)], method="rq")
        assert list(inv.studies) == [studies[study]], modality
        (series,) = inv.studies[studies[study]].series.values()
        assert sorted(series.instances) == sorted(made[modality])
    # An instance key: only the series holding a match, only the studies holding one.
    inv = of_remote(remote, "SERIES", [("InstanceNumber", "3")], method="rq")
    assert list(inv.studies) == [studies["A"]]
    (series,) = inv.studies[studies["A"]].series.values()
    assert series.modality == "CT" and not series.instances
    # At STUDY level the walk below only decides which studies are in scope.
    inv = of_remote(remote, "STUDY", [("Modality", "MR")], method="rq")
    assert list(inv.studies) == [studies["B"]] and not inv.studies[studies["B"]].series
    archive = open_archive(tmp_path / "data")
    report = Migration(archive, remote, method="get", scope=[("Modality", "MR")]).run()
    assert report.retrieved == 2, report
    assert report.complete, report.proof
    assert archive.index.counts()["instance"] == 2
