"""Inventory Creation scopes as a third-party pynetdicom SCU, curl-like HTTP client and the CLI
see them against a real ``archivist serve`` (found by QA):

- a scope on Study Update DateTime (the incremental inventory of PS3.17 YYYY.7.5) matched no
  study at all;
- a study removed from operational use was listed whatever the series or instance keys of the
  scope (a removed CT-only study in an inventory scoped to Modality MR);
- a binary scope key (Pixel Data) or a binary numeric one (Rows, US) was accepted with 0x0000
  and the job then ended in FAILURE ("internal error"), and ``archivist inventory create
  --scope Rows=4`` died with a traceback: the Scope of Inventory Sequence could not be written;
- an Initiate with a Transaction UID that is not a UID was accepted and written into the
  inventory (a UI value).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from inventory_helpers import fill
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import InventoryCreation, InventoryGet, InventoryStorage

WELL_KNOWN = "1.2.840.10008.5.1.4.1.1.201.1.1"
MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"


def _n_action(port: int, action_type: int, info: Dataset) -> Dataset:
    """One N-ACTION; returns the response's whole command set as received on the wire."""
    commands: list[Dataset] = []
    ae = AE(ae_title="QASCU")
    ae.dimse_timeout = 30
    ae.add_requested_context(InventoryCreation)
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVIST",
                         evt_handlers=[(evt.EVT_DIMSE_RECV,
                                        lambda e: commands.append(e.message.command_set))])
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(info, action_type, InventoryCreation, WELL_KNOWN)
    finally:
        assoc.release()
    assert status is not None and commands
    return commands[-1]


def _initiate(port: int, level: str, groups: dict[str, dict[str, Any]],
              uid: str | None = None) -> tuple[str, Dataset]:
    info = Dataset()
    info.TransactionUID = uid or generate_uid()
    info.InventoryLevel = level
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 192"
    for name, keys in groups.items():
        group = Dataset()
        for keyword, (vr, value) in keys.items():
            group.add_new(keyword, vr, value)
        setattr(item, name, [group])
    info.ScopeOfInventorySequence = [item] if groups else []
    return str(info.TransactionUID), _n_action(port, 11, info)


