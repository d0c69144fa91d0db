"""A WADO-RS or WADO-URI request naming one instance is answered only when the study and
series it names are the instance's own: the instance is looked up by its SOP Instance UID
(one index lookup), then its study and series are compared with the request's. A stored
instance asked for under another study or series is a 404, as it was when the general search
matched all three UIDs; an invalid UID is still a 400."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.http import get as _get
from archivist.testing.http import stow
from archivist.testing.server import ServerProcess

STUDY, SERIES, SOP = new_uid(), new_uid(), new_uid()
OTHER_STUDY, OTHER_SERIES, OTHER_SOP = new_uid(), new_uid(), new_uid()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("paths")
    parts = []
    # A second study with its own series, so that the wrong study and series below exist.
    for n, (study, series, sop) in enumerate([(STUDY, SERIES, SOP),
                                              (OTHER_STUDY, OTHER_SERIES, OTHER_SOP)]):
        path = tmp / f"{n}.dcm"
        make_instance(path, study_uid=study, series_uid=series, sop_uid=sop)
        parts.append(path.read_bytes())
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    assert stow(srv.url, parts)[0] == 200
    yield srv
    srv.stop()


TAILS = {"": "multipart/related; type=\"application/dicom\"",
         "/metadata": "application/dicom+json",
         "/frames/1": "multipart/related; type=\"application/octet-stream\"",
         "/rendered": "image/jpeg"}


@pytest.mark.parametrize("tail", list(TAILS), ids=["instance", "metadata", "frame", "rendered"])
def test_own_path_answers(server: ServerProcess, tail: str) -> None:
    status, body = _get(f"{server.url}/dicomweb/studies/{STUDY}/series/{SERIES}/instances/"
                        f"{SOP}{tail}", TAILS[tail])
    assert status == 200, body[:300]
    assert SOP.encode() in body or tail in ("/frames/1", "/rendered")


@pytest.mark.parametrize("tail", list(TAILS), ids=["instance", "metadata", "frame", "rendered"])
# (ids: the UIDs are new in each pytest-xdist worker, and test names must not differ)
@pytest.mark.parametrize("study,series", [(OTHER_STUDY, SERIES), (STUDY, OTHER_SERIES),
                                          (OTHER_STUDY, OTHER_SERIES)],
                         ids=["other-study", "other-series", "both-other"])
def test_under_another_study_or_series_is_404(server: ServerProcess, tail: str, study: str,
                                              series: str) -> None:
    status, body = _get(f"{server.url}/dicomweb/studies/{study}/series/{series}/instances/"
                        f"{SOP}{tail}", TAILS[tail])
    assert status == 404, body[:300]
    assert b"no such instance" in body


def test_unknown_instance_is_404_and_invalid_uid_400(server: ServerProcess) -> None:
    status, _ = _get(f"{server.url}/dicomweb/studies/{STUDY}/series/{SERIES}/instances/"
                     f"{new_uid()}/metadata", "application/dicom+json")
    assert status == 404
    status, body = _get(f"{server.url}/dicomweb/studies/{STUDY}/series/{SERIES}/instances/"
                        "1.2.x/metadata", "application/dicom+json")
    assert status == 400 and b"SOP Instance UID" in body
    status, body = _get(f"{server.url}/dicomweb/studies/1.2.x/series/{SERIES}/instances/"
                        f"{SOP}/metadata", "application/dicom+json")
    assert status == 400 and b"Study Instance UID" in body


@pytest.mark.parametrize("study,series,expected", [(STUDY, SERIES, 200),
                                                   (OTHER_STUDY, SERIES, 404),
                                                   (STUDY, OTHER_SERIES, 404)],
                         ids=["own", "other-study", "other-series"])
def test_wado_uri_checks_study_and_series(server: ServerProcess, study: str, series: str,
                                          expected: int) -> None:
    status, body = _get(f"{server.url}/wado?requestType=WADO&studyUID={study}"
                        f"&seriesUID={series}&objectUID={SOP}&contentType=application/dicom")
    assert status == expected, body[:300]
