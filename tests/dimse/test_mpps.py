"""Modality Performed Procedure Step SCP on a real ``archivist serve``: a modality (pynetdicom's
SCU) creates steps with N-CREATE and updates them with N-SET, reads one back with N-GET; the
steps are listed over HTTP; a worklist entry a step names changes its Scheduled Procedure Step
Status for DCMTK's ``findscu -W``. Refusals carry the status PS3.4 F.7.2 gives them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityPerformedProcedureStepRetrieve,
)

from archivist.dimse.worklist import MODALITY_WORKLIST_FIND
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.mpps import completion, in_progress
from archivist.testing.server import ServerProcess

FINDSCU = "/usr/bin/findscu"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("mpps")
    folder = tmp / "worklist"
    folder.mkdir()
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_WORKLIST_DIR": str(folder)})
    srv.worklist = folder  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


class _Modality:
    """One association of an MPPS SCU; `commands` holds every response command it received."""

    def __init__(self, srv: ServerProcess) -> None:
        self.commands: list[Dataset] = []

        def received(event: Any) -> None:
            self.commands.append(event.message.command_set)

        ae = AE(ae_title="CT_SCANNER")
        ae.add_requested_context(ModalityPerformedProcedureStep)
        ae.add_requested_context(ModalityPerformedProcedureStepRetrieve)
        self.assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST",
                                  evt_handlers=[(evt.EVT_DIMSE_RECV, received)])
        assert self.assoc.is_established

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.assoc.release()

    def create(self, ds: Dataset, uid: str | None) -> Dataset:
        status, _ = self.assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
        return status

    def set(self, ds: Dataset, uid: str) -> Dataset:
        status, _ = self.assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
        return status


def _api(srv: ServerProcess, path: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{srv.http_port}{path}", timeout=30)


def test_a_step_from_creation_to_completion(server: ServerProcess) -> None:
    study, uid = new_uid(), new_uid()
    stored_sop = new_uid()
    with _Modality(server) as modality:
        assert modality.create(in_progress(study), uid).Status == 0x0000
        listed = _api(server, f"/api/mpps?study={study}").json()["mpps"]
        assert [(s["sop_instance_uid"], s["status"]) for s in listed] == [(uid, "IN PROGRESS")]
        # Completing needs the end date and time (the final state's Type 1 attributes).
        incomplete = Dataset()
        incomplete.PerformedProcedureStepStatus = "COMPLETED"
        status = modality.set(incomplete, uid)
        assert status.Status == 0x0121, status
        assert "(0040,0250)" in status.ErrorComment
        # The patient may be repeated as created, not changed.
        same = Dataset()
        same.PatientID = "MPPS-PID-7"
        same.PerformedProcedureStepDescription = "CT chest and abdomen"
        assert modality.set(same, uid).Status == 0x0000
        changed = Dataset()
        changed.PatientID = "SOMEONE-ELSE"
        assert modality.set(changed, uid).Status == 0x0106
        assert modality.set(completion([stored_sop, new_uid()]), uid).Status == 0x0000
        # Final: no more updates.
        status = modality.set(completion([]), uid)
        assert status.Status == 0x0110, status
        assert "may no longer be updated" in status.ErrorComment

        status, got = modality.assoc.send_n_get(
            [0x00400252, 0x00400254, 0x00100020], ModalityPerformedProcedureStepRetrieve, uid)
        assert status.Status == 0x0000
        assert got.PerformedProcedureStepStatus == "COMPLETED"
        assert got.PerformedProcedureStepDescription == "CT chest and abdomen"
        assert got.PatientID == "MPPS-PID-7"
    body = _api(server, f"/api/mpps/{uid}").json()
    assert body["status"] == "COMPLETED" and body["series"] == 1 and body["images"] == 2
    assert body["end"] == "20261207 103000"
    assert body["arrival"]["referenced"] == 2 and body["arrival"]["stored"] == 0
    assert body["dataset"]["00400252"]["Value"] == ["COMPLETED"]
    assert "Roe" not in server.log() and "MPPS-PID-7" not in server.log()


def test_the_study_page_lists_the_steps_performed_for_it(server: ServerProcess,
                                                        tmp_path: Path) -> None:
    """The archive's study page shows each MPPS of the study and how many of the images it
    lists are stored (one of two, after storescu sends one of them)."""
    study, uid = new_uid(), new_uid()
    image = tmp_path / "one.dcm"
    sop = new_uid()
    make_instance(image, study_uid=study, sop_uid=sop)
    done = subprocess.run(["storescu", "-aec", "ARCHIVIST", "127.0.0.1", str(server.dicom_port),
                           str(image)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TCP_NODELAY": "1"}, check=False)
    assert done.returncode == 0, done.stderr
    with _Modality(server) as modality:
        assert modality.create(in_progress(study, "PAGE1"), uid).Status == 0x0000
        assert modality.set(completion([sop, new_uid()]), uid).Status == 0x0000
    page = requests.get(f"{server.url}/archive/studies/{study}", timeout=30)
    assert page.status_code == 200
    section = page.text.split("<table id=mpps>", 1)[1]
    assert "COMPLETED" in section and "PPS-PAGE1" in section and "1 of 2" in section
    assert f"/api/mpps/{uid}" in section


def test_refusals(server: ServerProcess) -> None:
    study, uid = new_uid(), new_uid()
    with _Modality(server) as modality:
        missing = modality.create(in_progress(study, Modality=None), uid)
        assert missing.Status == 0x0120, missing
        assert missing.ErrorComment.startswith("(0008,0060)"), missing
        assert modality.create(in_progress(study, PerformedStationAETitle=""),
                               uid).Status == 0x0121
        assert modality.create(in_progress(study, PerformedProcedureStepStatus="COMPLETED"),
                               uid).Status == 0x0106
        assert modality.create(in_progress(study), uid).Status == 0x0000
        assert modality.create(in_progress(study), uid).Status == 0x0111  # duplicate
        bogus = Dataset()
        bogus.PerformedProcedureStepStatus = "PAUSED"
        assert modality.set(bogus, uid).Status == 0x0106
        assert modality.set(completion([]), new_uid()).Status == 0x0112
        status, _ = modality.assoc.send_n_get([], ModalityPerformedProcedureStepRetrieve,
                                              new_uid())
        assert status.Status == 0x0112
    # Refused requests changed nothing.
    (step,) = _api(server, f"/api/mpps?study={study}").json()["mpps"]
    assert step["status"] == "IN PROGRESS" and step["modality"] == "CT"
    assert _api(server, "/api/mpps?status=paused").status_code == 400
    assert _api(server, "/api/mpps/not-a-uid").status_code == 400
    assert _api(server, f"/api/mpps/{new_uid()}").status_code == 404


def test_the_archive_assigns_a_uid_when_the_modality_gives_none(server: ServerProcess) -> None:
    study = new_uid()
    with _Modality(server) as modality:
        assert modality.create(in_progress(study), None).Status == 0x0000
        (rsp,) = [c for c in modality.commands if c.CommandField == 0x8140]
    assigned = str(rsp.AffectedSOPInstanceUID)
    (step,) = _api(server, f"/api/mpps?study={study}").json()["mpps"]
    assert step["sop_instance_uid"] == assigned


def _worklist_entry(path: Path, study: str, sps_id: str) -> None:
    ds = Dataset()
    ds.PatientName = "Roe^Mpps"
    ds.PatientID = "MPPS-PID-7"
    ds.AccessionNumber = "ACC" + sps_id
    ds.StudyInstanceUID = study
    ds.RequestedProcedureID = "RP1"
    step = Dataset()
    step.Modality = "CT"
    step.ScheduledStationAETitle = "CT_SCANNER"
    step.ScheduledProcedureStepStartDate = "20261207"
    step.ScheduledProcedureStepID = sps_id
    step.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = [step]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MODALITY_WORKLIST_FIND
    ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.save_as(path, enforce_file_format=True)


def _findscu(srv: ServerProcess, out: Path, status: str) -> dict[str, str]:
    """Accession number -> Scheduled Procedure Step Status of the steps `findscu -W` finds
    with that status (empty: any)."""
    out.mkdir()
    done = subprocess.run(
        [FINDSCU, "-W", "-aec", "ARCHIVIST", "-X", "-od", str(out),
         "-k", "AccessionNumber=", "-k", "StudyInstanceUID=",
         "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT_SCANNER",
         "-k", f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus={status}",
         "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID=",
         "127.0.0.1", str(srv.dicom_port)],
        env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    answers = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    return {str(a.AccessionNumber): str(a.ScheduledProcedureStepSequence[0]
                                        .ScheduledProcedureStepStatus) for a in answers}


@pytest.mark.skipif(not os.path.exists(FINDSCU), reason="DCMTK findscu needed")
def test_the_worklist_shows_what_was_performed(server: ServerProcess, tmp_path: Path) -> None:
    folder: Path = server.worklist  # type: ignore[attr-defined]
    study = new_uid()
    _worklist_entry(folder / "one.wl", study, "WL1")
    _worklist_entry(folder / "two.wl", study, "WL2")
    assert _findscu(server, tmp_path / "a", "SCHEDULED") == {"ACCWL1": "SCHEDULED",
                                                             "ACCWL2": "SCHEDULED"}
    uid = new_uid()
    with _Modality(server) as modality:
        assert modality.create(in_progress(study, "WL1"), uid).Status == 0x0000
        assert _findscu(server, tmp_path / "b", "SCHEDULED") == {"ACCWL2": "SCHEDULED"}
        assert _findscu(server, tmp_path / "c", "STARTED") == {"ACCWL1": "STARTED"}
        assert modality.set(completion([]), uid).Status == 0x0000
    assert _findscu(server, tmp_path / "d", "") == {"ACCWL1": "COMPLETED",
                                                    "ACCWL2": "SCHEDULED"}
