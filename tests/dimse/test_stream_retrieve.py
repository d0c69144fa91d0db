"""A large stored object goes out of C-GET and C-MOVE as it is read from its file (found by QA:
a 250 MB object took a worker to ~650 MB): byte for byte, and without the workers' memory
growing by the object's size. DCMTK's getscu and storescp on a real ``archivist serve``."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.procs import rss_kb
from archivist.testing.server import ServerProcess, free_port

TOOLS = ("/usr/bin/storescu", "/usr/bin/getscu", "/usr/bin/movescu", "/usr/bin/storescp")
pytestmark = pytest.mark.skipif(not all(os.path.exists(t) for t in TOOLS), reason="DCMTK")
ENV = {**os.environ, "TCP_NODELAY": "1"}
FRAMES = 100  # 512 x 512 x 8-bit x 100 = 26 MB of pixel data


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("stream")
    study = new_uid()
    big = tmp / "big.dcm"
    make_instance(big, study_uid=study, rows=512, columns=512, frames=FRAMES,
                  sop_class_uid="1.2.840.10008.5.1.4.1.1.7.2")  # Multi-frame Grayscale Byte SC
    port = free_port()
    received = tmp / "moved"
    received.mkdir()
    peer = subprocess.Popen(["/usr/bin/storescp", "-aet", "DEST", "-od", str(received),
                             str(port)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_PEERS": f"DEST=127.0.0.1:{port}"})
    srv.start()
    done = subprocess.run(["/usr/bin/storescu", "-aec", "ARCHIVIST", "127.0.0.1",
                           str(srv.dicom_port), str(big)], env=ENV, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    yield {"srv": srv, "study": study, "big": big, "received": received, "tmp": tmp}
    srv.stop()
    peer.terminate()


def _same_pixels(a: Path, b: Path) -> bool:
    return dcmread(a).PixelData == dcmread(b).PixelData


def test_c_get_streams_the_object(setup: dict) -> None:
    srv = setup["srv"]
    out = setup["tmp"] / "got"
    out.mkdir()
    assert srv.proc is not None
    before = rss_kb(srv.proc.pid) * 1024
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(srv.proc.pid) * 1024)  # type: ignore[union-attr]
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        done = subprocess.run(["/usr/bin/getscu", "-S", "-aec", "ARCHIVIST", "-od", str(out),
                               "-k", "QueryRetrieveLevel=STUDY",
                               "-k", f"StudyInstanceUID={setup['study']}", "127.0.0.1",
                               str(srv.dicom_port)], env=ENV, capture_output=True, text=True,
                              timeout=120, check=False)
    finally:
        stop.set()
        sampler.join()
    assert done.returncode == 0, done.stdout + done.stderr
    (got,) = list(out.iterdir())
    assert _same_pixels(got, setup["big"])
    # Held whole (with its PDUs) the 26 MB object took the tree up by 50 MB and more.
    assert peak[0] - before < 20 * 1024 * 1024, (before, peak[0])


def test_c_move_streams_the_object(setup: dict) -> None:
    srv = setup["srv"]
    done = subprocess.run(["/usr/bin/movescu", "-S", "-aec", "ARCHIVIST", "-aem", "DEST",
                           "-k", "QueryRetrieveLevel=STUDY",
                           "-k", f"StudyInstanceUID={setup['study']}", "127.0.0.1",
                           str(srv.dicom_port)], env=ENV, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + 20
    while not list(setup["received"].iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # storescp finishes writing
    (got,) = list(setup["received"].iterdir())
    assert _same_pixels(got, setup["big"])
