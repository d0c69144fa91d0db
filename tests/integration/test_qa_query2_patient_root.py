"""C-FIND below STUDY level and in the Patient Root model, with DCMTK findscu against a real
`archivist serve` (QA round 4, query2). What is checked here was compared with Orthanc and
DCMTK's dcmqrscp on the same data; where they differ the answer is the one PS3.4 asks for:

- two patients sharing a Patient ID under different Issuers of Patient ID stay two patients
  (Patient Root PATIENT and STUDY level, matching on the issuer; Orthanc and dcmqrscp merge them
  or ignore the issuer);
- a unique key of a level above that names another entity matches nothing (C.4.1.3.1);
- IMAGE level: Instance Number, SOP Class UID lists, Content Date ranges, Number of Frames and
  Empty Value Matching on it (C.2.2.2.7), the counts and Modalities in Study asked at SERIES
  level (Orthanc answers them empty).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess
from conftest import dcmtk_tool

pytestmark = pytest.mark.timeout(120)

AET = "ARCHIVIST"
CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    """Patient Q2P under issuers HOSP_A (one CT study: 2 instances, the second of 3 frames) and
    HOSP_B (one study: a CT and an SC series)."""
    root = tmp_path_factory.mktemp("q2")
    srv = ServerProcess(root / "data")
    srv.start()
    uids = {"a": new_uid(), "b": new_uid(), "a_ct": new_uid(), "b_ct": new_uid(),
            "b_sc": new_uid()}
    plan = [
        ("a", "a_ct", "CT", CT, "HOSP_A", "Q2^ALPHA", 1, {"ContentDate": "20210101"}, 1),
        ("a", "a_ct", "CT", CT, "HOSP_A", "Q2^ALPHA", 2, {"ContentDate": "20210105"}, 3),
        ("b", "b_ct", "CT", CT, "HOSP_B", "Q2^BETA", 1, {}, 1),
        ("b", "b_sc", "OT", SC, "HOSP_B", "Q2^BETA", 1, {"ConversionType": "WSD"}, 1),
    ]
    files: list[str] = []
    for study, series, modality, sop_class, issuer, name, number, extra, frames in plan:
        path = root / f"{len(files)}.dcm"
        make_instance(path, study_uid=uids[study], series_uid=uids[series], patient_id="Q2P",
                      patient_name=name, modality=modality, sop_class_uid=sop_class,
                      instance_number=number, frames=frames,
                      extra={"IssuerOfPatientID": issuer, **extra})
        files.append(str(path))
    subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1", str(srv.dicom_port),
                    *files], check=True, capture_output=True, env={"TCP_NODELAY": "1"},
                   timeout=60)
    yield srv, uids
    srv.stop()


def find(srv: ServerProcess, tmp_path: Path, model: str, *keys: str) -> list[pydicom.Dataset]:
    out = tmp_path / "rsp"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    args = [dcmtk_tool("findscu"), model, "-X", "-od", str(out), "-aec", AET]
    for key in keys:
        args += ["-k", key]
    proc = subprocess.run([*args, "127.0.0.1", str(srv.dicom_port)], capture_output=True,
                          text=True, env={"TCP_NODELAY": "1"}, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return [pydicom.dcmread(p) for p in sorted(out.iterdir())]


def test_patients_sharing_an_id_stay_apart(archive: tuple, tmp_path: Path) -> None:
    srv, uids = archive
    rows = find(srv, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientID=Q2P",
                "IssuerOfPatientID=", "NumberOfPatientRelatedStudies=",
                "NumberOfPatientRelatedSeries=", "NumberOfPatientRelatedInstances=")
    got = {(r.IssuerOfPatientID, r.NumberOfPatientRelatedStudies,
            r.NumberOfPatientRelatedSeries, r.NumberOfPatientRelatedInstances) for r in rows}
    assert got == {("HOSP_A", 1, 1, 2), ("HOSP_B", 1, 2, 2)}
    rows = find(srv, tmp_path, "-P", "QueryRetrieveLevel=STUDY", "PatientID=Q2P",
                "IssuerOfPatientID=HOSP_B", "StudyInstanceUID=")
    assert [r.StudyInstanceUID for r in rows] == [uids["b"]]


def test_a_unique_key_above_naming_another_entity_matches_nothing(archive: tuple,
                                                                  tmp_path: Path) -> None:
    srv, uids = archive
    assert find(srv, tmp_path, "-P", "QueryRetrieveLevel=SERIES", "PatientID=OTHER",
                f"StudyInstanceUID={uids['a']}", "SeriesInstanceUID=") == []
    rows = find(srv, tmp_path, "-P", "QueryRetrieveLevel=SERIES", "PatientID=Q2P",
                f"StudyInstanceUID={uids['b']}", "SeriesInstanceUID=", "Modality=",
                "NumberOfSeriesRelatedInstances=", "NumberOfStudyRelatedInstances=",
                "ModalitiesInStudy=")
    assert {(r.Modality, r.NumberOfSeriesRelatedInstances) for r in rows} == {("CT", 1),
                                                                              ("OT", 1)}
    assert all(r.NumberOfStudyRelatedInstances == 2 for r in rows)
    assert all(sorted(r.ModalitiesInStudy) == ["CT", "OT"] for r in rows)


def test_image_level_keys(archive: tuple, tmp_path: Path) -> None:
    srv, uids = archive
    base = ("QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={uids['a']}",
            f"SeriesInstanceUID={uids['a_ct']}", "SOPInstanceUID=")
    rows = find(srv, tmp_path, "-S", *base, "ContentDate=20210102-", "InstanceNumber=")
    assert [r.InstanceNumber for r in rows] == [2]
    rows = find(srv, tmp_path, "-S", *base, "NumberOfFrames=3", "InstanceNumber=")
    assert [r.InstanceNumber for r in rows] == [2]
    rows = find(srv, tmp_path, "-S", *base, 'NumberOfFrames=""', "InstanceNumber=")
    assert [r.InstanceNumber for r in rows] == [1]
    rows = find(srv, tmp_path, "-P", "QueryRetrieveLevel=IMAGE", "PatientID=Q2P",
                f"StudyInstanceUID={uids['b']}", f"SOPClassUID={SC}\\1.2.3", "SOPInstanceUID=",
                "SeriesInstanceUID=")
    assert [r.SeriesInstanceUID for r in rows] == [uids["b_sc"]]


@pytest.fixture(scope="module")
def comments(archive: tuple, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Study X: series 1 (Image Comments FIRST) then series 2 (SECOND), read by READER^ONE;
    study Y: one instance with Image Comments SECOND. Patient Q2C, Patient Comments Q2ETHNIC."""
    srv, _ = archive
    root = tmp_path_factory.mktemp("q2c")
    uids = {"x": new_uid(), "y": new_uid(), "x1": new_uid(), "x2": new_uid(), "y1": new_uid()}
    files: list[str] = []
    for study, series, comment, number in (("x", "x1", "FIRST", 1), ("x", "x2", "SECOND", 2),
                                           ("y", "y1", "SECOND", 1)):
        path = root / f"{len(files)}.dcm"
        extra = {"ImageComments": comment, "PatientComments": "Q2ETHNIC"}
        if study == "x":
            extra["NameOfPhysiciansReadingStudy"] = "READER^ONE"
        make_instance(path, study_uid=uids[study], series_uid=uids[series], patient_id="Q2C",
                      series_number=number, study_date="20190309", extra=extra)
        files.append(str(path))
    subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1", str(srv.dicom_port),
                    *files], check=True, capture_output=True, env={"TCP_NODELAY": "1"},
                   timeout=60)
    return uids


