"""``GET /api/studies/{study}[/series/{series}]/archive`` on a real ``archivist serve``: a ZIP of
the stored objects, byte for byte, readable by Python's zipfile and by Info-ZIP's unzip."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

STUDY = new_uid()
CT_SERIES = new_uid()
SR_SERIES = new_uid()


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    tmp = tmp_path_factory.mktemp("zip")
    files = tmp / "files"
    files.mkdir()
    # Instance numbers out of file order: the ZIP lists them in viewing order.
    for n in (3, 1, 2):
        make_instance(files / f"ct{n}.dcm", study_uid=STUDY, series_uid=CT_SERIES,
                      instance_number=n, modality="CT", series_number=2,
                      patient_name="ZIP^TEST")
    make_instance(files / "other.dcm", study_uid=STUDY, series_uid=SR_SERIES,
                  instance_number=1, modality="MR", series_number=1, patient_name="ZIP^TEST")
    make_instance(files / "elsewhere.dcm", modality="MR")
    digests = {}
    for path in files.iterdir():
        digests[hashlib.sha256(path.read_bytes()).hexdigest()] = path.name
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "no-viewer")})
    srv.start()
    done = subprocess.run([sys.executable, "-m", "archivist.cli.main", "import", "--quiet",
                           "--data", str(srv.data_dir), str(files)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    yield srv, digests
    srv.stop()


def _entries(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        return {info.filename: zf.read(info) for info in zf.infolist()}


def test_study_zip_holds_every_instance_byte_for_byte(served, tmp_path: Path) -> None:
    srv, digests = served
    status, headers, body = _get(f"{srv.url}/api/studies/{STUDY}/archive")
    assert status == 200, body[:300]
    assert headers["content-type"] == "application/zip"
    assert headers["content-disposition"] == f'attachment; filename="{STUDY}.zip"'
    entries = _entries(body)
    # Series 1 (MR) before series 2 (CT); the CT instances by Instance Number.
    assert list(entries) == ["S001_MR/I00001.dcm", "S002_CT/I00001.dcm", "S002_CT/I00002.dcm",
                             "S002_CT/I00003.dcm"]
    names = [digests.get(hashlib.sha256(data).hexdigest()) for data in entries.values()]
    assert names == ["other.dcm", "ct1.dcm", "ct2.dcm", "ct3.dcm"]
    if shutil.which("unzip"):
        path = tmp_path / "study.zip"
        path.write_bytes(body)
        tested = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True,
                                check=False)
        assert tested.returncode == 0, tested.stdout + tested.stderr


def test_series_zip_holds_that_series_only(served) -> None:
    srv, digests = served
    status, _, body = _get(f"{srv.url}/api/studies/{STUDY}/series/{CT_SERIES}/archive")
    assert status == 200
    entries = _entries(body)
    assert list(entries) == ["S001_CT/I00001.dcm", "S001_CT/I00002.dcm", "S001_CT/I00003.dcm"]
    assert [digests.get(hashlib.sha256(d).hexdigest()) for d in entries.values()] == \
        ["ct1.dcm", "ct2.dcm", "ct3.dcm"]


@pytest.mark.parametrize("path, status", [
    (f"/api/studies/{new_uid()}/archive", 404),
    (f"/api/studies/{STUDY}/series/{new_uid()}/archive", 404),
    ("/api/studies/1.2.x/archive", 400),
    (f"/api/studies/{STUDY}/series/{'1.' * 40}1/archive", 400),
], ids=["unknown-study", "unknown-series", "malformed-study", "series-uid-too-long"])
def test_unknown_and_malformed_uids(served, path: str, status: int) -> None:
    srv, _ = served
    got, headers, body = _get(srv.url + path)
    assert got == status
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["detail"]


def test_study_page_links_the_downloads(served) -> None:
    srv, _ = served
    status, _, body = _get(f"{srv.url}/archive/studies/{STUDY}")
    assert status == 200
    page = body.decode()
    assert f'href="/api/studies/{STUDY}/archive" download' in page
    assert f'href="/api/studies/{STUDY}/series/{CT_SERIES}/archive" download' in page
