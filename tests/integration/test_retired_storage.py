"""Retired storage SOP classes that older modalities still send (ultrasound and nuclear
medicine before 1993, the trial SR classes) are taken by C-STORE and can be retrieved."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pydicom
import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess
from conftest import dcmtk_tool

pytestmark = pytest.mark.timeout(180)

RETIRED = {
    "1.2.840.10008.5.1.4.1.1.6": "US",  # Ultrasound Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.3": "US",  # Ultrasound Multi-frame Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.5": "NM",  # Nuclear Medicine Image Storage (Retired)
}


def test_storescu_sends_retired_classes_and_getscu_takes_them_back(
        server: ServerProcess, tmp_path: Path) -> None:
    study = new_uid()
    files = []
    for n, (sop_class, modality) in enumerate(RETIRED.items()):
        path = tmp_path / f"retired{n}.dcm"
        make_instance(path, study_uid=study, sop_class_uid=sop_class, modality=modality,
                      validate_uids=False)
        files.append(path)
    env = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}
    sent = subprocess.run([dcmtk_tool("storescu"), "-R", "-aec", "ARCHIVIST", "127.0.0.1",
                           str(server.dicom_port), *map(str, files)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert sent.returncode == 0, sent.stderr
    with urllib.request.urlopen(f"{server.url}/api/stats", timeout=30) as r:
        assert json.loads(r.read())["counts"]["instance"] == len(RETIRED)
    out = tmp_path / "got"
    out.mkdir()
    got = subprocess.run([dcmtk_tool("getscu"), "-S", "-aec", "ARCHIVIST", "-od", str(out),
                          "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                          "127.0.0.1", str(server.dicom_port)],
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert got.returncode == 0, got.stderr
    # getscu writes its own File Meta: the data sets must be the ones sent.
    received = sorted(_dataset_bytes(p) for p in out.iterdir())
    assert received == sorted(_dataset_bytes(p) for p in files)


def _dataset_bytes(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    return bytes(ds.SOPClassUID, "ascii") + ds.PixelData + bytes(ds.SOPInstanceUID, "ascii")
