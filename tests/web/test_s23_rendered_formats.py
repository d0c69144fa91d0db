"""Rendered media types PS3.18 Table 8.7.4-1 requires beside JPEG: image/gif for images,
text/html (the default) and text/plain for a Structured Report; WADO-URI's contentType read by
q value; a window of width 1 thresholds at c - 0.5 (PS3.3 C.11.2.1.2.1) (QA s23)."""

from __future__ import annotations

import io
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image

from archivist.testing.http import get, stow
from archivist.testing.server import ServerProcess
from archivist.web.dicomweb.pixels import _window

CT = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
SR = pydicom.dcmread(pydicom.data.get_testdata_file("test-SR.dcm"))


def _path(ds: pydicom.Dataset) -> str:
    return f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/" \
        f"{ds.SOPInstanceUID}"


def _uri(ds: pydicom.Dataset, content_type: str) -> str:
    return "wado?" + urllib.parse.urlencode({
        "requestType": "WADO", "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID,
        "contentType": content_type})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("formats")
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    files = [pydicom.data.get_testdata_file(n) for n in ("CT_small.dcm", "test-SR.dcm")]
    assert stow(srv.url, [Path(f).read_bytes() for f in files])[0] == 200
    yield srv
    srv.stop()


def test_window_of_width_one() -> None:
    data = np.arange(8, dtype=np.float64)
    _window(data, 4.0, 1.0, "LINEAR")
    assert data.tolist() == [0, 0, 0, 0, 255, 255, 255, 255]


@pytest.mark.parametrize("resource", ["rendered", "thumbnail", "frames/1/rendered"])
def test_gif_rendered(server: ServerProcess, resource: str) -> None:
    status, body = get(f"{server.url}/dicomweb/{_path(CT)}/{resource}", "image/gif")
    assert status == 200, body[:200]
    image = Image.open(io.BytesIO(body))
    assert image.format == "GIF"
    if resource != "thumbnail":
        assert image.size == (CT.Columns, CT.Rows)


def test_report_as_html_by_default(server: ServerProcess) -> None:
    status, body = get(f"{server.url}/dicomweb/{_path(SR)}/rendered", "*/*")
    assert status == 200, body[:200]
    text = body.decode()
    assert text.startswith("<!DOCTYPE html>") and "<h1>Diagnosis</h1>" in text
    # Values are text, never markup: the report's "&%$§"!()<>{}/;" is escaped.
    assert "&lt;&gt;{}" in text and "()<>" not in text
    assert "Sample Code 1 (99_OFFIS_DCMTK, 2222)" in text
    assert text.count("<ul>") == text.count("</ul>") and text.count("<li>") == text.count("</li>")


def test_report_as_plain_text(server: ServerProcess) -> None:
    status, body = get(f"{server.url}/dicomweb/{_path(SR)}/rendered", "text/plain")
    assert status == 200
    lines = body.decode().splitlines()
    assert lines[0] == "Diagnosis"
    assert "Completion: COMPLETE" in lines
    item = next(line for line in lines if "Sample Code 1" in line)
    parent = lines[lines.index(item) - 1]
    # A child is indented under its parent.
    assert len(item) - len(item.lstrip()) > len(parent) - len(parent.lstrip())


def test_report_refused_as_an_image(server: ServerProcess) -> None:
    status, body = get(f"{server.url}/dicomweb/{_path(SR)}/rendered", "image/jpeg")
    assert status == 406 and b"Structured Report" in body


def test_wado_uri_content_type_by_q_value(server: ServerProcess) -> None:
    status, body = get(f"{server.url}/{_uri(CT, 'image/png;q=0,image/jpeg')}")
    assert status == 200 and Image.open(io.BytesIO(body)).format == "JPEG"
    status, body = get(f"{server.url}/{_uri(CT, 'image/jpeg;q=0.2,image/png')}")
    assert status == 200 and Image.open(io.BytesIO(body)).format == "PNG"
    status, body = get(f"{server.url}/{_uri(CT, 'image/gif')}")
    assert status == 200 and Image.open(io.BytesIO(body)).format == "GIF"
    status, _ = get(f"{server.url}/{_uri(CT, 'image/png;q=0')}")
    assert status == 406


def test_wado_uri_report_as_text(server: ServerProcess) -> None:
    status, body = get(f"{server.url}/{_uri(SR, 'text/plain')}")
    assert status == 200 and body.decode().startswith("Diagnosis\n")
    status, body = get(f"{server.url}/{_uri(SR, 'text/html')}")
    assert status == 200 and b"<h1>Diagnosis</h1>" in body
