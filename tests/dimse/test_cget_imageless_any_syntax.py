"""C-GET by a requestor whose first proposed syntax is one this archive cannot make from
pixels (DCMTK ``getscu +xy``: JPEG Baseline first in each context, QA s22): objects without
an image (an SR, an Encapsulated PDF) failed with the images, though a data set without pixel
data is written in any syntax as in Explicit VR Little Endian. They go out now; an image
stored uncompressed still fails (no lossy JPEG is made here), against a real
``archivist serve``."""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from archivist.testing.datasets import new_uid
from archivist.testing.http import stow
from archivist.testing.server import ServerProcess

GETSCU = "/usr/bin/getscu"
pytestmark = pytest.mark.skipif(not os.path.exists(GETSCU), reason="DCMTK")
ENV = {**os.environ, "TCP_NODELAY": "1"}
STUDY = new_uid()
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _pdf() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.Modality = "DOC"
    ds.PatientID, ds.PatientName = "S22GET", "GET^S22"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    return ds


def _file(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(pydicom.data.get_testdata_file(name))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict,
                                                                        Path]]:
    tmp = tmp_path_factory.mktemp("xy")
    srv = ServerProcess(tmp / "data", extra_args=["--workers", "1"],
                        env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    sops: dict[str, str] = {}
    objects = []
    for name, ds in (("sr", _file("test-SR.dcm")), ("pdf", _pdf()), ("ct", _file("CT_small.dcm"))):
        ds.PatientID = "S22GET"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, new_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        sops[name] = str(ds.SOPInstanceUID)
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
        objects.append(out.getvalue())
    status, answer = stow(srv.url, objects)
    assert status in (200, 202) and "00081198" not in answer, answer
    yield srv, sops, tmp
    srv.stop()


def test_getscu_xy_receives_the_objects_without_an_image(
        served: tuple[ServerProcess, dict, Path]) -> None:
    srv, sops, tmp = served
    out = tmp / "got"
    out.mkdir()
    done = subprocess.run([GETSCU, "+xy", "-S", "-aec", "ARCHIVIST", "-od", str(out),
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}",
                           "127.0.0.1", str(srv.dicom_port)], env=ENV, capture_output=True,
                          text=True, timeout=60, check=False)
    got = {}
    for path in out.iterdir():
        ds = pydicom.dcmread(path)
        got[str(ds.SOPInstanceUID)] = ds
    assert sorted(got) == sorted([sops["sr"], sops["pdf"]]), done.stdout + done.stderr
    for sop in (sops["sr"], sops["pdf"]):
        assert got[sop].file_meta.TransferSyntaxUID == JPEG_BASELINE
    assert got[sops["pdf"]].EncapsulatedDocument.startswith(b"%PDF-1.4")
    assert len(got[sops["sr"]].ContentSequence) == len(_file("test-SR.dcm").ContentSequence)
    assert "ended 0xB000: 2 completed, 1 failed" in srv.log()
