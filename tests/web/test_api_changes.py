"""``GET /api/changes`` on a real ``archivist serve``: stores and a delete, read page by page."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

STUDY, SERIES = new_uid(), new_uid()
SOPS = [new_uid() for _ in range(3)]


def _call(url: str, method: str = "GET") -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("changes")
    for n, sop in enumerate(SOPS):
        make_instance(tmp / f"{n}.dcm", study_uid=STUDY, series_uid=SERIES, sop_uid=sop,
                      instance_number=n + 1)
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "no-viewer")})
    srv.start()
    for n in range(3):  # one STOW-RS at a time: the change log's order is the order stored
        body = (b"--B\r\nContent-Type: application/dicom\r\n\r\n"
                + (tmp / f"{n}.dcm").read_bytes() + b"\r\n--B--\r\n")
        req = urllib.request.Request(
            f"{srv.url}/dicomweb/studies", data=body, method="POST",
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
    status, _ = _call(f"{srv.url}/api/studies/{STUDY}/series/{SERIES}/instances/{SOPS[1]}",
                      "DELETE")
    assert status == 200
    yield srv
    srv.stop()


def test_paged_in_order_without_gaps(server: ServerProcess) -> None:
    status, first = _call(f"{server.url}/api/changes?limit=2")
    assert status == 200
    assert [c["sop"] for c in first["changes"]] == SOPS[:2]
    assert {c["kind"] for c in first["changes"]} == {"stored"}
    assert first["done"] is False
    _, rest = _call(f"{server.url}/api/changes?since={first['last']}&limit=1000")
    assert rest["done"] is True
    kinds = [(c["kind"], c["level"], c["sop"]) for c in rest["changes"]]
    assert kinds[0] == ("stored", "IMAGE", SOPS[2])
    assert any(sop == SOPS[1] and kind != "stored" for kind, _, sop in kinds[1:]), kinds
    seqs = [c["seq"] for c in first["changes"] + rest["changes"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(c["study"] == STUDY and c["at"].endswith("+00:00") for c in rest["changes"])
    _, after = _call(f"{server.url}/api/changes?since={rest['last']}")
    assert after == {"changes": [], "last": rest["last"], "done": True}


@pytest.mark.parametrize("query", ["since=x", "limit=0", "limit=1001", "since=-1"])
def test_bad_parameters(server: ServerProcess, query: str) -> None:
    status, body = _call(f"{server.url}/api/changes?{query}")
    assert status == 400 and body["detail"]
