"""The Accept header of a STOW-RS request (QA, s20).

STOW-RS answered ``application/dicom+json`` whatever the client accepted: dcm4che's
``stowrs``, which asks for ``application/dicom+xml`` by default (as Orthanc and dcm4chee
answer it), got JSON it had not asked for, and a client accepting neither had its instances
stored and an answer it could not read. The response is now the Native DICOM Model when the
client prefers XML (PS3.19 A.1), JSON otherwise, and a readable 406, with nothing stored,
when it accepts neither (PS3.18 10.5.3, 8.3.3.1).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

NS = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=B'




@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("stow-accept")
    srv = ServerProcess(tmp / "data", extra_args=["--workers", "1"],
                        env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    yield f"{srv.url}/dicomweb"
    srv.stop()


def _body(*payloads: bytes) -> bytes:
    return b"".join(b"--B\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in payloads) + b"--B--\r\n"


def _instance(tmp_path: Path) -> tuple[str, str, bytes]:
    study, sop = new_uid(), new_uid()
    path = tmp_path / f"{sop}.dcm"
    make_instance(path, study_uid=study, sop_uid=sop)
    return study, sop, path.read_bytes()


def _value(node: ET.Element, keyword: str) -> str | None:
    found = node.find(f"d:DicomAttribute[@keyword='{keyword}']/d:Value", NS)
    return None if found is None else found.text


def test_xml_is_answered_in_the_native_dicom_model(base: str, tmp_path: Path) -> None:
    study, sop, data = _instance(tmp_path)
    r = requests.post(f"{base}/studies", data=_body(data), timeout=30,
                      headers={"Content-Type": STOW_TYPE, "Accept": "application/dicom+xml"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom+xml"
    root = ET.fromstring(r.content)
    assert root.tag == f"{{{NS['d']}}}NativeDicomModel"
    assert _value(root, "RetrieveURL") == f"{base}/studies/{study}"
    (item,) = root.findall("d:DicomAttribute[@tag='00081199']/d:Item", NS)
    assert _value(item, "ReferencedSOPInstanceUID") == sop
    assert item.find("d:DicomAttribute[@tag='00081155']", NS).get("vr") == "UI"  # type: ignore[union-attr]


def test_xml_failures_carry_the_reason(base: str, tmp_path: Path) -> None:
    r = requests.post(f"{base}/studies", data=_body(b"not DICOM at all"), timeout=30,
                      headers={"Content-Type": STOW_TYPE,
                               "Accept": "application/dicom+xml, application/dicom+json;q=0.5"})
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/dicom+xml"
    (item,) = ET.fromstring(r.content).findall("d:DicomAttribute[@tag='00081198']/d:Item", NS)
    assert _value(item, "FailureReason") == str(0xC000)
    assert _value(item, "ErrorComment")


def test_json_when_preferred_or_anything_goes(base: str, tmp_path: Path) -> None:
    for accept in ("application/dicom+xml;q=0.5, application/dicom+json", "*/*", None):
        _, sop, data = _instance(tmp_path)
        headers = {"Content-Type": STOW_TYPE}
        if accept:
            headers["Accept"] = accept
        r = requests.post(f"{base}/studies", data=_body(data), headers=headers,
                          timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
        assert r.json()["00081199"]["Value"][0]["00081155"]["Value"] == [sop]


def test_neither_is_a_406_and_nothing_is_stored(base: str, tmp_path: Path) -> None:
    study, _, data = _instance(tmp_path)
    r = requests.post(f"{base}/studies", data=_body(data), timeout=30,
                      headers={"Content-Type": STOW_TYPE, "Accept": "text/html"})
    assert r.status_code == 406
    assert "application/dicom+xml" in r.json()["error"]
    found = requests.get(f"{base}/studies?StudyInstanceUID={study}", timeout=30)
    assert found.status_code == 200 and found.json() == []
