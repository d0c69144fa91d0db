"""Query by code on an object whose Code Value is (wrongly) multi-valued, sent with DCMTK
storescu to a real `archivist serve` and asked for over QIDO-RS and C-FIND (pynetdicom).

Code Value has VM 1 (PS3.3 Table 8.8-1). Before the fix, ingest indexed such an item under the
Python repr of the list, so no query by either value found it, and the returned sequence carried
``LongCodeValue "['80891009', '10200004']"``, a value the object never had. As dcm4chee does, the
first value is now the one indexed and answered.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess
from conftest import dcmtk_tool

AET = "ARCHIVIST"


def code(value: object, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    root = tmp_path_factory.mktemp("multivalue")
    study = new_uid()
    path = root / "multi.dcm"
    make_instance(path, study_uid=study, extra={
        "AnatomicRegionSequence": [code(["T-32000", "T-62000"], "SRT", "Heart")]})
    srv = ServerProcess(root / "data").start()
    try:
        sent = subprocess.run(
            [dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1", str(srv.dicom_port), str(path)],
            capture_output=True, text=True, timeout=120, check=False)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        yield srv, study
    finally:
        srv.stop()


def qido(srv: ServerProcess, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    url = f"{srv.url}/dicomweb/studies?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else []


@pytest.mark.parametrize("scheme, value", [("SCT", "80891009"), ("SRT", "T-32000")])
def test_qido_finds_it_by_the_first_value(stored: tuple[ServerProcess, str], scheme: str,
                                          value: str) -> None:
    srv, study = stored
    found = qido(srv, [("00082218.00080100", value), ("00082218.00080102", scheme),
                       ("includefield", "00082218")])
    assert [s["0020000D"]["Value"][0] for s in found] == [study]
    item = found[0]["00082218"]["Value"][0]
    assert item["00080100"]["Value"] == ["T-32000"]
    assert "00080119" not in item  # not turned into a Long Code Value


def test_c_find_answers_the_stored_first_value(stored: tuple[ServerProcess, str]) -> None:
    srv, study = stored
    ae = AE(ae_title="QA")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.AnatomicRegionSequence = [code("80891009", "SCT", "")]
    answers = []
    try:
        for status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status and status.Status in (0xFF00, 0xFF01):
                answers.append(ds)
    finally:
        assoc.release()
    assert [str(ds.StudyInstanceUID).rstrip("\x00") for ds in answers] == [study]
    returned = answers[0].AnatomicRegionSequence[0]
    assert returned.CodeValue == "T-32000"
    assert returned.CodingSchemeDesignator == "SRT"


def test_file_is_kept_as_sent(stored: tuple[ServerProcess, str], tmp_path: Path) -> None:
    """The object itself is never rewritten: WADO-RS gives both values back."""
    srv, study = stored
    url = f"{srv.url}/dicomweb/studies/{study}/metadata"
    with urllib.request.urlopen(url, timeout=30) as response:
        metadata = json.loads(response.read())
    assert metadata[0]["00082218"]["Value"][0]["00080100"]["Value"] == ["T-32000", "T-62000"]
