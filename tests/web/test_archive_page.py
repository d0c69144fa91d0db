"""The /archive/ page on a real ``archivist serve`` with objects imported through the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

STUDY_UID = new_uid()
OTHER_STUDY_UID = new_uid()


def _get(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, \
                resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read().decode()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("archive-page")
    files = tmp / "files"
    files.mkdir()
    series_uid = new_uid()
    for n in range(3):
        make_instance(files / f"ct{n}.dcm", study_uid=STUDY_UID, series_uid=series_uid,
                      instance_number=n + 1, patient_name="O'HARA^<b>JANE</b>",
                      patient_id="PID-42", study_description="Chest & abdomen",
                      modality="CT", study_date="20240305")
    later = tmp / "later"
    later.mkdir()
    make_instance(later / "mr.dcm", study_uid=OTHER_STUDY_UID, modality="MR",
                  patient_id="PID-7", study_description="Knee")
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "no-viewer")})
    srv.start()
    # The MR study after the CT one (an import reads several files at once, in no set order).
    for folder in (files, later):
        done = subprocess.run([sys.executable, "-m", "archivist.cli.main", "import", "--quiet",
                               "--data", str(srv.data_dir), str(folder)],
                              check=False, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    yield srv
    srv.stop()


class TestArchiveHome:
    def test_counts_and_sizes(self, page_server: ServerProcess) -> None:
        status, headers, body = _get(page_server.url + "/archive/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        cards = dict(re.findall(r'data-key="([^"]+)"><div class="v">([^<]*)<', body))
        assert cards["Patients"] == "2"
        assert cards["Studies"] == "2"
        assert cards["Series"] == "2"
        assert cards["Instances"] == "4"
        assert cards["Stored objects"].endswith("KB")
        assert cards["Index"].endswith(("KB", "MB"))
        assert " of " in cards["Disk free"]

    def test_recent_studies_newest_first_with_viewer_links(self, page_server: ServerProcess) -> None:
        _, _, body = _get(page_server.url + "/archive/")
        studies = re.findall(r'<tr data-study="([^"]+)"', body)
        assert studies == [OTHER_STUDY_UID, STUDY_UID]
        assert f'href="/viewer?StudyInstanceUIDs={STUDY_UID}"' in body
        assert f'href="/archive/studies/{STUDY_UID}"' in body
        assert "2024-03-05" in body and "CT" in body

    def test_text_is_escaped(self, page_server: ServerProcess) -> None:
        _, _, body = _get(page_server.url + "/archive/")
        assert "<b>JANE</b>" not in body
        assert "O&#x27;HARA &lt;b&gt;JANE&lt;/b&gt;" in body
        assert "Chest &amp; abdomen" in body

    def test_upload_form_and_api_list(self, page_server: ServerProcess) -> None:
        _, headers, body = _get(page_server.url + "/archive/")
        assert 'id="dropzone"' in body and 'webkitdirectory' in body
        assert '<a href="/healthz">/healthz</a>' in body
        assert "/archive/studies/{study}" in body
        assert "script-src 'self'" in headers["content-security-policy"]
        # The ZIP downloads are listed (QA s22: every route ending in /archive was left out)
        assert "/api/studies/{study}/archive" in body
        assert "/api/studies/{study}/series/{series}/archive" in body
        assert '<li><code>GET</code> <a href="/archive">' not in body

    def test_header_api_link_works_from_every_page(self, page_server: ServerProcess) -> None:
        # #api is only on /archive/: the study page's header link pointed nowhere (QA s22)
        _, _, body = _get(page_server.url + f"/archive/studies/{STUDY_UID}")
        assert '<a href="/archive/#api">HTTP API</a>' in body

    def test_redirect_without_slash(self, page_server: ServerProcess) -> None:
        status, _, body = _get(page_server.url + "/archive")
        assert status == 200 and "Recent studies" in body  # urllib followed the 308


class TestStudyPage:
    def test_lists_instances_with_findings_buttons(self, page_server: ServerProcess) -> None:
        status, _, body = _get(page_server.url + f"/archive/studies/{STUDY_UID}")
        assert status == 200
        sops = re.findall(r'<tr data-sop="([^"]+)"', body)
        assert len(sops) == 3
        assert body.count('class="findings"') == 3
        assert "1.2.840.10008.1.2.1" in body  # transfer syntax shown
        assert f'href="/viewer?StudyInstanceUIDs={STUDY_UID}"' in body

    @pytest.mark.parametrize("uid", ["1.2.3.999", "not-a-uid", "1" * 80])
    def test_unknown_or_bad_uid(self, page_server: ServerProcess, uid: str) -> None:
        status, _, body = _get(page_server.url + f"/archive/studies/{uid}")
        assert status == 404 and "Not found" in body


class TestStatic:
    def test_script_and_style(self, page_server: ServerProcess) -> None:
        status, headers, body = _get(page_server.url + "/archive/static/archive.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        assert "/dicomweb/studies" in body and "multipart/related" in body
        status, headers, _ = _get(page_server.url + "/archive/static/archive.css")
        assert status == 200 and headers["content-type"].startswith("text/css")

    @pytest.mark.parametrize("name", ["nothing.js", "..%2farchive_page.py", "__init__.py"])
    def test_unknown_static_is_404(self, page_server: ServerProcess, name: str) -> None:
        status, _, _ = _get(page_server.url + f"/archive/static/{name}")
        assert status == 404


def test_package_ships_static_files() -> None:
    from importlib import resources

    folder = resources.files("archivist.web").joinpath("archive_static")
    assert {p.name for p in folder.iterdir()} >= {"archive.js", "archive.css"}
    assert Path(str(folder)).is_dir()


class TestWorkitemsPage:
    def test_lists_workitems_by_state_escaped(self, page_server: ServerProcess) -> None:
        import json

        uid = new_uid()
        body = json.dumps([{
            "00741000": {"vr": "CS", "Value": ["SCHEDULED"]},
            "00741200": {"vr": "CS", "Value": ["HIGH"]},
            "00741204": {"vr": "LO", "Value": ["<script>x</script> CAD"]},
            "00404005": {"vr": "DT", "Value": ["20261207090000"]},
            "00404041": {"vr": "CS", "Value": ["READY"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        }]).encode()
        request = urllib.request.Request(
            f"{page_server.url}/dicomweb/workitems?workitem={uid}", data=body, method="POST",
            headers={"Content-Type": "application/dicom+json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201
        status, _, html_text = _get(page_server.url + "/archive/workitems")
        assert status == 200
        assert f'data-workitem="{uid}"' in html_text
        assert "&lt;script&gt;x&lt;/script&gt; CAD" in html_text and "<script>x" not in html_text
        assert "Doe, Jane" in html_text or "Doe^Jane" in html_text or "Doe Jane" in html_text
        status, _, html_text = _get(page_server.url + "/archive/workitems?state=COMPLETED")
        assert status == 200 and uid not in html_text
        status, _, html_text = _get(page_server.url + "/archive/workitems?state=scheduled")
        assert status == 200 and uid in html_text
        assert _get(page_server.url + "/archive/workitems?state=DONE")[0] == 400
        assert _get(page_server.url + "/archive/workitems?page=0")[0] == 400
