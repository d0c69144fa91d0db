"""QIDO-RS under a resource (``/studies/A/series``) answered another study's series when the
query named it (``?StudyInstanceUID=B``): the query's key won over the path's (QA s23). The
path's resource now bounds the answer: a key naming another study or series matches nothing;
one naming this one (or a list holding it) changes nothing. Also: ``accept=`` with an unescaped
``+`` and the ETag of gzipped metadata."""

from __future__ import annotations

import gzip
import json
import urllib.request
from collections.abc import Iterator

import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.http import get, stow
from archivist.testing.server import ServerProcess

A, B = new_uid(), new_uid()
A1, A2, B1 = new_uid(), new_uid(), new_uid()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("scope")
    objects = []
    for n, (study, series) in enumerate([(A, A1), (A, A2), (B, B1)]):
        make_instance(tmp / f"{n}.dcm", study_uid=study, series_uid=series)
        objects.append((tmp / f"{n}.dcm").read_bytes())
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    assert stow(srv.url, objects)[0] == 200
    yield srv
    srv.stop()


def _uids(server: ServerProcess, path: str, tag: str) -> list[str]:
    status, body = get(f"{server.url}/dicomweb/{path}", "application/dicom+json")
    assert status == 200, body
    return sorted(item[tag]["Value"][0] for item in json.loads(body or b"[]"))


@pytest.mark.parametrize("path, expected", [
    (f"studies/{A}/series?StudyInstanceUID={B}", []),
    (f"studies/{A}/series?StudyInstanceUID={A}", sorted([A1, A2])),
    (f"studies/{A}/series?StudyInstanceUID={B},{A}", sorted([A1, A2])),
    (f"studies/{A}/series", sorted([A1, A2])),
    (f"studies/{A}/instances?StudyInstanceUID={B}", []),
    (f"studies/{A}/series/{A1}/instances?SeriesInstanceUID={A2}", []),
    (f"studies/{A}/series/{A1}/instances?SeriesInstanceUID={B1}", []),
    (f"studies/{A}/series/{A1}/instances?SeriesInstanceUID={A1}", [A1]),
], ids=["other-study", "same-study", "list-holding-it", "no-key", "instances-other-study",
        "other-series-same-study", "other-series-other-study", "same-series"])
def test_the_path_bounds_the_answer(server: ServerProcess, path: str,
                                    expected: list[str]) -> None:
    assert _uids(server, path, "0020000E") == expected


def test_accept_parameter_with_an_unescaped_plus(server: ServerProcess) -> None:
    status, body = get(f"{server.url}/dicomweb/studies?StudyInstanceUID={A}"
                       "&accept=application/dicom+json")
    assert status == 200, body
    assert [item["0020000D"]["Value"] for item in json.loads(body)] == [[A]]
    status, body = get(f"{server.url}/dicomweb/studies?accept=text/html")
    assert status == 406


def test_gzipped_metadata_has_an_etag_of_its_own(server: ServerProcess) -> None:
    url = f"{server.url}/dicomweb/studies/{A}/series/{A1}/metadata"
    tags = {}
    for coding in ("gzip", "identity"):
        req = urllib.request.Request(url, headers={"Accept-Encoding": coding})
        with urllib.request.urlopen(req, timeout=20) as resp:
            body = resp.read()
            if resp.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            assert len(json.loads(body)) == 1
            tags[coding] = resp.headers["ETag"]
            assert "Accept-Encoding" in resp.headers["Vary"]
    assert tags["gzip"] != tags["identity"]
    for coding, tag in tags.items():  # each revalidates its own representation
        req = urllib.request.Request(url, headers={"Accept-Encoding": coding,
                                                   "If-None-Match": tag})
        try:
            urllib.request.urlopen(req, timeout=20)
            status = 200
        except urllib.error.HTTPError as err:
            status = err.code
        assert status == 304
