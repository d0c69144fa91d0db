"""QA (session 20, workflow services as a modality's integration engineer meets them): what a
refusal tells the requestor, on a real ``archivist serve`` with pynetdicom as the SCU.

- An Error Comment (LO) holds 64 characters, and longer ones were cut: a Storage Commitment
  N-ACTION on another SOP Instance was told to use "...SOP Instance 1.2.840.10008", a UID that
  is not the well-known instance; a UPS request for an unknown workitem (0xC307) ended
  "...is not a UPS Instan". Each now arrives whole.
- A Modality Worklist query whose Scheduled Procedure Step Sequence key holds two items (a
  sequence key holds one, PS3.4 C.2.2.2.6) was matched as both items at once and answered
  nothing with Success; it is refused (0xA900) saying why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from archivist.archive.ups import UPS_PULL, UPS_PUSH, UPS_WATCH
from archivist.dimse.commitment import STORAGE_COMMITMENT_INSTANCE
from archivist.dimse.worklist import MODALITY_WORKLIST_FIND
from archivist.testing.datasets import new_uid
from archivist.testing.server import ServerProcess
from archivist.testing.ups import Scu, completion

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _worklist_file(path: Path) -> None:
    ds = Dataset()
    ds.PatientName = "Roe^Worklist"
    ds.PatientID = "S20-WL-1"
    ds.AccessionNumber = "S20A1"
    ds.StudyInstanceUID = new_uid()
    steps = []
    for modality, station in (("CT", "CT1"), ("MR", "MR1")):
        step = Dataset()
        step.Modality = modality
        step.ScheduledStationAETitle = station
        step.ScheduledProcedureStepStartDate = "20261207"
        step.ScheduledProcedureStepID = "SPS-" + modality
        steps.append(step)
    ds.ScheduledProcedureStepSequence = steps
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MODALITY_WORKLIST_FIND
    ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("s20-workflow")
    folder = tmp / "worklist"
    folder.mkdir()
    _worklist_file(folder / "one.wl")
    srv = ServerProcess(tmp / "data", extra_args=["--workers", "1"],
                        env={"ARCHIVIST_WORKLIST_DIR": str(folder)})
    srv.start()
    yield srv
    srv.stop()


def _commitment(srv: ServerProcess, instance: str, info: Dataset) -> Dataset:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, instance)
    finally:
        assoc.release()
    return status


def _request(*refs: tuple[str, str]) -> Dataset:
    info = Dataset()
    info.TransactionUID = new_uid()
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        if sop_class:
            item.ReferencedSOPClassUID = sop_class
        if sop_instance:
            item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    info.ReferencedSOPSequence = items
    return info


def test_commitment_on_another_instance_names_the_well_known_one_whole(
        server: ServerProcess) -> None:
    status = _commitment(server, new_uid(), _request((CT_IMAGE, new_uid())))
    assert status.Status == 0x0112
    comment = str(status.ErrorComment)
    assert comment.endswith(STORAGE_COMMITMENT_INSTANCE), comment


def test_commitment_item_without_its_uids_is_said_whole(server: ServerProcess) -> None:
    status = _commitment(server, STORAGE_COMMITMENT_INSTANCE, _request((CT_IMAGE, "")))
    assert status.Status == 0x0120
    assert str(status.ErrorComment) == ("Referenced SOP Sequence item without SOP Class or "
                                        "Instance UID")


def test_an_unknown_workitem_is_said_whole_by_every_request(server: ServerProcess) -> None:
    said = "SOP Instance UID is not a UPS Instance managed by this SCP"
    unknown = new_uid()
    with Scu(server) as scu:
        got, _ = scu.get(unknown)
        subscribe = Dataset()
        subscribe.ReceivingAE = "WATCHER"
        answers = {
            "N-GET": got,
            "N-SET": scu.set(unknown, completion(), new_uid()),
            "Change State": scu.state(unknown, "IN PROGRESS", new_uid()),
            "Request Cancellation": scu.cancel(unknown, via=UPS_PUSH),
            "Unsubscribe": scu.action(unknown, 4, subscribe, UPS_WATCH),
        }
        assert scu.get(unknown, via=UPS_PULL)[0].ErrorComment == said
    for request, status in answers.items():
        assert (hex(status.Status), status.get("ErrorComment")) == (hex(0xC307), said), request


def test_a_refusal_about_one_attribute_says_its_rule_whole(server: ServerProcess) -> None:
    """A UPS refusal worded "(gggg,eeee) ..." (as UPS-RS gives it) loses the tag over DIMSE,
    where the Attribute Identifier List names it, so the rule fits in the Error Comment:
    "...must be IN PROGRESS, COMPLETED" had lost its "or CANCELED"."""
    from archivist.testing.ups import workitem

    with Scu(server) as scu:
        status, uid = scu.create(workitem())
        assert status.Status == 0x0000, status
        changed = scu.state(uid, "FINISHED", new_uid())
        mods = Dataset()
        mods.ProcedureStepState = "IN PROGRESS"
        updated = scu.set(uid, mods)
    assert changed.ErrorComment == ("Procedure Step State must be IN PROGRESS, COMPLETED or "
                                    "CANCELED"), changed
    assert updated.ErrorComment == ("Procedure Step State is set by Change State, not by an "
                                    "update"), updated


def _worklist(srv: ServerProcess, identifier: Dataset) -> list[tuple[int, Dataset | None,
                                                                     Dataset | None]]:
    ae = AE(ae_title="CT1")
    ae.add_requested_context(MODALITY_WORKLIST_FIND)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        return [(int(status.Status), status, ds)
                for status, ds in assoc.send_c_find(identifier, MODALITY_WORKLIST_FIND)]
    finally:
        assoc.release()


def _step(**keys: str) -> Dataset:
    item = Dataset()
    item.ScheduledProcedureStepID = ""
    for keyword, value in keys.items():
        setattr(item, keyword, value)
    return item


def test_a_worklist_query_of_two_scheduled_steps_is_refused_saying_why(
        server: ServerProcess) -> None:
    query = Dataset()
    query.AccessionNumber = ""
    query.ScheduledProcedureStepSequence = [_step(Modality="CT"), _step(Modality="MR")]
    ((status, answer, _),) = _worklist(server, query)
    assert hex(status) == hex(0xA900)
    assert answer is not None
    assert "one item" in str(answer.ErrorComment)
    # One item per key, as modalities send: each step found, the file's two apart.
    for modality in ("CT", "MR"):
        query.ScheduledProcedureStepSequence = [_step(Modality=modality)]
        answers = _worklist(server, query)
        assert [s for s, _, _ in answers] == [0xFF00, 0x0000]
        found = answers[0][2]
        assert found is not None
        assert found.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == \
            "SPS-" + modality
