"""Modality Worklist (``worklist_dir``) on a real ``archivist serve``, queried by DCMTK's
``findscu -W`` and by pynetdicom: matching on top-level and Scheduled Procedure Step keys,
answers filled from the files, a file changed between queries, bad files skipped."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from archivist.dimse.worklist import MODALITY_WORKLIST_FIND
from archivist.testing.datasets import new_uid
from archivist.testing.server import ServerProcess

FINDSCU = "/usr/bin/findscu"
pytestmark = pytest.mark.skipif(not os.path.exists(FINDSCU), reason="DCMTK findscu needed")


def _worklist_file(path: Path, *, name: str, pid: str, accession: str, modality: str,
                   station: str, date: str, charset: str | None = None) -> None:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = pid
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.AccessionNumber = accession
    ds.StudyInstanceUID = new_uid()
    ds.RequestedProcedureID = "RP" + accession
    ds.RequestedProcedureDescription = f"{modality} exam"
    step = Dataset()
    step.Modality = modality
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = "093000"
    step.ScheduledProcedureStepID = "SPS" + accession
    step.ScheduledProcedureStepDescription = f"{modality} step"
    ds.ScheduledProcedureStepSequence = [step]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MODALITY_WORKLIST_FIND
    ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    tmp = tmp_path_factory.mktemp("mwl")
    folder = tmp / "worklist"
    folder.mkdir()
    _worklist_file(folder / "a.wl", name="MÜLLER^ANNA", pid="P1", accession="A1",
                   modality="MR", station="MR1", date="20261207", charset="ISO_IR 100")
    _worklist_file(folder / "b.wl", name="SMITH^BOB", pid="P2", accession="A2",
                   modality="CT", station="CT1", date="20261207")
    _worklist_file(folder / "c.wl", name="SMITH^CAROL", pid="P3", accession="A3",
                   modality="CT", station="CT1", date="20261220")
    (folder / "notes.txt").write_text("not a worklist file\n")
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_WORKLIST_DIR": str(folder)})
    srv.start()
    yield srv, folder
    srv.stop()


def _query(srv: ServerProcess, identifier: Dataset) -> list[Dataset]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MODALITY_WORKLIST_FIND)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        out = []
        for status, ds in assoc.send_c_find(identifier, MODALITY_WORKLIST_FIND):
            if status and status.Status in (0xFF00, 0xFF01):
                out.append(ds)
            else:
                assert status is not None and status.Status == 0x0000, status
    finally:
        assoc.release()
    return out


def _identifier(**step: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = ""
    ds.AccessionNumber = ""
    item = Dataset()
    item.Modality = step.get("Modality", "")
    item.ScheduledStationAETitle = step.get("ScheduledStationAETitle", "")
    item.ScheduledProcedureStepStartDate = step.get("ScheduledProcedureStepStartDate", "")
    item.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def test_findscu_finds_the_steps_of_a_station_on_a_day(server, tmp_path: Path) -> None:
    srv, _ = server
    done = subprocess.run(
        [FINDSCU, "-W", "-aec", "ARCHIVIST", "-X", "-od", str(tmp_path),
         "-k", "PatientName=", "-k", "AccessionNumber=",
         "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT1",
         "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261201-20261210",
         "-k", "ScheduledProcedureStepSequence[0].Modality=",
         "127.0.0.1", str(srv.dicom_port)],
        env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    answers = [pydicom.dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    assert [str(a.AccessionNumber) for a in answers] == ["A2"]
    assert answers[0].ScheduledProcedureStepSequence[0].Modality == "CT"


def test_matching_and_answers(server) -> None:
    srv, _ = server
    got = _query(srv, _identifier(Modality="CT"))
    assert sorted(str(d.AccessionNumber) for d in got) == ["A2", "A3"]
    step = got[0].ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepID.startswith("SPS")
    assert "ScheduledProcedureStepDescription" not in step  # not asked for
    named = _identifier()
    named.PatientName = "müller*"  # case and accents ignored, as C-FIND does by default
    (one,) = _query(srv, named)
    assert str(one.PatientName) == "MÜLLER^ANNA" and one.SpecificCharacterSet == "ISO_IR 100"
    assert _query(srv, _identifier(ScheduledStationAETitle="NOPE")) == []


def test_a_changed_file_is_read_again(server) -> None:
    srv, folder = server
    _worklist_file(folder / "b.wl", name="SMITH^BOB", pid="P2", accession="A2",
                   modality="US", station="US1", date="20261207")
    later = time.time() + 5
    os.utime(folder / "b.wl", (later, later))
    got = _query(srv, _identifier(Modality="US"))
    assert [str(d.AccessionNumber) for d in got] == ["A2"]


def test_answers_in_the_query_character_set_when_it_carries_the_values(server,
                                                                       tmp_path: Path) -> None:
    """A modality that asks in ISO_IR 100 gets a name of a UTF-8 worklist file in Latin-1
    (as the archive's C-FIND answers); without a character set in the query, in the file's."""
    srv, folder = server
    path = folder / "utf8.wl"
    _worklist_file(path, name="GRÖẞE^JÜRGEN", pid="P9", accession="A9", modality="XA",
                   station="XA1", date="20261207", charset="ISO_IR 192")
    _worklist_file(folder / "latin.wl", name="GRÖSSE^JÜRGEN", pid="P8", accession="A8",
                   modality="XA", station="XA1", date="20261207", charset="ISO_IR 192")
    try:
        for charset, name, want in (("ISO_IR 100", "latin", b"GR\xd6SSE^J\xdcRGEN"),
                                    (None, "utf8", "GRÖSSE^JÜRGEN".encode())):
            out = tmp_path / name
            out.mkdir()
            keys = ["-k", "PatientName=", "-k", "AccessionNumber=A8",
                    *(["-k", f"SpecificCharacterSet={charset}"] if charset else [])]
            done = subprocess.run(
                [FINDSCU, "-W", "-aec", "ARCHIVIST", "-X", "-od", str(out), *keys,
                 "127.0.0.1", str(srv.dicom_port)],
                env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True,
                timeout=60, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            (answer,) = [pydicom.dcmread(p) for p in out.glob("rsp*.dcm")]
            assert answer.SpecificCharacterSet == (charset or "ISO_IR 192")
            assert answer["PatientName"].value.original_string == want
        # ẞ (capital sharp s) has no Latin-1 code: that one stays in UTF-8.
        named = _identifier()
        named.SpecificCharacterSet = "ISO_IR 100"
        named.AccessionNumber = "A9"
        (one,) = _query(srv, named)
        assert one.SpecificCharacterSet == "ISO_IR 192" and one.PatientName == "GRÖẞE^JÜRGEN"
    finally:
        path.unlink()
        (folder / "latin.wl").unlink()


def test_an_entry_with_two_scheduled_steps_is_two_worklist_items(server) -> None:
    """A worklist item is one scheduled step (PS3.4 K.6.1.2.2): a file with two is answered
    once per matching step, each answer with that step alone; the file's cached data set is
    not changed by answering (asked twice, the same answers)."""
    srv, folder = server
    path = folder / "two-steps.wl"
    _worklist_file(path, name="TWO^STEPS", pid="P9", accession="A9", modality="CT",
                   station="CT9", date="20261207")
    ds = pydicom.dcmread(path)
    second = Dataset()
    second.Modality = "MR"
    second.ScheduledStationAETitle = "MR9"
    second.ScheduledProcedureStepStartDate = "20261207"
    second.ScheduledProcedureStepID = "SPSA9-MR"
    ds.ScheduledProcedureStepSequence.append(second)
    ds.save_as(path, enforce_file_format=True)
    named = _identifier()
    named.PatientID = "P9"
    for _ in range(2):
        got = _query(srv, named)
        assert sorted((len(a.ScheduledProcedureStepSequence),
                       str(a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID))
                      for a in got) == [(1, "SPSA9"), (1, "SPSA9-MR")]
    only_mr = _identifier(Modality="MR")
    only_mr.PatientID = "P9"
    (mr,) = _query(srv, only_mr)
    assert mr.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "MR9"
    path.unlink()
