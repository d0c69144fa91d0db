"""Empty Value Matching against a real ``archivist serve``, driven by DCMTK findscu and
dicomweb-client (PS3.4 C.2.2.2.7; PS3.18 8.3.4.5).

Found by black-box QA: ``findscu -k AccessionNumber='""'`` found nothing (the value was
matched as the text ``""``), while the studies whose Accession Number is zero length or absent
should match; QIDO-RS answered ``emptyvaluematching=true`` with a Warning that it is not
supported. Without that parameter, ``""`` in QIDO-RS stays the literal value.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from archivist.testing.datasets import make_instance
from archivist.testing.server import ServerProcess
from conftest import dcmtk_tool

AET = "ARCHIVIST"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("qa_empty")
    server = ServerProcess(base / "data", extra_args=["--workers", "1"]).start()
    files = []
    for pid, accession, absent in [("EV-VAL", "ACC-1", ()), ("EV-ZERO", "", ()),
                                   ("EV-ABSENT", "X", ("AccessionNumber", "Modality")),
                                   ("EV-QUOTES", '""', ())]:
        path = base / f"{pid}.dcm"
        make_instance(path, patient_id=pid, accession_number=accession,
                      extra={"OperatorsName": "" if pid == "EV-ZERO" else "OP^" + pid})
        if absent:
            ds = pydicom.dcmread(path)
            for keyword in absent:
                delattr(ds, keyword)
            ds.save_as(path)
        files.append(str(path))
    run = subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1",
                          str(server.dicom_port), *files],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    yield server
    server.stop()


def findscu(srv: ServerProcess, *keys: str) -> tuple[list[str], str]:
    """Patient IDs of the STUDY-level matches, and findscu's output."""
    cmd = [dcmtk_tool("findscu"), "-v", "-S", "-aec", AET, "-k", "QueryRetrieveLevel=STUDY",
           "-k", "PatientID=EV-*", "-k", "StudyInstanceUID="]
    for key in keys:
        cmd += ["-k", key]
    run = subprocess.run([*cmd, "127.0.0.1", str(srv.dicom_port)], check=False,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TCP_NODELAY": "1"})
    assert run.returncode == 0, run.stderr
    out = run.stdout + run.stderr
    found = re.findall(r"\(0010,0020\) LO \[(EV-[A-Z]+) ?\]", out.split("Find Response", 1)[-1])
    return sorted(found), out


EMPTY = ["EV-ABSENT", "EV-ZERO"]


class TestCFind:
    def test_two_quotation_marks_match_empty_or_absent(self, srv: ServerProcess) -> None:
        found, out = findscu(srv, 'AccessionNumber=""')
        assert found == EMPTY, out
        assert "Success" in out

    def test_not_universal_matching(self, srv: ServerProcess) -> None:
        found, _ = findscu(srv, "AccessionNumber=")
        assert found == ["EV-ABSENT", "EV-QUOTES", "EV-VAL", "EV-ZERO"]

    def test_modalities_in_study_and_a_key_without_column(self, srv: ServerProcess) -> None:
        assert findscu(srv, 'ModalitiesInStudy=""')[0] == ["EV-ABSENT"]
        assert findscu(srv, 'OperatorsName=""')[0] == ["EV-ZERO"]
        assert findscu(srv, 'AccessionNumber=""', "ModalitiesInStudy=CT")[0] == ["EV-ZERO"]

    def test_location_keys_are_never_empty(self, srv: ServerProcess) -> None:
        # Every entity is ONLINE at this AE: "" matches none.
        assert findscu(srv, 'InstanceAvailability=""')[0] == []
        assert findscu(srv, 'RetrieveAETitle=""')[0] == []

    def test_long_text_without_column_is_refused(self, srv: ServerProcess) -> None:
        found, out = findscu(srv, 'PatientComments=""')
        assert found == [] and "DataSetDoesNotMatchSOPClass" in out, out


@pytest.fixture(scope="module")
def client(srv: ServerProcess) -> DICOMwebClient:
    return DICOMwebClient(f"http://127.0.0.1:{srv.http_port}/dicomweb")


class TestQido:
    @staticmethod
    def _ids(found: list[dict]) -> list[str]:
        return sorted(s["00100020"]["Value"][0] for s in found)

    def test_emptyvaluematching_true(self, client: DICOMwebClient) -> None:
        found = client.search_for_studies(
            search_filters={"PatientID": "EV-*", "AccessionNumber": '""'},
            additional_params={"emptyvaluematching": "true"})
        assert self._ids(found) == EMPTY
        found = client.search_for_series(
            search_filters={"PatientID": "EV-*", "Modality": '""'},
            additional_params={"emptyvaluematching": "true"})
        assert self._ids(found) == ["EV-ABSENT"]

    def test_without_it_the_value_is_literal(self, client: DICOMwebClient) -> None:
        for params in ({}, {"emptyvaluematching": "false"}):
            found = client.search_for_studies(
                search_filters={"PatientID": "EV-*", "AccessionNumber": '""'},
                additional_params=params)
            assert self._ids(found) == ["EV-QUOTES"], params

    def test_no_warning_when_performed(self, srv: ServerProcess) -> None:
        r = requests.get(f"http://127.0.0.1:{srv.http_port}/dicomweb/studies",
                         params={"PatientID": "EV-*", "AccessionNumber": '""',
                                 "emptyvaluematching": "true"}, timeout=30)
        assert r.status_code == 200 and "Warning" not in r.headers
        assert self._ids(r.json()) == EMPTY


def test_archivist_find(srv: ServerProcess) -> None:
    """The CLI has the matching of C-FIND: ``archivist find AccessionNumber='""'``."""
    run = subprocess.run([sys.executable, "-m", "archivist.cli.main", "find", "--data",
                          str(srv.data_dir), "--level", "study", "PatientID=EV-*",
                          'AccessionNumber=""', "--json"],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert sorted(d["00100020"]["Value"][0] for d in json.loads(run.stdout)) == EMPTY
