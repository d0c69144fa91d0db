"""Forwarding (``forward_to``) from a real ``archivist serve`` (two workers) to a DCMTK
``storescp``: what is stored arrives there, and what is stored while it is down arrives once it
is back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.net import wait_listening
from archivist.testing.server import ServerProcess, free_port

STORESCP, STORESCU = "/usr/bin/storescp", "/usr/bin/storescu"
pytestmark = pytest.mark.skipif(not os.path.exists(STORESCP), reason="DCMTK needed")
ENV = {**os.environ, "TCP_NODELAY": "1"}


def _receiver(port: int, out: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([STORESCP, "-aet", "BACKUP", "-od", str(out), str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc, what="storescp")
    return proc


def _received(out: Path) -> set[str]:
    uids = set()
    for path in out.iterdir():
        try:
            uids.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
        except Exception:  # noqa: BLE001, S110 - a file storescp is still writing
            pass
    return uids


def _wait_for(out: Path, uids: set[str], timeout: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout
    got = _received(out)
    while not uids <= got and time.monotonic() < deadline:
        time.sleep(0.2)
        got = _received(out)
    return got


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("forward")
    port = free_port()
    out = tmp / "received"
    out.mkdir()
    receiver = _receiver(port, out)
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_PEERS": f"BACKUP=127.0.0.1:{port}",
                                           "ARCHIVIST_FORWARD_TO": "BACKUP"})
    srv.start()
    state = {"srv": srv, "out": out, "port": port, "tmp": tmp, "receiver": receiver}
    yield state
    srv.stop()
    state["receiver"].terminate()


def _store(srv: ServerProcess, folder: Path, count: int) -> set[str]:
    folder.mkdir()
    uids = set()
    study = new_uid()
    for n in range(count):
        sop = new_uid()
        make_instance(folder / f"{n}.dcm", study_uid=study, sop_uid=sop, instance_number=n + 1)
        uids.add(sop)
    done = subprocess.run([STORESCU, "-aec", "ARCHIVIST", "127.0.0.1", str(srv.dicom_port),
                           *sorted(map(str, folder.iterdir()))], env=ENV, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return uids


def test_stored_instances_are_forwarded(setup: dict) -> None:
    uids = _store(setup["srv"], setup["tmp"] / "first", 3)
    assert uids <= _wait_for(setup["out"], uids)


def test_instances_stored_while_the_peer_is_down_arrive_later(setup: dict) -> None:
    setup["receiver"].terminate()
    setup["receiver"].wait(10)
    failed = "forwarding to BACKUP: "  # the warning of a failed attempt (not "... starts after")
    before = setup["srv"].log().count(failed)
    uids = _store(setup["srv"], setup["tmp"] / "second", 2)
    # At least one failed attempt, logged (polled: the forwarder looks once a second, later
    # on a loaded machine).
    deadline = time.monotonic() + 30
    while setup["srv"].log().count(failed) <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert setup["srv"].log().count(failed) > before, setup["srv"].log()[-3000:]
    setup["receiver"] = _receiver(setup["port"], setup["out"])
    assert uids <= _wait_for(setup["out"], uids, timeout=60)


def test_forward_to_an_unknown_peer_is_refused(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "archivist.cli.main", "serve", "--data",
                           str(tmp_path / "d")], env={**os.environ,
                                                      "ARCHIVIST_FORWARD_TO": "NOWHERE"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "forward_to names 'NOWHERE'" in done.stderr