def test_keys_of_a_lower_level_are_ignored_whether_indexed_or_not(
        archive: tuple, comments: dict[str, str], tmp_path: Path) -> None:
    """A key of a level below the query's (PS3.4 C.4.1.3.1: matching is at the Query/Retrieve
    Level and above) does not narrow the result, whether the archive has a column for it
    (Content Date) or matches it on the attributes it keeps (Image Comments). Before, Image
    Comments at STUDY or SERIES level was matched against the first instance stored in the
    study or series: study X was found by its first image's comment only."""
    srv, _ = archive
    uids = comments
    study = ("QueryRetrieveLevel=STUDY", "PatientID=Q2C", "StudyInstanceUID=")
    both = {uids["x"], uids["y"]}
    rows = find(srv, tmp_path, "-S", *study, "ContentDate=19000101")
    assert {r.StudyInstanceUID for r in rows} == both
    rows = find(srv, tmp_path, "-S", *study, "ImageComments=SECOND")
    assert {r.StudyInstanceUID for r in rows} == both
    rows = find(srv, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientID=Q2C",
                "ImageComments=NOTHING")
    assert len(rows) == 1
    series = ("QueryRetrieveLevel=SERIES", f"StudyInstanceUID={uids['x']}", "SeriesInstanceUID=")
    rows = find(srv, tmp_path, "-S", *series, "ImageComments=SECOND")
    assert {r.SeriesInstanceUID for r in rows} == {uids["x1"], uids["x2"]}
    # At their own level, and for keys of the levels above, they are matched.
    rows = find(srv, tmp_path, "-S", "QueryRetrieveLevel=IMAGE", "PatientID=Q2C",
                "ImageComments=SECOND", "SOPInstanceUID=", "SeriesInstanceUID=")
    assert {r.SeriesInstanceUID for r in rows} == {uids["x2"], uids["y1"]}
    rows = find(srv, tmp_path, "-S", *study, "NameOfPhysiciansReadingStudy=READER^ONE")
    assert {r.StudyInstanceUID for r in rows} == {uids["x"]}
    rows = find(srv, tmp_path, "-S", *series, "PatientComments=Q2ETHNIC")
    assert len(rows) == 2
    assert find(srv, tmp_path, "-S", *series, "PatientComments=OTHER") == []
