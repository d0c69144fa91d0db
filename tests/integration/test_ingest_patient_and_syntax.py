"""Ingest edge cases over STOW-RS: an object of a stored study that names another Patient ID is
filed under the study's patient (as dcm4chee's default, MERGED) and the sender is told (a
warning, a log line without patient data; nothing when the Patient ID agrees); an object whose
File Meta names no known transfer syntax is refused with that reason."""

from __future__ import annotations

import json
import urllib.error
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
        body = json.loads(r.read())
        # 202 when stored with a warning (PS3.18 Table 10.5.3-1), 200 otherwise
        warned = any("00081196" in i for i in body.get("00081199", {}).get("Value", []))
        assert r.status == (202 if warned else 200)
        return body  # type: ignore[no-any-return]


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


def test_an_unknown_transfer_syntax_is_refused_with_its_reason(server: ServerProcess,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "ts.dcm"
    make_instance(path)
    data = path.read_bytes().replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.9.9.1\x00", 1)
    req = urllib.request.Request(
        f"{server.url}/dicomweb/studies", method="POST",
        data=b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
                 "Accept": "application/dicom+json"})
    try:
        urllib.request.urlopen(req, timeout=60)
        raise AssertionError("stored")
    except urllib.error.HTTPError as exc:
        assert exc.code == 409
        body = json.loads(exc.read())
    failed = body["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [0xC000]
    assert "not a transfer syntax" in failed["00000902"]["Value"][0]
    assert "Traceback" not in server.log()
