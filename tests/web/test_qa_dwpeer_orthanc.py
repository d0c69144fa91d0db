"""Orthanc's DICOMweb plugin as a client of a real ``archivist serve``.

Orthanc queries the archive (QIDO-RS), pulls a study, a series and an instance into its own
store (WADO-RS) and pushes instances to the archive (STOW-RS, with and without chunked transfer
encoding); what lands on either side is byte for byte what the other holds. Skipped when Orthanc
or its DICOMweb plugin (Debian's ``orthanc-dicomweb``) is not installed.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from archivist.testing.datasets import new_uid, pydicom_test_file
from archivist.testing.server import ServerProcess, free_port

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("Orthanc") is None or not PLUGIN.exists(),
                       reason="Orthanc with its DICOMweb plugin (orthanc-dicomweb) is needed"),
]

#: pydicom test files in several transfer syntaxes (RLE, JPEG baseline, JPEG 2000, big endian).
FILES = ["MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jp2klossless.dcm",
         "MR_small_bigendian.dcm"]


def _renamed(name: str, study: str, patient: str) -> bytes:
    """A pydicom test file with new UIDs (so it is stored, not answered as already stored)."""
    path = pydicom_test_file(name)
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, new_uid(), new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class Orthanc:
    def __init__(self, tmp: Path, archive_url: str) -> None:
        self.http = free_port()
        config = {
            "Name": "dwpeer", "StorageDirectory": str(tmp / "storage"),
            "IndexDirectory": str(tmp / "storage"), "StorageCompression": False,
            "HttpPort": self.http, "DicomPort": free_port(), "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": {
                "archivist": [f"{archive_url}/dicomweb/"],
                "chunked": {"Url": f"{archive_url}/dicomweb/", "ChunkedTransfers": True}}},
        }
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "orthanc.json").write_text(json.dumps(config))
        self.log = tmp / "orthanc.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(["Orthanc", str(tmp / "orthanc.json")], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-2000:]
            try:
                if requests.get(f"{self.url}/system", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError("Orthanc did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def post(self, path: str, body: Any) -> Any:
        r = requests.post(self.url + path, data=body if isinstance(body, bytes)
                          else json.dumps(body), timeout=60)
        assert r.status_code == 200, r.text[:500]
        return r.json()

    def files_of_patient(self, patient: str) -> dict[str, bytes]:
        """SOP Instance UID -> the file Orthanc keeps, for one Patient ID."""
        ids = self.post("/tools/find", {"Level": "Instance", "Query": {"PatientID": patient}})
        out = {}
        for oid in ids:
            data = requests.get(f"{self.url}/instances/{oid}/file", timeout=30).content
            out[str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)] = data
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Orthanc]]:
    tmp = tmp_path_factory.mktemp("dwpeer-orthanc")
    srv = ServerProcess(tmp / "data", extra_args=["--workers", "1"])
    srv.start()
    orthanc = None
    try:
        orthanc = Orthanc(tmp / "orthanc", srv.url)
        yield srv, orthanc
    finally:
        if orthanc is not None:
            orthanc.stop()
        log = srv.log()
        srv.stop()
        bad = [line for line in log.splitlines()
               if " ERROR archivist" in line or "Exception in ASGI application" in line]
        assert not bad, bad[:5]


def _stored(srv: ServerProcess, data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    r = requests.get(f"{srv.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/"
                     f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
                     headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30)
    assert r.status_code == 200, r.text[:300]
    return r.content


def test_orthanc_queries_and_pulls_byte_for_byte(peers: tuple[ServerProcess, Orthanc]) -> None:
    srv, orthanc = peers
    study = new_uid()
    files = [_renamed(name, study, "PULLED") for name in FILES]
    body = b"".join(b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + f + b"\r\n"
                    for f in files) + b"--XX--\r\n"
    r = requests.post(f"{srv.url}/dicomweb/studies", data=body, timeout=60, headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=XX'})
    assert r.status_code == 200, r.text

    found = orthanc.post("/dicom-web/servers/archivist/qido",
                         {"Uri": "/studies", "Arguments": {"PatientID": "PULLED"}})
    assert [item["0020000D"]["Value"] for item in found] == [study]
    series = orthanc.post("/dicom-web/servers/archivist/qido",
                          {"Uri": f"/studies/{study}/series"})
    assert len(series) == len(FILES)

    # an instance, a series, then the whole study (the rest)
    first = pydicom.dcmread(io.BytesIO(files[0]), stop_before_pixels=True)
    second = pydicom.dcmread(io.BytesIO(files[1]), stop_before_pixels=True)
    orthanc.post("/dicom-web/servers/archivist/retrieve", {"Resources": [{
        "Study": study, "Series": first.SeriesInstanceUID,
        "Instance": first.SOPInstanceUID}]})
    orthanc.post("/dicom-web/servers/archivist/retrieve", {"Resources": [{
        "Study": study, "Series": second.SeriesInstanceUID}]})
    assert len(orthanc.files_of_patient("PULLED")) == 2
    orthanc.post("/dicom-web/servers/archivist/retrieve", {"Resources": [{"Study": study}]})
    pulled = orthanc.files_of_patient("PULLED")
    assert len(pulled) == len(FILES)
    for data in files:
        sop = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        assert pulled[sop] == _stored(srv, data)


@pytest.mark.parametrize("server", ["archivist", "chunked"])
def test_orthanc_pushes_byte_for_byte(peers: tuple[ServerProcess, Orthanc], server: str) -> None:
    srv, orthanc = peers
    patient = f"PUSHED-{server}"
    study = new_uid()
    ids = [orthanc.post("/instances", _renamed(name, study, patient))["ID"] for name in FILES]
    answer = orthanc.post(f"/dicom-web/servers/{server}/stow", {"Resources": ids})
    assert int(answer["InstancesCount"]) == len(FILES)
    for data in orthanc.files_of_patient(patient).values():
        assert _stored(srv, data) == data