def _http(srv: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}{path}", data=data,
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _finished(srv: Any, uid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        code, job = _http(srv, "GET", f"/api/inventories/jobs/{uid}")
        assert code == 200, job
        if job["state"] not in ("PROCESSING", "PAUSED"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def _inventory_get(port: int, root: str) -> Dataset:
    """The root Inventory instance over Inventory GET (C-STORE on the same association)."""
    got: list[Dataset] = []

    def on_store(event: Any) -> int:
        got.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="QASCU")
    ae.add_requested_context(InventoryGet)
    ae.add_requested_context(InventoryStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVIST",
                         ext_neg=[build_role(InventoryStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    ident = Dataset()
    ident.SOPInstanceUID = root
    try:
        statuses = [int(s.Status) for s, _ in assoc.send_c_get(ident, InventoryGet)
                    if s is not None and "Status" in s]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000 and len(got) == 1
    return got[0]


def _studies(srv: Any, job: dict[str, Any]) -> dict[str, Dataset]:
    assert job["state"] == "COMPLETE", job
    root = _inventory_get(srv.dicom_port, job["root"])
    return {str(s.StudyInstanceUID): s for s in root.InventoriedStudiesSequence}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """5 CT studies and 2 MR studies; then one CT and one MR study removed (tombstones)."""
    from archivist.archive.archive import Archive
    from archivist.config import load_settings
    from archivist.testing.server import ServerProcess

    tmp = tmp_path_factory.mktemp("sup223scope")
    data = tmp / "data"
    archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
    try:
        ct = fill(archive, tmp / "ct", studies=3, patient_prefix="CT")
        other = fill(archive, tmp / "other", studies=2, patient_prefix="OT")
        mr = fill(archive, tmp / "mr", studies=2, patient_prefix="MR", modality="MR")
    finally:
        archive.close()
    srv = ServerProcess(data, extra_args=["--workers", "1"]).start()
    try:
        yield _Setup(srv, ct, other, mr)
    finally:
        srv.stop()


class _Setup:
    def __init__(self, srv: Any, ct: list[dict[str, Any]], other: list[dict[str, Any]],
                 mr: list[dict[str, Any]]) -> None:
        self.srv = srv
        self.ct_studies = sorted({r["study"] for r in ct})
        self.mr_studies = sorted({r["study"] for r in mr})
        # remove one CT-only study and one MR study (tombstones)
        self.removed_ct, self.removed_mr = self.ct_studies[0], self.mr_studies[0]
        for uid in (self.removed_ct, self.removed_mr):
            code, body = _http(srv, "DELETE", f"/api/studies/{uid}")
            assert code == 200, body
        self.all_studies = set(self.ct_studies) | {r["study"] for r in other} | set(
            self.mr_studies)


def test_study_update_datetime_scope(server: _Setup) -> None:
    """Incremental inventories (PS3.17 YYYY.7.5): Study Update DateTime range in the scope."""
    srv = server.srv
    uid, rsp = _initiate(srv.dicom_port, "STUDY",
                         {"RangeMatchingSequence": {"StudyUpdateDateTime": ("DT", "20000101-")}})
    assert int(rsp.Status) == 0x0000
    studies = _studies(srv, _finished(srv, uid))
    assert set(studies) == server.all_studies  # removed ones too, flagged
    assert studies[server.removed_ct].RemovedFromOperationalUse == "YES"
    uid, rsp = _initiate(srv.dicom_port, "STUDY",
                         {"RangeMatchingSequence": {"StudyUpdateDateTime": ("DT", "21000101-")}})
    assert int(rsp.Status) == 0x0000
    assert _studies(srv, _finished(srv, uid)) == {}
    # the same over HTTP
    code, job = _http(srv, "POST", "/api/inventories",
                      {"level": "study", "scope": {"StudyUpdateDateTime": "20000101-"}})
    assert code == 202, job
    assert set(_studies(srv, _finished(srv, job["transaction_uid"]))) == server.all_studies
    # a malformed value is refused at once (0x0106), not a job that finds nothing
    uid, rsp = _initiate(srv.dicom_port, "STUDY",
                         {"RangeMatchingSequence": {"StudyUpdateDateTime": ("DT", "soon")}})
    assert int(rsp.Status) == 0x0106


def test_removed_from_operational_use_scope(server: _Setup) -> None:
    srv = server.srv
    code, job = _http(srv, "POST", "/api/inventories",
                      {"level": "study", "scope": {"RemovedFromOperationalUse": "YES"}})
    assert code == 202, job
    assert set(_studies(srv, _finished(srv, job["transaction_uid"]))) == {
        server.removed_ct, server.removed_mr}
    code, job = _http(srv, "POST", "/api/inventories",
                      {"level": "study", "scope": {"RemovedFromOperationalUse": "NO"}})
    assert code == 202, job
    assert set(_studies(srv, _finished(srv, job["transaction_uid"]))) == (
        server.all_studies - {server.removed_ct, server.removed_mr})


def test_removed_study_obeys_series_and_instance_scope(server: _Setup) -> None:
    srv = server.srv
    uid, rsp = _initiate(srv.dicom_port, "SERIES",
                         {"GeneralMatchingSequence": {"Modality": ("CS", "MR")}})
    assert int(rsp.Status) == 0x0000
    studies = _studies(srv, _finished(srv, uid))
    assert set(studies) == set(server.mr_studies)
    assert server.removed_ct not in studies  # a removed CT-only study is out of scope
    removed = studies[server.removed_mr]
    assert removed.RemovedFromOperationalUse == "YES"
    assert [s.RemovedFromOperationalUse for s in removed.InventoriedSeriesSequence] == ["YES"]
    uid, rsp = _initiate(srv.dicom_port, "INSTANCE",
                         {"ListOfUIDMatchingSequence": {"SOPClassUID": ("UI", [MR_CLASS])}})
    assert int(rsp.Status) == 0x0000
    assert set(_studies(srv, _finished(srv, uid))) == set(server.mr_studies)


def test_binary_scope_key_is_reported_not_a_failed_job(server: _Setup) -> None:
    srv = server.srv
    uid, rsp = _initiate(srv.dicom_port, "STUDY", {"GeneralMatchingSequence": {
        "PixelData": ("OB", b"\0\1"), "PatientID": ("LO", "CT*")}})
    assert int(rsp.Status) == 0xB010
    assert rsp["AttributeIdentifierList"].VM == 1 and rsp.AttributeIdentifierList == 0x7FE00010
    job = _finished(srv, uid)
    assert job["state"] == "COMPLETE", job  # the other keys still apply
    assert set(_studies(srv, job)) == set(server.ct_studies)
    code, body = _http(srv, "POST", "/api/inventories",
                       {"level": "study", "scope": {"PixelData": "x"}})
    assert code == 400 and "PixelData" in body["error"]


def test_numeric_scope_key(server: _Setup) -> None:
    srv = server.srv
    uid, rsp = _initiate(srv.dicom_port, "INSTANCE",
                         {"GeneralMatchingSequence": {"Rows": ("US", 4)}})
    assert int(rsp.Status) == 0x0000
    job = _finished(srv, uid)
    assert job["state"] == "COMPLETE", job
    root = _inventory_get(srv.dicom_port, job["root"])
    assert root.ScopeOfInventorySequence[0].GeneralMatchingSequence[0].Rows == 4
    assert {str(s.StudyInstanceUID) for s in root.InventoriedStudiesSequence} == (
        server.all_studies)
    uid, rsp = _initiate(srv.dicom_port, "STUDY",
                         {"GeneralMatchingSequence": {"Rows": ("US", 5)}})
    assert _studies(srv, _finished(srv, uid)) == {}


def test_cli_scope_keys(server: _Setup) -> None:
    def cli(*scope: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "archivist.cli.main", "inventory", "create", "--data",
             str(server.srv.data_dir), *[a for s in scope for a in ("--scope", s)]],
            check=False, capture_output=True, text=True, timeout=120)

    ok = cli("Rows=4")
    assert ok.returncode == 0, ok.stderr
    assert "Traceback" not in ok.stderr
    bad = cli("PixelData=x")
    assert bad.returncode == 1 and "PixelData" in bad.stderr and "Traceback" not in bad.stderr
    bad = cli("Rows=four")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    fresh = cli("StudyUpdateDateTime=20000101-")
    assert fresh.returncode == 0 and f"{len(server.all_studies)} studies" in fresh.stdout


@pytest.mark.parametrize("uid", ["not a uid!", "1." + "2" * 70, "1.2.abc"])
def test_initiate_with_an_invalid_transaction_uid(server: _Setup, uid: str) -> None:
    _, rsp = _initiate(server.srv.dicom_port, "STUDY", {}, uid=uid)
    assert int(rsp.Status) == 0x0106
    code, jobs = _http(server.srv, "GET", "/api/inventories/jobs")
    assert code == 200 and uid not in {j["transaction_uid"] for j in jobs}
