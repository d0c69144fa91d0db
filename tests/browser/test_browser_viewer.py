"""The viewer and the archive page in a real browser (Debian's Chromium, driven by playwright-core).

One real ``archivist serve`` with the real OHIF build: objects arrive through C-STORE (DCMTK
``storescu``) and STOW-RS; then ``viewer_e2e.mjs`` opens the study list, opens a CT study and a
JPEG 2000 study and samples the viewport canvas pixels, and uploads one file with the archive
page's file picker and one by dropping it. This test checks what the script measured.

Nothing here skips: without the OHIF build (fetched from the npm registry by tools/fetch_ohif.py),
Chromium, or Node.js the test fails and says what is missing. Screenshots and the script's
results are kept in ``test-artifacts/browser/`` (not committed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pydicom
import pytest

from archivist.config import OHIF_VERSION
from archivist.testing.datasets import make_instance, pydicom_test_file
from archivist.testing.server import ServerProcess

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARTEFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

C_STORE = ["CT_small.dcm", "MR_small.dcm"]                 # CT and MR, explicit VR little endian
STOW = ["JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm"]           # NM JPEG 2000, OT RGB JPEG baseline
# More encodings, each re-saved as a study of its own (new UIDs; pixel data untouched) and sent
# with STOW-RS, then opened in the viewer: (name, pydicom test file).
ENCODINGS = [
    ("jpeg-baseline-ybr", "SC_rgb_jpeg_dcmtk.dcm"),          # 1.2.840.10008.1.2.4.50, YBR_FULL
    ("jpeg-extended-12bit", "JPGExtended.dcm"),              # .4.51, 12-bit NM
    ("jpeg-lossless", "SC_rgb_jpeg_gdcm.dcm"),               # .4.70, RGB
    ("jpeg-ls-lossless", "MR_small_jpeg_ls_lossless.dcm"),   # .4.80
    ("jpeg2000-lossless", "MR_small_jp2klossless.dcm"),      # .4.90
    ("rle", "MR_small_RLE.dcm"),                             # .5
    ("us-cine-30-frames", "examples_ybr_color.dcm"),         # .4.50 multi-frame US
]


def _tool(name: str) -> str:
    """A system tool, not the same-named Python script pynetdicom puts in the venv."""
    venv_bin = os.path.dirname(sys.executable)
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and os.path.abspath(d) != venv_bin]
    found = shutil.which(name, path=os.pathsep.join(dirs))
    if found is None:
        pytest.fail(f"{name} is required for the browser tests (see .ci/run)")
    return found


def _viewer_dir() -> Path:
    """Fetch the pinned OHIF build once (a no-op when present); fail if that is impossible."""
    dest = REPO / ".cache" / "ohif" / OHIF_VERSION
    done = subprocess.run([sys.executable, str(REPO / "tools" / "fetch_ohif.py"), "--dest",
                           str(dest)], check=False, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"the OHIF build could not be fetched:\n{done.stderr}")
    return dest


def _node_modules() -> None:
    """``npm ci`` in tests/browser when playwright-core is missing or not the locked version."""
    npm = _tool("npm")
    _tool("node")
    lock = json.loads((HERE / "package-lock.json").read_text())
    wanted = lock["packages"]["node_modules/playwright-core"]["version"]
    installed = HERE / "node_modules" / "playwright-core" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == wanted:
        return
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=False,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"npm ci in tests/browser failed:\n{done.stdout}\n{done.stderr}")


def _re_uid(source: Path, dest: Path, patient_id: str) -> pydicom.Dataset:
    """`source` as a study of its own: new study, series and instance UIDs and patient ID."""
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    ds.save_as(dest, enforce_file_format=True)
    return ds


def _ct_volume(folder: Path, slices: int = 40, size: int = 96) -> pydicom.Dataset:
    """A CT series that makes a volume (a sphere of soft tissue with a bony core), for MPR.

    Returns the first slice; the files are ``folder/slice-NN.dcm``.
    """
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - size / 2
    folder.mkdir()
    first = None
    for k in range(slices):
        z = (k - slices / 2) * 2.0
        r = np.sqrt(xx**2 + yy**2 + z**2)
        hu = np.where(r < 36, 40.0, -1000.0) + np.where(r < 12, 760.0, 0.0)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = \
            "PHANTOM^SPHERE", "VOL1", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20250101", "120000", "1", ""
        ds.StudyDescription, ds.ReferringPhysicianName = "Volume phantom", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientPosition, ds.FrameOfReferenceUID = "HFS", frame_of_reference
        ds.PositionReferenceIndicator, ds.KVP, ds.AcquisitionNumber = "", "", 1
        ds.ImagePositionPatient = [-size / 2, -size / 2, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 2
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = (hu + 1024).astype("<u2").tobytes()
        ds.save_as(folder / f"slice-{k:02d}.dcm", enforce_file_format=True)
        first = first or ds
    assert first is not None
    return first


PDF = b"""%PDF-1.4
1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj
2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj
3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 300 200]/Contents 4 0 R/Resources<</Font<</F1 5 0 R>>>>>>endobj
4 0 obj<</Length 49>>stream
BT /F1 24 Tf 30 100 Td (Archivist report) Tj ET
endstream endobj
5 0 obj<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>endobj
trailer<</Root 1 0 R>>
%%EOF
"""


def _pdf_document(path: Path) -> pydicom.Dataset:
    """An Encapsulated PDF object (PS3.3 A.45.1) holding a one-page PDF."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "REPORT^PDF", "PDF1", "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20250102", "090000", "1", ""
    ds.StudyDescription, ds.ReferringPhysicianName = "PDF report", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DOC", 1, 1
    ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime = "20250102", "090000", "20250102090000"
    ds.ConversionType, ds.BurnedInAnnotation, ds.DocumentTitle = "WSD", "YES", "Report"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = PDF + b"\0" * (len(PDF) % 2)
    ds.EncapsulatedDocumentLength = len(PDF)
    ds.save_as(path, enforce_file_format=True)
    return ds


