"""An inventory of an archive that has deleted things must not read every tombstone per series.

Found by a 10-minute mixed-load soak (QA): with ~12,000 instances in ~3,800 series and ~500
deletions, ``archivist inventory create --level instance`` took two minutes and ``archivist
inventory diff FILE archive`` four, almost all of it decoding the same tombstones' kept rows
(JSON) again for every series: the builder asks for each series' instances including removed
ones, and the removed rows were fetched for the whole level and matched in Python. The
tombstone table has indexed UID columns; the query on them now narrows what is read first.

The archive is filled and emptied through a real server (STOW-RS and ``DELETE /api/...``); the
inventory is then built from its data directory. How many tombstone rows are decoded is counted
(a probe around the decoder, which keeps its behaviour): it must grow with the tombstones, not
with tombstones x series.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from archivist.archive.archive import Archive
from archivist.config import Settings
from archivist.inventory import records
from archivist.inventory.sources import of_archive
from archivist.testing.datasets import make_instance, new_uid

STUDIES = 30


def _stow(url: str, files: list[Path]) -> None:
    body = b""
    for f in files:
        body += b"--QASOAK\r\nContent-Type: application/dicom\r\n\r\n" + f.read_bytes() + b"\r\n"
    body += b"--QASOAK--\r\n"
    req = urllib.request.Request(
        url + "/dicomweb/studies", data=body, method="POST",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=QASOAK',
                 "Accept": "application/dicom+json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        answer = json.loads(resp.read())
    assert "00081198" not in answer, answer  # no Failed SOP Sequence
    assert len(answer["00081199"]["Value"]) == len(files)


def _delete(url: str, path: str) -> None:
    req = urllib.request.Request(url + path + "?reason=qc", method="DELETE")
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200


def test_instance_inventory_reads_each_tombstone_a_bounded_number_of_times(
        make_server, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    srv = make_server("--workers", "1")
    files: list[Path] = []
    layout: list[tuple[str, list[tuple[str, str]]]] = []
    for s in range(STUDIES):
        study = new_uid()
        series = []
        for n in range(2):
            se, sop = new_uid(), new_uid()
            path = tmp_path / "files" / f"{s}-{n}.dcm"
            path.parent.mkdir(exist_ok=True)
            make_instance(path, study_uid=study, series_uid=se, sop_uid=sop,
                          patient_id=f"P{s}", series_number=n + 1)
            files.append(path)
            series.append((se, sop))
        layout.append((study, series))
    _stow(srv.url, files)
    # Remove the second series of half the studies, and a third of the studies whole.
    removed_series = {}
    removed_studies = set()
    for s, (study, series) in enumerate(layout):
        if s % 3 == 0:
            _delete(srv.url, f"/api/studies/{study}")
            removed_studies.add(study)
        elif s % 2 == 0:
            _delete(srv.url, f"/api/studies/{study}/series/{series[1][0]}")
            removed_series[series[1][0]] = series[1][1]
    srv.stop()
    tombstones = 2 * len(removed_series) + 5 * len(removed_studies)  # rows at every level

    decoded = 0
    real = records.decode_row

    def counting(text: str):  # type: ignore[no-untyped-def]
        nonlocal decoded
        decoded += 1
        return real(text)

    monkeypatch.setattr(records, "decode_row", counting)
    archive = Archive.open(Settings(data_dir=srv.data_dir))
    try:
        inv = of_archive(archive, "INSTANCE")
    finally:
        archive.close()

    # What the inventory says is still right: live records held, removed ones listed as removed.
    for study, series in layout:
        if study in removed_studies:
            assert study not in inv.studies and inv.removed.get(study) == "STUDY"
            continue
        held = inv.studies[study].series
        for se, sop in series:
            if se in removed_series:
                assert se not in held and inv.removed.get(se) == "SERIES"
            else:
                assert sop in held[se].instances
    # Each tombstone row read a few times at most, not once per series of the archive
    # (before: about 700 decodes here, growing as tombstones x series).
    assert decoded <= 2 * tombstones, (decoded, tombstones)
