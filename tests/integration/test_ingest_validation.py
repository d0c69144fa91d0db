"""Validation on ingest against a real `archivist serve`: reject over C-STORE (DCMTK storescu
and pynetdicom) with the status and Error Comment checked, warn keeping the findings (HTTP and
CLI), off keeping nothing, and `archivist import` showing the reason."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess
from conftest import dcmtk_tool

AET = "ARCHIVIST"
VALIDATION_REJECTED = 0xC003


#: The bit depths the CT Image Module allows (PS3.3 C.8.2.1.1.4): an incomplete CT whose first
#: error is a missing attribute, not its 8 bits.
CT_BITS = {"BitsAllocated": 16, "BitsStored": 12, "HighBit": 11}


def complete_ct(path: Path, **kw: Any) -> pydicom.Dataset:
    """A generated CT image that the CT Image IOD accepts without findings."""
    extra = {
        "PatientPosition": "HFS", "FrameOfReferenceUID": new_uid(),
        "PositionReferenceIndicator": "", "SliceThickness": "1.0",
        "ImagePositionPatient": [0, 0, 0], "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "PixelSpacing": [0.5, 0.5], "KVP": "120", "RescaleIntercept": "-1024",
        "RescaleSlope": "1", "AcquisitionNumber": 1,
        # 16 bits, 12 stored: what the CT Image Module allows (PS3.3 C.8.2.1.1.4)
        "BitsAllocated": 16, "BitsStored": 12, "HighBit": 11,
    }
    return make_instance(path, extra=extra, **kw)


def get_json(srv: ServerProcess, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"{srv.url}{path}", timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def storescu(srv: ServerProcess, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk_tool("storescu"), "-d", "-aec", AET, "127.0.0.1", str(srv.dicom_port),
         *map(str, files)], capture_output=True, text=True, timeout=60, check=False)


def pynetdicom_store(srv: ServerProcess, path: Path) -> pydicom.Dataset:
    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
    assert assoc.is_established
    try:
        return assoc.send_c_store(pydicom.dcmread(path))
    finally:
        assoc.release()


def archivist(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args],
                          capture_output=True, text=True, timeout=120, env=full_env,
                          check=False)


def _class_server(factory: pytest.TempPathFactory, name: str,
                  env: dict[str, str]) -> Iterator[ServerProcess]:
    srv = ServerProcess(factory.mktemp(name) / "data", env=env).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def reject_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _class_server(tmp_path_factory, "reject", {"ARCHIVIST_VALIDATION_POLICY": "reject"})


@pytest.fixture(scope="module")
def warn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _class_server(tmp_path_factory, "warn", {})


def stored_files(data: Path) -> list[Path]:
    blobs = data / "blobs"
    return [p for p in blobs.rglob("*") if p.is_file()] if blobs.exists() else []


@pytest.mark.usefixtures("dcmtk")
class TestReject:
    """One server for the class (the reject_server fixture)."""

    @pytest.fixture
    def srv(self, reject_server: ServerProcess) -> ServerProcess:
        return reject_server

    def test_storescu_gets_c003_and_the_rule(self, srv: ServerProcess, tmp_path: Path) -> None:
        bad = make_instance(tmp_path / "bad.dcm", extra=CT_BITS)
        r = storescu(srv, tmp_path / "bad.dcm")
        out = r.stdout + r.stderr
        assert "0xc003" in out.lower(), out
        comment = next(line for line in out.splitlines() if "(0000,0902)" in line)
        assert "[iod.type2c-missing: Type 2C attribute PatientPosition is missing]" in comment
        assert "#  64" in comment  # Error Comment is LO: at most 64 characters
        stats = get_json(srv, "/api/stats")[1]
        assert len(stored_files(srv.data_dir)) == stats["counts"]["instance"]
        status, _ = get_json(srv, f"/api/instances/{bad.SOPInstanceUID}/validation")
        assert status == 404

    def test_pynetdicom_gets_c003_and_a_comment_naming_the_rule(self, srv: ServerProcess,
                                                                 tmp_path: Path) -> None:
        bad = make_instance(tmp_path / "bad.dcm", extra={"PatientSex": "X"})
        before = get_json(srv, "/api/stats")[1]
        rsp = pynetdicom_store(srv, tmp_path / "bad.dcm")
        assert rsp.Status == VALIDATION_REJECTED
        comment = str(rsp.ErrorComment)
        assert comment.startswith("iod.") and ":" in comment and len(comment) <= 64
        good = complete_ct(tmp_path / "good.dcm")
        assert pynetdicom_store(srv, tmp_path / "good.dcm").Status == 0x0000
        assert get_json(srv, f"/api/instances/{bad.SOPInstanceUID}/validation")[0] == 404
        stats = get_json(srv, "/api/stats")[1]
        assert stats["counts"]["instance"] == before["counts"]["instance"] + 1
        assert stats["validation"]["validated"] == before["validation"]["validated"] + 1
        assert stats["validation"]["with_errors"] == 0
        status, body = get_json(srv, f"/api/instances/{good.SOPInstanceUID}/validation")
        assert status == 200 and body["validated"] and body["errors"] == 0
        assert len(stored_files(srv.data_dir)) == stats["counts"]["instance"]

    def test_import_shows_the_reason(self, tmp_path: Path) -> None:
        (tmp_path / "in").mkdir()
        make_instance(tmp_path / "in" / "bad.dcm", extra=CT_BITS)
        complete_ct(tmp_path / "in" / "good.dcm")
        r = archivist("import", "--data", str(tmp_path / "data"), "-q", str(tmp_path / "in"),
                      env={"ARCHIVIST_VALIDATION_POLICY": "reject"})
        assert r.returncode == 1, r.stdout + r.stderr
        assert "1 stored" in r.stdout and "1 rejected" in r.stdout
        rejected = next(line for line in r.stdout.splitlines() if "rejected" in line
                        and "bad.dcm" in line)
        assert "iod.type2c-missing: Type 2C attribute PatientPosition is missing" in rejected
        assert "more errors" in rejected


@pytest.mark.usefixtures("dcmtk")
class TestWarn:
    @pytest.fixture
    def server(self, warn_server: ServerProcess) -> ServerProcess:
        return warn_server

    def test_stored_and_findings_over_http_and_cli(self, server: ServerProcess,
                                                   tmp_path: Path) -> None:
        ds = make_instance(tmp_path / "bad.dcm")
        r = storescu(server, tmp_path / "bad.dcm")
        assert r.returncode == 0 and "0xc003" not in (r.stdout + r.stderr).lower()
        sop = str(ds.SOPInstanceUID)
        status, body = get_json(server, f"/api/instances/{sop}/validation")
        assert status == 200
        assert body["sop_instance_uid"] == sop and body["validated"] is True
        assert body["errors"] == len([f for f in body["findings"] if f["severity"] == "error"])
        assert body["errors"] >= 5
        finding = next(f for f in body["findings"] if f["path"] == "/PixelSpacing(0028,0030)")
        assert finding == {
            "severity": "error", "rule_id": "iod.type1-missing",
            "path": "/PixelSpacing(0028,0030)", "module": "Image Plane", "iod": "CT Image",
            "message": finding["message"], "reference": finding["reference"]}
        assert "PixelSpacing" in finding["message"] and finding["reference"].startswith("PS3.3")
        assert get_json(server, "/api/stats")[1]["validation"]["with_errors"] == 1
        assert get_json(server, "/api/validation")[1] == {
            "policy": "warn", "validated": 1, "with_errors": 1, "with_warnings": 0}
        # The CLI reads the same findings while the server runs.
        cli = archivist("validate", "--stored", sop, "--data", str(server.data_dir), "--json")
        assert cli.returncode == 1, cli.stderr
        assert json.loads(cli.stdout) == body
        text = archivist("validate", "--stored", sop, "--data", str(server.data_dir))
        assert "iod.type1-missing" in text.stdout and "PixelSpacing" in text.stdout

    def test_unknown_and_malformed_uids(self, server: ServerProcess) -> None:
        status, body = get_json(server, "/api/instances/1.2.3.4/validation")
        assert status == 404 and "1.2.3.4" in body["detail"]
        status, body = get_json(server, "/api/instances/not-a-uid/validation")
        assert status == 400
        cli = archivist("validate", "--stored", "1.2.3.4", "--data", str(server.data_dir))
        assert cli.returncode == 2 and "not stored" in cli.stderr


@pytest.mark.usefixtures("dcmtk")
class TestOff:
    def test_nothing_about_validation_is_kept(self, make_server: Any, tmp_path: Path) -> None:
        srv = make_server(env={"ARCHIVIST_VALIDATION_POLICY": "off"})
        ds = make_instance(tmp_path / "bad.dcm")
        r = storescu(srv, tmp_path / "bad.dcm")
        assert r.returncode == 0
        status, body = get_json(srv, f"/api/instances/{ds.SOPInstanceUID}/validation")
        assert status == 200
        assert (body["validated"], body["errors"], body["findings"]) == (False, None, [])
        assert get_json(srv, "/api/stats")[1]["validation"] == {
            "validated": 0, "with_errors": 0, "with_warnings": 0}
