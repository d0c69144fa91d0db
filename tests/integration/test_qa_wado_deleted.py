"""An instance whose stored object is gone by the time WADO-RS sends it (deleted while a study
is being downloaded: found by a mixed-load soak) is left out, and the multipart body still ends
with its closing boundary; alone, it is a 404. The body was cut (curl exit 18) and the server
logged "Exception in ASGI application". Simulated here by removing one instance's blob."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.multipart import parts_of
from archivist.testing.server import ServerProcess

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("qadel") / "data")
    server.start()
    yield server
    server.stop()


def test_a_vanished_instance_is_left_out_and_the_body_stays_whole(srv: ServerProcess,
                                                                  tmp_path: Path) -> None:
    study, series = new_uid(), new_uid()
    sops = [new_uid() for _ in range(3)]
    body = b""
    boundary = "qa-deleted-boundary"
    for n, sop in enumerate(sops):
        path = tmp_path / f"{n}.dcm"
        make_instance(path, study_uid=study, series_uid=series, sop_uid=sop,
                      instance_number=n + 1)
        body += (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                 + path.read_bytes() + b"\r\n")
    body += f"--{boundary}--\r\n".encode()
    r = requests.post(f"{srv.url}/dicomweb/studies", data=body, timeout=60, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 200, r.text
    blobs = [p for p in (srv.data_dir / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 3
    blobs[0].unlink()  # one object gone, its index row still there
    r = requests.get(f"{srv.url}/dicomweb/studies/{study}", headers={"Accept": ACCEPT},
                     timeout=60)
    assert r.status_code == 200
    parts = parts_of(r)  # asserts the closing boundary
    assert len(parts) == 2
    gone = [sop for sop in sops
            if requests.get(f"{srv.url}/dicomweb/studies/{study}/series/{series}/instances/"
                            f"{sop}", headers={"Accept": ACCEPT}, timeout=60).status_code == 404]
    assert len(gone) == 1
    assert "Exception in ASGI application" not in srv.log()
    assert requests.get(f"{srv.url}/healthz", timeout=10).status_code == 200