def _stow(url: str, *paths: Path) -> None:
    """STOW-RS of `paths` in one request, one part each."""
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + path.read_bytes() + b"\r\n" for path in paths)
    body += f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(
        f"{url}/dicomweb/studies", data=body, method="POST",
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                 "Accept": "application/dicom+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200, resp.read()


def _qido_studies(url: str, study_uid: str) -> list[dict]:
    req = urllib.request.Request(f"{url}/dicomweb/studies?StudyInstanceUID={study_uid}",
                                 headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else []


@pytest.mark.timeout(1200)
def test_viewer_and_archive_page_in_chromium(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is required (apt-get install chromium; .ci/run does it)")
    viewer_dir = _viewer_dir()
    _node_modules()
    storescu = _tool("storescu")

    server = ServerProcess(tmp_path / "data", env={"ARCHIVIST_VIEWER_DIR": str(viewer_dir)})
    server.start()
    try:
        files = {name: pydicom_test_file(name) for name in C_STORE + STOW}
        assert all(files.values()), files
        done = subprocess.run([storescu, "-aec", server.aet, "127.0.0.1", str(server.dicom_port),
                               *[str(files[n]) for n in C_STORE]],
                              check=False, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        for name in STOW:
            _stow(server.url, Path(str(files[name])))
        studies = {name: pydicom.dcmread(files[name], stop_before_pixels=True)
                   for name in C_STORE + STOW}
        encoded = {}
        for n, (label, name) in enumerate(ENCODINGS):
            source = pydicom_test_file(name)
            assert source is not None, name
            copy = tmp_path / f"{label}.dcm"
            encoded[label] = _re_uid(Path(str(source)), copy, f"ENC{n}")
            _stow(server.url, copy)
        volume = _ct_volume(tmp_path / "volume")
        _stow(server.url, *sorted((tmp_path / "volume").iterdir()))
        pdf = _pdf_document(tmp_path / "report.dcm")
        _stow(server.url, tmp_path / "report.dcm")

        picked = make_instance(tmp_path / "picked.dcm", patient_id="UPLOAD1",
                               patient_name="UPLOAD^PICKED", study_description="Picked upload")
        dropped = make_instance(tmp_path / "dropped.dcm", patient_id="UPLOAD2",
                                patient_name="UPLOAD^DROPPED", study_description="Dropped upload")
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        spec = {
            "baseUrl": server.url,
            "artefacts": str(ARTEFACTS),
            "studyList": {
                "count": len(studies) + len(encoded) + 2,
                "markers": ["Whole Body Bone", "e+1", "Lestrade, G", "CT", "MR", "NM", "OT"],
            },
            "open": [
                {"name": "ct", "studyUid": str(studies["CT_small.dcm"].StudyInstanceUID)},
                {"name": "jpeg2000", "studyUid": str(studies["JPEG2000.dcm"].StudyInstanceUID)},
                *({"name": label, "studyUid": str(ds.StudyInstanceUID)}
                  for label, ds in encoded.items()),
                # Volume and MPR (needs cross-origin isolation): three views of the same volume.
                {"name": "ct-volume-mpr", "studyUid": str(volume.StudyInstanceUID),
                 "query": "&hangingprotocolId=mpr", "minRendered": 3},
                # An encapsulated PDF, fetched through its BulkDataURI and shown by the browser.
                {"name": "pdf", "studyUid": str(pdf.StudyInstanceUID),
                 "selector": 'object[type="application/pdf"]'},
            ],
            "upload": {"file": str(tmp_path / "picked.dcm"),
                       "studyUid": str(picked.StudyInstanceUID)},
            "drop": {"file": str(tmp_path / "dropped.dcm"), "name": "dropped.dcm",
                     "studyUid": str(dropped.StudyInstanceUID)},
        }
        run = subprocess.run([_tool("node"), str(HERE / "viewer_e2e.mjs"), json.dumps(spec)],
                             cwd=HERE, check=False, capture_output=True, text=True, timeout=900)
        (ARTEFACTS / "node-stderr.txt").write_text(run.stderr)
        assert run.returncode == 0, f"viewer_e2e.mjs failed:\n{run.stderr[-4000:]}"
        results = json.loads(run.stdout.strip().splitlines()[-1])
        (ARTEFACTS / "results.json").write_text(json.dumps(results, indent=2))

        # The study list shows every study.
        listed = results["studyList"]
        assert listed["total"] == len(studies) + len(encoded) + 2, listed
        assert listed["rows"] >= len(studies) + len(encoded) + 2, listed
        assert sorted(listed["seen"]) == sorted(spec["studyList"]["markers"]), listed
        # Volume/MPR prerequisites: the page is cross-origin isolated (COOP + COEP).
        assert results["crossOriginIsolated"] is True

        # A CT and a JPEG 2000 study open, and the viewport canvas holds an image: a good part
        # of it is not black and it has many grey levels (text overlays are not on the canvas).
        opened_pdf = [s for s in results["studies"] if s["name"] == "pdf"]
        assert opened_pdf and opened_pdf[0]["shown"], opened_pdf
        assert opened_pdf[0]["shown"]["src"].startswith("blob:"), opened_pdf
        assert opened_pdf[0]["shown"]["head"].startswith("%PDF-1.4"), opened_pdf
        for opened in results["studies"]:
            if opened["name"] == "pdf":
                continue
            canvases = opened["canvases"]
            assert opened["rendered"], opened
            best = max(canvases, key=lambda c: c.get("nonBlackFraction", 0))
            assert best["nonBlackFraction"] > 0.02 and best["greyLevels"] >= 8, opened
            # Thumbnails come from /thumbnail and are real images, not black squares.
            assert any(t["nonBlackFraction"] > 0.05 for t in opened["thumbnails"]), opened

        # Uploads through the archive page: each file stored, its study then listed on the page
        # and found by QIDO-RS (so it is in the index, not only on the page).
        for key, ds, name in (("upload", picked, "picked.dcm"), ("drop", dropped, "dropped.dcm")):
            got = results[key]
            assert got["error"] is None, got
            mine = [r for r in got["rows"] if r["cells"][0] == name]
            assert mine and mine[0]["cls"] == "ok" and mine[0]["cells"][2].startswith("stored"), got
            assert got["studyListed"], got
            assert len(_qido_studies(server.url, str(ds.StudyInstanceUID))) == 1
        assert results["upload"]["studyWasListed"] is False
        assert results["upload"]["progress"] == 1

        # The study page shows the validation findings of an instance (GET /api/.../validation).
        findings = results["findings"]
        assert findings["error"] is None, findings
        assert re.search(r"\d+ errors?, \d+ warnings?|Not validated", findings["text"]), findings

        # No server errors behind the pages (4xx are kept in results.json for the record).
        server_errors = [r for r in results["failedRequests"] if r["status"] >= 500]
        assert not server_errors, server_errors
        for shot in ("study-list.png", "viewer-ct.png", "viewer-jpeg2000.png",
                     "archive-upload.png", "archive-drop.png", "archive-findings.png"):
            assert (ARTEFACTS / shot).stat().st_size > 10_000, shot
    finally:
        server.stop()
