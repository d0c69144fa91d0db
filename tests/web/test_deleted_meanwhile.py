"""A stored object that disappears between the index lookup and the read (deleted or replaced by
another request meanwhile, found by QA with concurrent clients): rendered and frames answer 404,
not 500; series metadata leaves it out instead of failing with the storage key in its message.
Simulated deterministically by removing the object's file under a running ``archivist serve``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.http import get as _get
from archivist.testing.http import stow
from archivist.testing.server import ServerProcess

STUDY, SERIES = new_uid(), new_uid()
SOPS = [new_uid(), new_uid()]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("gone")
    parts = []
    for n, sop in enumerate(SOPS):
        path = tmp / f"{n}.dcm"
        make_instance(path, study_uid=STUDY, series_uid=SERIES, sop_uid=sop,
                      instance_number=n + 1)
        parts.append(path.read_bytes())
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    assert stow(srv.url, parts)[0] == 200
    # The second instance's file goes away behind the index's back.
    con = sqlite3.connect(srv.data_dir / "index.sqlite")
    (key,) = con.execute("SELECT storage_key FROM instance WHERE sop_instance_uid = ?",
                         (SOPS[1],)).fetchone()
    con.close()
    (path,) = (srv.data_dir / "blobs").rglob(key)
    path.unlink()
    yield srv
    srv.stop()


@pytest.mark.parametrize("tail", ["rendered", "frames/1"])
def test_rendered_and_frames_answer_404(server: ServerProcess, tail: str) -> None:
    status, body = _get(f"{server.url}/dicomweb/studies/{STUDY}/series/{SERIES}/instances/"
                        f"{SOPS[1]}/{tail}")
    assert status == 404, body[:300]
    assert "deleted meanwhile" in json.loads(body)["error"]


def test_series_metadata_leaves_it_out(server: ServerProcess) -> None:
    status, body = _get(f"{server.url}/dicomweb/studies/{STUDY}/series/{SERIES}/metadata",
                        "application/dicom+json")
    assert status == 200, body[:300]
    sops = [item["00080018"]["Value"][0] for item in json.loads(body)]
    assert sops == [SOPS[0]]
    status, body = _get(f"{server.url}/dicomweb/studies/{STUDY}/series/{SERIES}/instances/"
                        f"{SOPS[1]}/metadata", "application/dicom+json")
    assert status == 404 and b"blob" not in body
