"""An object of a stored study that names another Patient ID is filed under the study's patient
(as dcm4chee's default, MERGED), and the sender is told: a STOW-RS warning, a log line without
patient data; nothing is said when the Patient ID agrees."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess


def _stow(srv: ServerProcess, data: bytes) -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(
        f"{srv.url}/dicomweb/studies", method="POST",
        data=b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
                 "Accept": "application/dicom+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_a_conflicting_patient_id_is_filed_under_the_study_and_reported(
        server: ServerProcess, tmp_path: Path) -> None:
    study, series = new_uid(), new_uid()
    paths = []
    for n, pid in enumerate(("ZZPIDFIRST", "ZZPIDFIRST", "ZZPIDOTHER")):
        path = tmp_path / f"{n}.dcm"
        make_instance(path, study_uid=study, series_uid=series, patient_id=pid,
                      instance_number=n + 1)
        paths.append(path)
    items = [_stow(server, p.read_bytes())["00081199"]["Value"][0] for p in paths]
    assert "00081196" not in items[0] and "00081196" not in items[1]
    assert items[2]["00081196"]["Value"] == [0xB000]  # Warning Reason: coercion
    with urllib.request.urlopen(f"{server.url}/dicomweb/studies?StudyInstanceUID={study}"
                                "&includefield=00100020", timeout=30) as r:
        found = json.loads(r.read())
    assert [s["00100020"]["Value"] for s in found] == [["ZZPIDFIRST"]]
    log = server.log()
    assert log.count("Patient ID differs from the one its study was stored under") == 1
    assert "ZZPIDOTHER" not in log and "ZZPIDFIRST" not in log
