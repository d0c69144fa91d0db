"""The viewer's single-page-app fallback answers browsers, not API clients with a wrong path.

Unknown paths under ``/`` answer the viewer's ``index.html`` (OHIF's client-side routes such as
``/viewer?StudyInstanceUIDs=...``). A DICOMweb client configured with another archive's root
(Orthanc's ``/dicom-web``) or without the root (``/studies``) used to get that page with a 200,
which it then failed to parse as DICOM JSON, with nothing saying why. Now the fallback only goes
to requests that accept HTML (a browser's navigation names ``text/html``; no Accept header, or
``*/*``, accepts it too); others get a JSON 404, which names ``/dicomweb`` when the path looks
like a DICOMweb one. A misspelt DICOMweb root is never a viewer route: it is a 404 for browsers
too. A real ``archivist serve`` with a tiny stand-in build (the real OHIF is exercised by
tests/browser).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from test_viewer import INDEX, _request, make_bundle

from archivist.testing.server import ServerProcess

DICOM_JSON = "application/dicom+json"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("fallback")
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(make_bundle(tmp / "ohif"))})
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("path", ["/dicom-web/studies", "/dicom-web/studies/1.2.3/metadata",
                                  "/DICOMweb/studies", "/dicomWeb/series", "/dicom-web"])
@pytest.mark.parametrize("accept", [DICOM_JSON, "*/*", None, BROWSER])
def test_misspelt_dicomweb_root_is_a_404_naming_dicomweb(server: ServerProcess, path: str,
                                                         accept: str | None) -> None:
    status, headers, body = _request(server.url + path, {"Accept": accept} if accept else {})
    assert status == 404, body[:200]
    assert headers["content-type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["status"] == 404 and "/dicomweb" in answer["detail"], answer


@pytest.mark.parametrize("path", ["/studies", "/studies/1.2.3/series", "/instances"])
def test_rootless_dicomweb_resource_for_an_api_client(server: ServerProcess, path: str) -> None:
    status, headers, body = _request(server.url + path + "?PatientID=X", {"Accept": DICOM_JSON})
    assert status == 404 and headers["content-type"].startswith("application/json")
    assert "/dicomweb" in json.loads(body)["detail"]


@pytest.mark.parametrize("accept", [DICOM_JSON, "application/json",
                                    'multipart/related; type="application/dicom"', "image/jpeg",
                                    "text/html;q=0, application/json"])
def test_unknown_path_for_an_api_client_is_a_json_404(server: ServerProcess, accept: str) -> None:
    status, headers, body = _request(server.url + "/viewer/nothing", {"Accept": accept})
    assert status == 404 and body != INDEX
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "not found"


@pytest.mark.parametrize("accept", [BROWSER, "text/html", "*/*", "text/*", None,
                                    "application/json, */*;q=0.1"])
@pytest.mark.parametrize("path", ["/viewer?StudyInstanceUIDs=1.2.3", "/studies", "/localbasic"])
def test_browsers_still_get_the_viewer(server: ServerProcess, path: str,
                                       accept: str | None) -> None:
    status, headers, body = _request(server.url + path, {"Accept": accept} if accept else {})
    assert (status, body) == (200, INDEX)
    assert "accept" in headers["vary"].lower().replace("accept-encoding", "")


def test_files_of_the_build_do_not_depend_on_accept(server: ServerProcess) -> None:
    for path in ("/", "/index.html", "/assets/logo.svg"):
        status, _, _ = _request(server.url + path, {"Accept": DICOM_JSON})
        assert status == 200, path


def test_without_a_build_api_clients_get_json_too(tmp_path_factory: pytest.TempPathFactory,
                                                  ) -> None:
    """Without the OHIF build, the page saying how to get it is for browsers."""
    tmp = tmp_path_factory.mktemp("nobuild")
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "absent")})
    srv.start()
    try:
        status, headers, body = _request(srv.url + "/studies", {"Accept": DICOM_JSON})
        assert status == 404 and headers["content-type"].startswith("application/json")
        assert "/dicomweb" in json.loads(body)["detail"]
        status, headers, _ = _request(srv.url + "/viewer", {"Accept": BROWSER})
        assert status == 404 and headers["content-type"].startswith("text/html")
        status, headers, _ = _request(srv.url + "/", {"Accept": DICOM_JSON})
        assert status == 200 and headers["content-type"].startswith("text/html")
    finally:
        srv.stop()
