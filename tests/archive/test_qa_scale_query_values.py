"""Queries answer what is stored (QA round 4, scale helper).

- With ``--duplicates replace``, a new version of an instance that carries other patient, study
  and series values replaces them in the index: C-FIND and QIDO-RS answer the new values (as
  Orthanc's ``OverwriteInstances`` and dcm4chee's MERGE update policy do), and Modalities / SOP
  Classes in Study follow a changed Modality or SOP Class. Before, the first object's values
  stayed, even when it was the study's only instance and no stored object carried them.
- Request Attribute Sequence (0040,0275), a SERIES-level key of the Study Root model (PS3.4
  Table C.6-5), is returned with its stored items by C-FIND and QIDO-RS (it came back empty).

One real server; files stored with DCMTK storescu, queried with DCMTK findscu and over HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from archivist.testing.datasets import make_instance
from archivist.testing.server import ServerProcess

AET = "ARCHIVIST"
ROOT = "1.2.826.0.1.3680043.10.1235.97."
CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
ONE = ROOT + "1"      # a study of one instance, replaced by a version with other values
TWO = ROOT + "2"      # a study of two instances, one of them replaced
REQ = ROOT + "3"      # a study whose series carries a Request Attribute Sequence


def _tool(name: str) -> str:
    """A DCMTK tool (pynetdicom installs Python apps of the same names in the venv)."""
    venv_bin = os.path.dirname(sys.executable)
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and os.path.abspath(d) != venv_bin]
    found = shutil.which(name, path=os.pathsep.join(dirs))
    if found is None:
        pytest.fail(f"{name} (DCMTK) is required: apt-get install dcmtk")
    return found


def _version(path: Path, study: str, sop: str, *, new: bool, instance: int = 1) -> None:
    """The first (`new` False) or second version of an instance of `study`."""
    make_instance(
        path, study_uid=study, series_uid=f"{study}.1", sop_uid=sop,
        patient_id=f"QAREPL{study[-1]}",
        patient_name="NEWER^NAME" if new else "OLDER^NAME",
        study_description="SECOND DESC" if new else "FIRST DESC",
        accession_number="ACCNEW" if new else "ACCOLD",
        modality="MR" if new else "CT", sop_class_uid=MR if new else CT,
        instance_number=instance,
        extra={"SeriesDescription": "NEW SERIES" if new else "OLD SERIES",
               "BodyPartExamined": "HEAD" if new else "CHEST",
               "PatientSex": "F" if new else "M"})


def _store(port: int, *files: Path) -> None:
    run = subprocess.run([_tool("storescu"), "-aec", AET, "127.0.0.1", str(port),
                          *map(str, files)], check=False, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "TCP_NODELAY": "1"})
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("qa_scale_values")
    srv = ServerProcess(base / "data", extra_args=["--workers", "1", "--duplicates", "replace"])
    srv.start()
    try:
        first = [base / "one_v1.dcm", base / "two_a_v1.dcm", base / "two_b.dcm",
                 base / "req.dcm"]
        _version(first[0], ONE, f"{ONE}.1.1", new=False)
        _version(first[1], TWO, f"{TWO}.1.1", new=False)
        _version(first[2], TWO, f"{TWO}.1.2", new=False, instance=2)
        ds = make_instance(first[3], study_uid=REQ, series_uid=f"{REQ}.1", sop_uid=f"{REQ}.1.1",
                           patient_id="QAREQ")
        items = []
        for rp, sps in (("RP123", "SPS9"), ("RP124", "SPS10")):
            item = Dataset()
            item.RequestedProcedureID = rp
            item.ScheduledProcedureStepID = sps
            items.append(item)
        ds.RequestAttributesSequence = items
        ds.save_as(first[3], enforce_file_format=True)
        _store(srv.dicom_port, *first)
        second = [base / "one_v2.dcm", base / "two_a_v2.dcm"]
        _version(second[0], ONE, f"{ONE}.1.1", new=True)
        _version(second[1], TWO, f"{TWO}.1.1", new=True)
        _store(srv.dicom_port, *second)
        yield srv
    finally:
        srv.stop()


def _findscu(srv: ServerProcess, tmp_path: Path, level: str, *keys: str) -> list[Dataset]:
    out = tmp_path / f"rsp-{level}-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    model = "-P" if level == "PATIENT" else "-S"
    args = [_tool("findscu"), model, "-aec", AET, "-X", "-od", str(out),
            "-k", f"QueryRetrieveLevel={level}"]
    for k in keys:
        args += ["-k", k]
    run = subprocess.run([*args, "127.0.0.1", str(srv.dicom_port)], check=False,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TCP_NODELAY": "1"})
    assert run.returncode == 0, run.stderr
    return [pydicom.dcmread(p) for p in sorted(out.iterdir())]


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return [value] if isinstance(value, str) else list(value)


def _qido(srv: ServerProcess, path: str) -> list[dict]:
    with urllib.request.urlopen(f"{srv.url}/dicomweb/{path}", timeout=30) as r:
        body = r.read()
    return json.loads(body) if body else []


@pytest.mark.parametrize("study", [ONE, TWO])
def test_replaced_study_values_in_cfind(server: ServerProcess, tmp_path: Path,
                                       study: str) -> None:
    [ds] = _findscu(server, tmp_path, "STUDY", f"StudyInstanceUID={study}",
                    "StudyDescription=", "PatientName=", "AccessionNumber=",
                    "ModalitiesInStudy=", "SOPClassesInStudy=", "PatientSex=")
    assert ds.StudyDescription == "SECOND DESC"
    assert str(ds.PatientName) == "NEWER^NAME"
    assert ds.AccessionNumber == "ACCNEW"
    assert ds.PatientSex == "F"
    assert _values(ds, "ModalitiesInStudy") == ["MR"]
    # The replaced instance's class, and (study TWO) the other instance's
    assert sorted(_values(ds, "SOPClassesInStudy")) == ([MR] if study == ONE else [CT, MR])
    [se] = _findscu(server, tmp_path, "SERIES", f"StudyInstanceUID={study}",
                    "SeriesInstanceUID=", "Modality=", "SeriesDescription=",
                    "BodyPartExamined=")
    assert (se.Modality, se.SeriesDescription, se.BodyPartExamined) == ("MR", "NEW SERIES",
                                                                       "HEAD")


def test_replaced_values_matched(server: ServerProcess, tmp_path: Path) -> None:
    """Matching uses the new values too (the old ones are no longer stored anywhere)."""
    old = _findscu(server, tmp_path, "STUDY", "PatientName=OLDER*", "StudyInstanceUID=")
    assert {d.StudyInstanceUID for d in old} == set()
    new = _findscu(server, tmp_path, "STUDY", "PatientName=NEWER*", "StudyInstanceUID=")
    assert {d.StudyInstanceUID for d in new} == {ONE, TWO}
    only = _findscu(server, tmp_path, "STUDY", "ModalitiesInStudy=CT", "StudyInstanceUID=")
    assert not {d.StudyInstanceUID for d in only} & {ONE, TWO}
    pats = _findscu(server, tmp_path, "PATIENT", "PatientID=QAREPL1", "PatientName=")
    assert [str(d.PatientName) for d in pats] == ["NEWER^NAME"]


def test_replaced_values_in_qido(server: ServerProcess) -> None:
    [one] = _qido(server, f"studies?StudyInstanceUID={ONE}&includefield=StudyDescription")
    assert one["00081030"]["Value"] == ["SECOND DESC"]
    assert one["00100010"]["Value"] == [{"Alphabetic": "NEWER^NAME"}]
    assert one["00080061"]["Value"] == ["MR"]
    assert _qido(server, "studies?PatientName=OLDER*") == []
    [se] = _qido(server, f"studies/{ONE}/series?includefield=BodyPartExamined")
    assert se["00080060"]["Value"] == ["MR"]
    assert se["0008103E"]["Value"] == ["NEW SERIES"]


def test_request_attribute_sequence_at_series_level(server: ServerProcess,
                                                    tmp_path: Path) -> None:
    [se] = _findscu(server, tmp_path, "SERIES", f"StudyInstanceUID={REQ}", "SeriesInstanceUID=",
                    "(0040,0275)[0].RequestedProcedureID=",
                    "(0040,0275)[0].ScheduledProcedureStepID=")
    got = [(i.RequestedProcedureID, i.ScheduledProcedureStepID)
           for i in se.RequestAttributesSequence]
    assert got == [("RP123", "SPS9"), ("RP124", "SPS10")]
    [js] = _qido(server, f"studies/{REQ}/series?includefield=00400275")
    items = js["00400275"]["Value"]
    assert [(i["00401001"]["Value"], i["00400009"]["Value"]) for i in items] == [
        (["RP123"], ["SPS9"]), (["RP124"], ["SPS10"])]
