"""WADO-RS series retrieve in RLE, JPEG-LS or JPEG 2000 Lossless of objects the encoder cannot
code (QA, s20, with pydicom's held-out rtdose and liver files).

A 32-bit RT Dose or a 1-bit segmentation-like image asked for in one of these syntaxes is
refused by pydicom's encoder (PS3.5 8.2 encoding profiles; OpenJPEG's 24 bits stored). The
plan made before the response did not know it: the refusal came while the body streamed, so
the instance was left out of a ``200 OK`` with no Warning naming it (a whole study of
pydicom's files in JPEG 2000 Lossless lost 14 of 61 instances silently). It is now told from
the header: ``206`` with a Warning naming the instances left out (PS3.18 Table 10.4.3-1), and
a single such instance is a readable 406 as before.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from io import BytesIO

import pydicom
import pydicom.data
import pytest
import requests
from pydicom.uid import generate_uid

from archivist.testing.datasets import new_uid
from archivist.testing.multipart import parts_of
from archivist.testing.server import ServerProcess

STUDY = new_uid()
SERIES = new_uid()
RLE, JPEG_LS, J2K = "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"
#: pydicom's files, made one series: (file, whether RLE / JPEG-LS / JPEG 2000 can carry it)
FILES = {"CT_small.dcm": True, "rtdose_1frame.dcm": False, "liver_1frame.dcm": False}




def _part10(name: str, number: int) -> tuple[str, bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = number
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return str(ds.SOPInstanceUID), out.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("plan")
    srv = ServerProcess(tmp / "data", extra_args=["--workers", "1"],
                        env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    sops: dict[str, str] = {}
    body = b""
    for number, name in enumerate(FILES, 1):
        sops[name], data = _part10(name, number)
        body += b"--B\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
    r = requests.post(f"{srv.url}/dicomweb/studies", data=body + b"--B--\r\n", timeout=30,
                      headers={"Content-Type": 'multipart/related; type="application/dicom"; '
                                               "boundary=B"})
    assert r.status_code in (200, 202) and "00081198" not in r.json(), r.text  # 202: coerced IDs
    yield f"{srv.url}/dicomweb/studies/{STUDY}/series/{SERIES}", sops
    srv.stop()


def _accept(ts: str) -> dict[str, str]:
    return {"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ts}'}


@pytest.mark.parametrize("ts", [RLE, JPEG_LS, J2K])
def test_what_the_encoder_refuses_is_named_in_a_206(served: tuple[str, dict[str, str]],
                                                    ts: str) -> None:
    url, sops = served
    r = requests.get(url, headers=_accept(ts), timeout=60)
    assert r.status_code == 206, (r.status_code, r.headers.get("warning"))
    warning = r.headers["warning"]
    assert warning.startswith("299 ") and "2 of 3 instances are not included" in warning
    for name, sendable in FILES.items():
        assert (sops[name] in warning) is not sendable, name
    parts = parts_of(r)
    assert [h["content-type"] for h, _ in parts] == [f"application/dicom; transfer-syntax={ts}"]
    ds = pydicom.dcmread(BytesIO(parts[0][1]))
    assert ds.SOPInstanceUID == sops["CT_small.dcm"]
    assert ds.file_meta.TransferSyntaxUID == ts
    assert ds.pixel_array.shape == (128, 128)


def test_one_such_instance_is_a_readable_406(served: tuple[str, dict[str, str]]) -> None:
    url, sops = served
    r = requests.get(f"{url}/instances/{sops['rtdose_1frame.dcm']}", headers=_accept(J2K),
                     timeout=30)
    assert r.status_code == 406
    assert "32" in r.json()["error"]


def test_as_stored_is_still_every_instance(served: tuple[str, dict[str, str]]) -> None:
    url, _ = served
    r = requests.get(url, headers=_accept("*"), timeout=30)
    assert r.status_code == 200 and "warning" not in r.headers
    assert len(parts_of(r)) == len(FILES)
