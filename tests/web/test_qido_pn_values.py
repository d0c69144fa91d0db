"""QIDO-RS with a stored person name of two values, the second empty (``DOE^J\\``, found by
the mutation fuzz): 200 with the empty value as null (PS3.18 F.2.5), not 500 for every query
that lists the object."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

STUDY = new_uid()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("pn")
    path = tmp / "a.dcm"
    make_instance(path, study_uid=STUDY,
                  extra={"ReferringPhysicianName": ["DOE^J", ""]})
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    req = urllib.request.Request(
        f"{srv.url}/dicomweb/studies", method="POST",
        data=b"--B\r\nContent-Type: application/dicom\r\n\r\n" + path.read_bytes()
        + b"\r\n--B--\r\n",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    yield srv
    srv.stop()


def test_empty_person_name_value_is_null(server: ServerProcess) -> None:
    url = f"{server.url}/dicomweb/studies?StudyInstanceUID={STUDY}&includefield=00080090"
    with urllib.request.urlopen(url, timeout=20) as resp:
        assert resp.status == 200
        (study,) = json.loads(resp.read())
    assert study["00080090"] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^J"}, None]}
    with urllib.request.urlopen(f"{server.url}/dicomweb/studies", timeout=20) as resp:
        assert resp.status == 200
