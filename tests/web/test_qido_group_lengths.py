"""QIDO-RS ``includefield=all`` answered the Group Length elements (gggg,0000) of an object
stored with them, at every level, a study's even that of its Pixel Data (QA s22). They
describe the encoding they were read from (retired, PS3.5 7.2) and are no attributes: ingest
no longer keeps them, and rows kept before are answered without them."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from archivist.core.levels import QueryLevel
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.http import stow
from archivist.testing.server import ServerProcess
from archivist.web.dicomweb.qido import _row_attrs

STUDY = new_uid()


def _with_group_lengths(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    for group in (0x0008, 0x0010, 0x0020, 0x0028, 0x7FE0):
        ds.add_new((group << 16), "UL", 1234)
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("grouplen")
    path = tmp / "a.dcm"
    make_instance(path, study_uid=STUDY)
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    assert stow(srv.url, [_with_group_lengths(path)])[0] == 200
    yield srv
    srv.stop()


@pytest.mark.parametrize("level", ["studies", "series", "instances"])
def test_includefield_all_has_no_group_lengths(server: ServerProcess, level: str) -> None:
    url = f"{server.url}/dicomweb/{level}?StudyInstanceUID={STUDY}&includefield=all"
    with urllib.request.urlopen(url, timeout=30) as resp:
        (item,) = json.loads(resp.read())
    assert item["0020000D"]["Value"] == [STUDY]
    assert [tag for tag in item if tag.endswith("0000")] == []


def test_rows_kept_with_group_lengths_are_answered_without_them() -> None:
    attrs = {"00080000": {"vr": "UL", "Value": [40]},
             "00080060": {"vr": "CS", "Value": ["CT"]},
             "7FE00000": {"vr": "UL", "Value": [105406]}}
    row = {"instance.attrs": json.dumps(attrs), "study.attrs": json.dumps(attrs)}
    assert _row_attrs(row, QueryLevel.IMAGE) == {"00080060": {"vr": "CS", "Value": ["CT"]}}
    assert _row_attrs(row, QueryLevel.STUDY) == {}
