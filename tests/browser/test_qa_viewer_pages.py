"""What a person sees on the viewer and archive pages, beyond test_browser_viewer.py.

One real ``archivist serve`` with the real OHIF build and Debian's Chromium (``qa_pages.mjs``):

- the study list's Modalities column shows every modality of a study stored as two series (it
  comes from ModalitiesInStudy, as study-level QIDO no longer returns Modality);
- a study the viewer cannot display (pydicom's ``test-SR.dcm`` makes OHIF 3.13.2 throw) ends in
  a message with the error and links, not a black page;
- uploads through the archive page's file picker: a good file, a file that is not DICOM and a
  duplicate each get a row, in the order given, and a refusal says why (the server's Error
  Comment), not only a FailureReason number;
- the archive page's search form finds a study by patient name, accents and case ignored;
- a study's page counts findings in words that agree with the numbers ("1 error").

Nothing skips: without the OHIF build, Chromium or Node.js the test fails (as
test_browser_viewer.py does). Screenshots go to ``test-artifacts/browser/qa-*.png``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from test_browser_viewer import ARTEFACTS, CHROMIUM, HERE, _node_modules, _stow, _tool, _viewer_dir

from archivist.testing.datasets import make_instance, new_uid, pydicom_test_file
from archivist.testing.server import ServerProcess, free_port

#: Everything a CT instance of make_instance lacks for a clean validation, but Rescale Slope:
#: so it is stored with exactly one error.
_ALMOST_COMPLETE_CT = {
    "PatientPosition": "HFS", "FrameOfReferenceUID": "1.2.826.0.1.3680043.10.1235.77",
    "PositionReferenceIndicator": "", "SliceThickness": 1, "ImagePositionPatient": [0, 0, 0],
    "ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "PixelSpacing": [1, 1], "KVP": "",
    "AcquisitionNumber": 1, "RescaleIntercept": 0,
    # 16 bits, 12 stored, as the CT Image Module allows (PS3.3 C.8.2.1.1.4): 4 x 4 pixels
    "BitsAllocated": 16, "BitsStored": 12, "HighBit": 11,
}


@pytest.mark.timeout(900)
def test_viewer_and_archive_pages_as_a_user_sees_them(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is required (apt-get install chromium; .ci/run does it)")
    viewer_dir = _viewer_dir()
    _node_modules()
    storescu = _tool("storescu")

    # A DICOM node for the study page's Send form.
    receiver_port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    receiver = subprocess.Popen([_tool("storescp"), "-aet", "STORESCP", "-od", str(received),
                                 str(receiver_port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    server = ServerProcess(tmp_path / "data", env={
        "ARCHIVIST_VIEWER_DIR": str(viewer_dir),
        "ARCHIVIST_PEERS": f"STORESCP=127.0.0.1:{receiver_port}"})
    server.start()
    try:
        # A study of two series, CT and MR, with a Latin-1 patient name, through C-STORE.
        study = new_uid()
        files = []
        for n, modality in enumerate(("CT", "MR")):
            path = tmp_path / f"two-series-{modality}.dcm"
            make_instance(path, study_uid=study, series_uid=new_uid(), series_number=n + 1,
                          modality=modality, charset="ISO_IR 100", patient_name="Müller^Jürgen",
                          patient_id="QA-TWO", study_description="Two series",
                          extra=_ALMOST_COMPLETE_CT if modality == "CT" else None)
            files.append(str(path))
        done = subprocess.run([storescu, "-aec", server.aet, "127.0.0.1", str(server.dicom_port),
                               *files], check=False, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

        sr = pydicom_test_file("test-SR.dcm")
        assert sr is not None
        _stow(server.url, Path(str(sr)))
        import pydicom

        sr_study = str(pydicom.dcmread(sr, stop_before_pixels=True).StudyInstanceUID)

        new = tmp_path / "new.dcm"
        new_ds = make_instance(new, patient_id="QA-NEW", patient_name="NEW^UPLOAD",
                               study_description="Uploaded")
        not_dicom = tmp_path / "notes.txt"
        not_dicom.write_text("these are not DICOM\n")

        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        spec = {
            "baseUrl": server.url,
            "artefacts": str(ARTEFACTS),
            "studyList": {"marker": "Müller, Jürgen"},
            "stopped": {"studyUid": sr_study},
            "upload": {"files": [str(new), str(not_dicom), files[0]]},
            "search": {"patient": "muller"},
            "studyPage": {"studyUid": study, "delete": True},
        }
        run = subprocess.run([_tool("node"), str(HERE / "qa_pages.mjs"), json.dumps(spec)],
                             cwd=HERE, check=False, capture_output=True, text=True, timeout=600)
        (ARTEFACTS / "qa-node-stderr.txt").write_text(run.stderr)
        assert run.returncode == 0, f"qa_pages.mjs failed:\n{run.stderr[-4000:]}"
        results = json.loads(run.stdout.strip().splitlines()[-1])
        (ARTEFACTS / "qa-results.json").write_text(json.dumps(results, indent=2))

        # The study list row shows both modalities (from ModalitiesInStudy) and both instances.
        row = results["studyList"]["row"]
        assert row, results["studyList"]
        modalities = [cell for cell in row if re.fullmatch(r"[A-Z]{2}([\\/, ]+[A-Z]{2})+", cell)]
        assert modalities and set(re.split(r"[\\/, ]+", modalities[0])) == {"CT", "MR"}, row
        assert "Two series" in row and "2" in row, row

        # The SR the viewer cannot show: a message with the error and the way back.
        stopped = results["stopped"]
        assert stopped["alert"], stopped
        assert "cannot display this study" in stopped["alert"], stopped
        assert "ConceptNameCodeSequence" in stopped["alert"], stopped
        assert "/" in stopped["links"] and f"/archive/studies/{sr_study}" in stopped["links"]

        # Uploads: a row per file in the order given; the refusal says why.
        upload = results["upload"]
        assert upload["error"] is None, upload
        rows = {r["cells"][0]: r for r in upload["rows"]}
        assert [r["cells"][0] for r in upload["rows"]] == ["new.dcm", "notes.txt",
                                                          "two-series-CT.dcm"], upload
        assert rows["new.dcm"]["cls"] == "ok" and rows["new.dcm"]["cells"][2] == "stored"
        refused = rows["notes.txt"]
        assert refused["cls"] == "failed", refused
        assert "not a DICOM" in refused["cells"][2] and "0xC000" in refused["cells"][2], refused
        assert rows["two-series-CT.dcm"]["cls"] == "ok", rows  # a duplicate: the first copy kept
        assert upload["progressText"] == "2 of 3 files stored, 1 failed", upload
        # The upload from the keyboard: Enter on the drop zone, Tab to the files input, Space.
        assert results["keyboard"] == {"zoneOpensChooser": True, "tabReaches": "file-input",
                                       "inputOpensChooser": True, "zoneRole": "button",
                                       "progressLive": "polite"}, results["keyboard"]

        # The search form finds the study by "muller" (accents and case ignored), and only it.
        search = results["search"]
        assert search["form"], search
        assert search["found"]["studies"] == [study], search
        assert "patient=muller" in search["found"]["url"], search

        # Findings counted in agreeing words: the CT instance has exactly one error.
        counts = results["studyPage"]["validation"]
        assert "1 error, 0 warnings" in counts, counts
        for text in counts:
            for number, word in re.findall(r"(\d+) (errors?|warnings?)", text):
                assert (int(number) == 1) == (not word.endswith("s")), counts

        # The study page's Send form sent both instances to the configured peer.
        assert results["studyPage"].get("send") == "sent 2 of 2 to STORESCP", results
        assert len(list(received.iterdir())) == 2
        # Then its Delete button (confirmed) removed it: the home page lists it no more.
        assert study not in results["studyPage"]["afterDelete"], results["studyPage"]
        assert results["studyPage"]["afterDelete"], results["studyPage"]  # the others stay

        # Nothing behind the pages failed on the server; the only 4xx is the refused upload.
        assert not [r for r in results["failedRequests"] if r["status"] >= 500], results
        assert [r for r in results["failedRequests"] if r["status"] < 500] == [
            {"url": "/dicomweb/studies", "status": 409, "method": "POST"}], results
        assert results["pageErrors"] == [], results
        assert new_ds.StudyInstanceUID
    finally:
        server.stop()
        receiver.terminate()


def _get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_archive_search_pages_and_bad_input(tmp_path: Path) -> None:
    """The search form's parameters over plain HTTP: paging newest first, ranges, bad values."""
    from archivist.web import archive_page

    server = ServerProcess(tmp_path / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp_path / "none")})
    server.start()
    try:
        folder = tmp_path / "files"
        folder.mkdir()
        total = archive_page.PAGE_SIZE + 3
        uids = [new_uid() for _ in range(total)]
        for n, uid in enumerate(uids):
            make_instance(folder / f"{n:03d}.dcm", study_uid=uid, patient_id=f"P{n}",
                          patient_name=f"PAGE^N{n:03d}", study_date=f"2020{1 + n % 12:02d}01",
                          modality="MR" if n % 2 else "CT")
        done = subprocess.run([_python(), "-m", "archivist.cli.main", "import", "--quiet",
                               "--data", str(server.data_dir), str(folder)],
                              check=False, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        order = [uids[n] for n in sorted(range(total), key=lambda n: _study_pk(server, uids[n]))]

        status, body = _get(server.url + "/archive/?page=1")
        assert status == 200
        assert re.findall(r'<tr data-study="([^"]+)"', body) == order[::-1][:archive_page.PAGE_SIZE]
        assert f"1–{archive_page.PAGE_SIZE} of {total}" in body and 'rel="next"' in body
        status, body = _get(server.url + "/archive/?page=2")
        assert re.findall(r'<tr data-study="([^"]+)"', body) == order[::-1][archive_page.PAGE_SIZE:]
        assert 'rel="previous" href="/archive/?page=1"' in body and 'rel="next"' not in body

        # Filters keep C-FIND's matching; the pages carry them along.
        status, body = _get(server.url + "/archive/?modality=ct&from=2020-03-01&to=2020-03-01")
        want = {uids[n] for n in range(total) if n % 2 == 0 and n % 12 == 2}
        assert status == 200 and set(re.findall(r'<tr data-study="([^"]+)"', body)) == want
        status, body = _get(server.url + "/archive/?patient=*n00*&page=1")
        assert set(re.findall(r'<tr data-study="([^"]+)"', body)) == set(uids[:10])

        for bad in ("from=yesterday", "to=2020-13", "page=0", "page=x"):
            status, body = _get(server.url + f"/archive/?{bad}")
            assert status == 400 and "This search cannot be run" in body, bad
        status, body = _get(server.url + "/archive/?page=99")
        assert status == 200 and "No study matches" in body
        assert f'href="/archive/?page={-(-total // archive_page.PAGE_SIZE)}"' in body

        # A stored inventory adds a study of its own that no search lists: the recent studies
        # are still the last RECENT_STUDIES listed ones.
        done = subprocess.run([_python(), "-m", "archivist.cli.main", "inventory", "create",
                               "--data", str(server.data_dir)],
                              check=False, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        status, body = _get(server.url + "/archive/")
        assert re.findall(r'<tr data-study="([^"]+)"', body) == \
            order[::-1][:archive_page.RECENT_STUDIES]
    finally:
        server.stop()


def _python() -> str:
    import sys

    return sys.executable


def _study_pk(server: ServerProcess, uid: str) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{server.data_dir / 'index.sqlite'}?mode=ro", uri=True) as conn:
        return int(conn.execute("select pk from study where study_instance_uid = ?",
                                (uid,)).fetchone()[0])
