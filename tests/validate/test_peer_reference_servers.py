"""check-peer against Archivist itself (a real `archivist serve`) and against Orthanc."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from archivist.testing.server import ServerProcess, free_port
from archivist.validate.peer import FAIL, PASS, WARN, PeerOptions, probe_peer

SERVICES = ("association", "C-ECHO", "C-STORE", "C-MOVE", "C-GET")


def _find_checks(report):  # type: ignore[no-untyped-def]
    return [c for c in report.checks if c.name.startswith("C-FIND")]


def _failures(report):  # type: ignore[no-untyped-def]
    return [c.to_dict() for c in report.checks if c.outcome == FAIL]


def test_check_peer_against_archivist(tmp_path: Path) -> None:
    move_port = free_port()
    server = ServerProcess(tmp_path / "data",
                           extra_args=["--peer", f"PROBE=127.0.0.1:{move_port}"])
    server.start()
    try:
        report = probe_peer(PeerOptions("127.0.0.1", server.dicom_port, "ARCHIVIST",
                                        move_aet="PROBE", move_port=move_port, timeout=10))
    finally:
        server.stop()
    assert report.ok, _failures(report)
    for name in SERVICES:
        assert report.outcome(name) == PASS, name
    assert report.outcome("called AE title check") == PASS  # we reject unknown called AEs
    assert report.implementation_version_name == "ARCHIVIST_0.1.0"
    finds = _find_checks(report)
    assert len(finds) >= 4 and all(c.outcome == PASS for c in finds), [c.name for c in finds]


@pytest.mark.skipif(shutil.which("Orthanc") is None, reason="Debian's orthanc is not installed")
def test_check_peer_against_orthanc(tmp_path: Path) -> None:
    from legacy_peers import start_orthanc

    move_port = free_port()
    peer = start_orthanc(tmp_path / "orthanc", dest_aet="PROBE", dest_port=move_port)
    try:
        report = probe_peer(PeerOptions("127.0.0.1", peer.port, "ORTHANC", move_aet="PROBE",
                                        move_port=move_port, timeout=10))
    finally:
        peer.stop()
    for name in SERVICES:
        assert report.outcome(name) in (PASS, WARN), (name, _failures(report))
    finds = _find_checks(report)
    assert finds and all(c.outcome != FAIL for c in finds), _failures(report)
    # Orthanc is configured here not to check the called AE title: check-peer must notice.
    assert report.outcome("called AE title check") != PASS
