"""check-peer against a pynetdicom Q/R SCP and DCMTK dcmqrscp, on loopback (PS3.4, PS3.8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from validate_peers import DCMQRSCP, dcmqrscp, free_port, pynetdicom_qr_scp

from archivist.validate.peer import FAIL, PASS, PeerOptions, probe_peer, status_defined

SERVICES = ("association", "C-ECHO", "C-STORE", "C-MOVE", "C-GET")


class TestStatusCodes:
    def test_defined(self) -> None:
        assert status_defined("C-STORE", 0xA700)
        assert status_defined("C-STORE", 0xB007)
        assert status_defined("C-FIND", 0xFF01)
        assert status_defined("C-MOVE", 0xA801)
        assert not status_defined("C-FIND", 0xA801)
        assert not status_defined("C-ECHO", 0xFF00)


class TestPynetdicomPeer:
    def test_conformant_peer(self) -> None:
        move_port = free_port()
        with pynetdicom_qr_scp(destinations={"PROBE": move_port}) as (port, store):
            report = probe_peer(PeerOptions("127.0.0.1", port, "QRSCP", move_aet="PROBE",
                                            move_port=move_port, timeout=5))
        assert report.ok, [c.to_dict() for c in report.checks if c.outcome == FAIL]
        for name in SERVICES:
            assert report.outcome(name) == PASS, name
        finds = [c for c in report.checks if c.name.startswith("C-FIND")]
        assert len(finds) == 6 and all(c.outcome == PASS for c in finds)
        assert report.max_pdu and report.max_pdu > 0
        assert "1.2.840.10008.5.1.4.1.1.7" in report.accepted
        assert len(store) == 1
        json.dumps(report.to_dict())

    def test_non_conformant_find_is_reported(self) -> None:
        with pynetdicom_qr_scp(honest=False) as (port, _store):
            report = probe_peer(PeerOptions("127.0.0.1", port, "QRSCP", timeout=5))
        failed = {c.name for c in report.checks if c.outcome == FAIL}
        assert "C-FIND Study Root STUDY no match matching" in failed
        assert "C-FIND Study Root STUDY single value matching" in failed  # keys dropped
        assert not report.ok

    def test_unreachable(self) -> None:
        report = probe_peer(PeerOptions("127.0.0.1", free_port(), "NOBODY", timeout=2))
        assert report.outcome("association") == FAIL
        assert not report.ok


@pytest.mark.skipif(DCMQRSCP is None, reason="DCMTK dcmqrscp not installed")
class TestDcmqrscp:
    def test_dcmqrscp(self, tmp_path: Path) -> None:
        move_port = free_port()
        with dcmqrscp(tmp_path, {"PROBE": move_port}) as port:
            report = probe_peer(PeerOptions("127.0.0.1", port, "DCMQRSCP", move_aet="PROBE",
                                            move_port=move_port, timeout=5))
        assert report.ok, [c.to_dict() for c in report.checks if c.outcome == FAIL]
        for name in SERVICES:
            assert report.outcome(name) == PASS, name
        assert report.outcome("called AE title check") == PASS  # dcmqrscp checks it
        assert report.implementation_version_name.startswith("OFFIS_DCMTK")

    def test_cli_json(self, tmp_path: Path) -> None:
        from archivist.cli.main import app

        with dcmqrscp(tmp_path, {}) as port:
            result = CliRunner().invoke(
                app, ["check-peer", "127.0.0.1", str(port), "--aet", "DCMQRSCP", "--json",
                      "--timeout", "5"],
            )
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["ok"] is True
        assert any(c["name"] == "C-MOVE" and c["outcome"] == "skip" for c in data["checks"])
