"""A Part 10 object whose File Meta names another SOP Class than its data set (QA s22) was
stored as sent over STOW-RS, with both classes in it (answered 200), while a C-STORE
request naming another class than its data set is refused (0xA900). It is refused the same
way now: 0xA900 in the Failed SOP Sequence, nothing stored; the import command refuses it
too (the same ingest)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.http import get, stow
from archivist.testing.server import ServerProcess

MR = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("metaclass") / "data")
    srv.start()
    yield srv
    srv.stop()


def test_a_file_meta_of_another_class_is_refused_with_a900(server: ServerProcess,
                                                           tmp_path: Path) -> None:
    study = new_uid()
    bad, good = tmp_path / "bad.dcm", tmp_path / "good.dcm"
    make_instance(bad, study_uid=study)  # CT Image Storage
    ds = pydicom.dcmread(bad)
    ds.file_meta.MediaStorageSOPClassUID = MR
    ds.preamble = b"\0" * 128
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)  # (True would set the File Meta's class)
    bad.write_bytes(buf.getvalue())
    make_instance(good, study_uid=study)
    status, body = stow(server.url, [bad.read_bytes(), good.read_bytes()])
    assert status == 202, body
    (failed,) = body["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [str(ds.SOPInstanceUID)]
    assert failed["00081197"]["Value"] == [0xA900]
    assert "File Meta" in failed["00000902"]["Value"][0]
    assert len(body["00081199"]["Value"]) == 1
    status, found = get(f"{server.url}/dicomweb/studies/{study}/instances")
    assert status == 200 and len(json.loads(found)) == 1
