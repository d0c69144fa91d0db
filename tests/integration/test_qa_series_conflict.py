"""A Series Instance UID reused under another study, against a real `archivist serve` (QA
finding L1): the object used to be filed under the first study (the second study showed 0
series and 1 instance, a query by its Study Instance UID found nothing, and retrieval returned
it under the wrong study). It is refused by C-STORE (DCMTK storescu: 0xC000 with an Error
Comment naming the conflict), STOW-RS (Failure Reason 0xC000) and ``archivist import``; nothing
of it is stored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess
from conftest import dcmtk_tool

pytestmark = pytest.mark.timeout(180)

CONFLICT = "Series Instance UID already belongs to another study"


def _find(srv: ServerProcess, level: str, **keys: str) -> list[Dataset]:
    ae = AE(ae_title="QASCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    out = []
    try:
        for status, ident in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
            if status.Status in (0xFF00, 0xFF01):
                out.append(ident)
            else:
                assert status.Status == 0x0000
    finally:
        assoc.release()
    return out


def _storescu(srv: ServerProcess, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk_tool("storescu"), "-d", "-aec", "ARCHIVIST", "127.0.0.1", str(srv.dicom_port),
         str(path)], check=False, capture_output=True, text=True, timeout=60,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"})


def test_series_of_another_study_is_refused_everywhere(server: ServerProcess, dcmtk: None,
                                                       tmp_path: Path) -> None:
    study1, study2, study3, series_uid = new_uid(), new_uid(), new_uid(), new_uid()
    patient = f"QA{new_uid()[-10:]}"
    a, b, c = tmp_path / "a.dcm", tmp_path / "b.dcm", tmp_path / "c.dcm"
    make_instance(a, study_uid=study1, series_uid=series_uid, patient_id=patient)
    make_instance(b, study_uid=study2, series_uid=series_uid, patient_id=patient,
                  instance_number=2)
    make_instance(c, study_uid=study3, series_uid=series_uid, patient_id=patient,
                  instance_number=3)

    first = _storescu(server, a)
    assert first.returncode == 0, first.stderr
    second = _storescu(server, b)
    out = second.stdout + second.stderr
    assert "0xc000" in out.lower(), out
    assert CONFLICT in out, out  # the Error Comment (64 characters: the reason comes first)

    # STOW-RS: the same refusal, as a Failure Reason with the comment.
    body = (b"--QA\r\nContent-Type: application/dicom\r\n\r\n" + b.read_bytes()
            + b"\r\n--QA--\r\n")
    r = requests.post(f"{server.url}/dicomweb/studies", data=body, timeout=60, headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=QA'})
    assert r.status_code == 409, r.text
    (failed,) = r.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]
    assert failed["00000902"]["Value"][0].startswith(CONFLICT)

    # archivist import, on the same data directory while the server runs.
    imp = subprocess.run([sys.executable, "-m", "archivist.cli.main", "import", "-q",
                          "--data", str(server.data_dir), str(c)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert imp.returncode == 1, imp.stdout + imp.stderr
    assert f"rejected {c.name}: {CONFLICT}" in imp.stdout.replace(str(c), c.name), imp.stdout
    assert study1 in imp.stdout

    # Only the first object is in the archive, under its own study; counts and queries agree.
    studies = _find(server, "STUDY", PatientID=patient, StudyInstanceUID="",
                    NumberOfStudyRelatedSeries="", NumberOfStudyRelatedInstances="")
    assert [(s.StudyInstanceUID, int(s.NumberOfStudyRelatedSeries),
             int(s.NumberOfStudyRelatedInstances)) for s in studies] == [(study1, 1, 1)]
    assert _find(server, "IMAGE", StudyInstanceUID=study2, SeriesInstanceUID="",
                 SOPInstanceUID="") == []
    images = _find(server, "IMAGE", StudyInstanceUID=study1, SeriesInstanceUID="",
                   SOPInstanceUID="", InstanceNumber="")
    assert [(i.SeriesInstanceUID, int(i.InstanceNumber)) for i in images] == [(series_uid, 1)]
    # One blob: the refused objects' bytes were removed.
    assert len([p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]) == 1
