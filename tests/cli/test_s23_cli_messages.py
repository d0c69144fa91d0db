"""What the commands say (QA s23, the README followed on a fresh clone): ``validate`` written to
a pipe folded each line at 80 columns, splitting a file's path; ``migrate --via move --port`` on
a port in use said only "Address already in use"; ``send`` gave a refused transcode's class
name without its reason."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from archivist.archive.transcode import TranscodeRefused
from archivist.dimse.send import _why
from archivist.errors import InvalidObject
from archivist.testing.http import stow
from archivist.testing.server import ServerProcess


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # A pipe, as a script reads it: no COLUMNS (which would set the width).
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args], check=False,
                          capture_output=True, text=True, timeout=180, env=env)


def test_validate_to_a_pipe_keeps_each_path_on_its_line(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "CT_small.dcm"
    deep.parent.mkdir(parents=True)
    shutil.copy(get_testdata_file("CT_small.dcm"), deep)
    done = _cli("validate", str(deep))
    assert done.returncode == 0, done.stderr
    assert any(str(deep) in line for line in done.stdout.splitlines()), done.stdout


@pytest.fixture
def source(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "source", extra_args=["--workers", "1"])
    srv.start()
    assert stow(srv.url, [Path(get_testdata_file("CT_small.dcm")).read_bytes()])[0] == 200
    yield srv
    srv.stop()


def test_migrate_names_the_port_it_cannot_listen_on(source: ServerProcess,
                                                    tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _cli("migrate", "--data", str(tmp_path / "data"), "--from",
                    f"ARCHIVIST@127.0.0.1:{source.dicom_port}", "--via", "move",
                    "--port", str(port))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and "--port" in done.stderr, done.stderr
    assert "Address already in use" in done.stderr and "Traceback" not in done.stderr


def test_send_gives_the_reason_of_a_refusal() -> None:
    why = _why(TranscodeRefused("the compressed frame declares 3722445056 x 1024 pixels"))
    assert why == "TranscodeRefused: the compressed frame declares 3722445056 x 1024 pixels"
    assert _why(InvalidObject("cannot parse the object")).endswith("cannot parse the object")
    # Another library's message may quote the object's values: its kind only.
    assert _why(ValueError("Patient's Name 'DOE^JOHN' is invalid")) == "ValueError"
