"""``archivist migrate --via move`` from a source that does not know our AE title (QA s20).

Found by hand against Orthanc, as README's migration section reads: every C-MOVE ended with
"retrieve ended with status 0xC000 (0 failed)" (Orthanc: "Unknown modality for AET:
ARCHIVIST") and nothing said that the source must know our AE title at --port. Here the
source is DCMTK's dcmqrscp, whose host table lacks us (0xA801).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.net import wait_listening
from archivist.testing.server import free_port

DCMQRSCP = "/usr/bin/dcmqrscp"
STORESCU = "/usr/bin/storescu"
pytestmark = pytest.mark.skipif(not (os.path.exists(DCMQRSCP) and os.path.exists(STORESCU)),
                                reason="DCMTK dcmqrscp and storescu needed")
ENV = {**os.environ, "TCP_NODELAY": "1"}


def test_a_move_nobody_answers_names_our_ae_title_and_port(tmp_path: Path) -> None:
    store = tmp_path / "qr"
    store.mkdir()
    port = free_port()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 4\n"
                      "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
                      f"AETable BEGIN\nLEGACY {store} RW (10, 100mb) ANY\nAETable END\n")
    proc = subprocess.Popen([DCMQRSCP, "-c", str(config)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, what="dcmqrscp")
        make_instance(tmp_path / "ct.dcm", study_uid=new_uid())
        stored = subprocess.run([STORESCU, "-aec", "LEGACY", "127.0.0.1", str(port),
                                 str(tmp_path / "ct.dcm")], env=ENV, capture_output=True,
                                timeout=30, check=False)
        assert stored.returncode == 0, stored.stderr
        move_port = free_port()
        result = subprocess.run(
            [sys.executable, "-m", "archivist.cli.main", "migrate", "-q", "--from",
             f"LEGACY@127.0.0.1:{port}", "--via", "move", "--port", str(move_port),
             "--attempts", "1", "--data", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60, check=False,
            env={**ENV, "COLUMNS": "200"})
    finally:
        proc.terminate()
        proc.wait(10)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT COMPLETE" in result.stdout
    assert f"our AE title ARCHIVIST at this machine's port {move_port}" in result.stderr
    assert "LEGACY knows ARCHIVIST" in result.stderr
