"""STOW-RS response module (PS3.18 Table I.1-1), against a real `archivist serve` (QA finding).

Retrieve URL (0008,1190) is Type 2: it was missing when the parts belonged to two studies or
none was stored. Referenced SOP Sequence (0008,1199) is Type 1C (required when something was
stored): it was sent empty when nothing was, and a 409 named the study of the URL as where the
stored instances could be retrieved although nothing had been stored.
"""

from __future__ import annotations

import io

import pytest
import requests

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("qastow") / "data")
    server.start()
    yield server
    server.stop()


def _part10(tmp_path_factory: pytest.TempPathFactory, **kw) -> bytes:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("qastowfiles") / f"{new_uid()}.dcm"
    make_instance(path, **kw)
    return path.read_bytes()


def _stow(srv: ServerProcess, parts: list[bytes], study: str | None = None) -> requests.Response:
    body = io.BytesIO()
    for part in parts:
        body.write(b"--QA\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n")
    body.write(b"--QA--\r\n")
    url = f"{srv.url}/dicomweb/studies" + (f"/{study}" if study else "")
    return requests.post(url, data=body.getvalue(), headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=QA'})


def test_one_study_stored_gives_its_retrieve_url(srv, tmp_path_factory) -> None:
    study = new_uid()
    r = _stow(srv, [_part10(tmp_path_factory, study_uid=study)])
    assert r.status_code == 200
    body = r.json()
    assert body["00081190"]["Value"] == [f"{srv.url}/dicomweb/studies/{study}"]
    assert len(body["00081199"]["Value"]) == 1
    assert "00081198" not in body


def test_two_studies_have_an_empty_retrieve_url(srv, tmp_path_factory) -> None:
    r = _stow(srv, [_part10(tmp_path_factory, study_uid=new_uid()),
                    _part10(tmp_path_factory, study_uid=new_uid())])
    assert r.status_code == 200
    body = r.json()
    assert body["00081190"] == {"vr": "UR"}
    assert len(body["00081199"]["Value"]) == 2


@pytest.mark.parametrize("in_url", [False, True])
def test_nothing_stored_has_no_referenced_sequence(srv, tmp_path_factory, in_url) -> None:
    study = new_uid()
    parts = [b"not DICOM at all"]
    if in_url:  # an instance of another study than the URL's
        parts = [_part10(tmp_path_factory, study_uid=new_uid())]
    r = _stow(srv, parts, study if in_url else None)
    assert r.status_code == 409
    body = r.json()
    assert "00081199" not in body
    assert body["00081190"] == {"vr": "UR"}
    (failed,) = body["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC409 if in_url else 0xC000]
