"""Unified Procedure Step requests for tests: the N-CREATE Attribute List of a workitem (every
Type 1 and Type 2 attribute of PS3.4 Table CC.2.5-3), the N-SET that meets the final state
requirements, and an SCU association that sends UPS requests as PS3.4 CC.3.1.1 has them (UPS
Push as the SOP Class of the instance, on the context of the SOP class defining the request)."""

from __future__ import annotations

from typing import Any, Self

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pynetdicom import AE, evt

from archivist.archive.ups import UPS_PULL, UPS_PUSH, UPS_QUERY, UPS_WATCH
from archivist.testing.server import ServerProcess

__all__ = ["ALL_UPS", "Scu", "completion", "workitem"]

ALL_UPS = (UPS_PUSH, UPS_PULL, UPS_WATCH, UPS_QUERY)


def workitem(**values: Any) -> Dataset:
    """A UPS Push N-CREATE Attribute List with every Type 1 and Type 2 attribute of Table
    CC.2.5-3; `values` sets attributes by keyword (None removes one)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Anna"
    ds.PatientID = "UPS-PID-1"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.AdmissionID = ""
    ds.IssuerOfAdmissionIDSequence = Sequence([])
    ds.ReferencedRequestSequence = Sequence([])
    ds.ProcedureStepState = "SCHEDULED"
    ds.ScheduledProcedureStepPriority = "MEDIUM"
    ds.ProcedureStepLabel = "Lung nodule CAD"
    ds.WorklistLabel = "CAD"
    ds.ScheduledProcedureStepStartDateTime = "20261207090000"
    ds.InputReadinessState = "READY"
    ds.ScheduledStationNameCodeSequence = Sequence([])
    ds.ScheduledStationClassCodeSequence = Sequence([])
    ds.ScheduledStationGeographicLocationCodeSequence = Sequence([])
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "110005", "DCM", "CAD"
    ds.ScheduledWorkitemCodeSequence = Sequence([code])
    ds.InputInformationSequence = Sequence([])
    ds.UnifiedProcedureStepPerformedProcedureSequence = Sequence([])
    for keyword, value in values.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def completion() -> Dataset:
    """The N-SET Modification List meeting the final state requirements (Table CC.2.5-3)."""
    performed = Dataset()
    performed.PerformedProcedureStepStartDateTime = "20261207091000"
    performed.PerformedProcedureStepEndDateTime = "20261207092000"
    performed.OutputInformationSequence = Sequence([])
    mods = Dataset()
    mods.UnifiedProcedureStepPerformedProcedureSequence = Sequence([performed])
    return mods


class Scu:
    """One association proposing `classes`; requests name UPS Push as the SOP Class of the
    instance (CC.3.1.1) on the context of the SOP class that defines them."""

    def __init__(self, srv: ServerProcess, classes: tuple[str, ...] = ALL_UPS,
                 aet: str = "RIS") -> None:
        self.commands: list[Dataset] = []  # every response's command set

        def received(event: Any) -> None:
            self.commands.append(event.message.command_set)

        ae = AE(ae_title=aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        for uid in classes:
            ae.add_requested_context(uid)
        self.assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST",
                                  evt_handlers=[(evt.EVT_DIMSE_RECV, received)])
        assert self.assoc.is_established

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        if self.assoc.is_established:
            self.assoc.release()

    def create(self, ds: Dataset, uid: str | None = None) -> tuple[Dataset, str]:
        status, _ = self.assoc.send_n_create(ds, UPS_PUSH, uid, meta_uid=UPS_PUSH)
        # An assigned UID is in the response's command (PS3.7 10.1.5.1.2).
        return status, str(self.commands[-1].get("AffectedSOPInstanceUID", "") or uid or "")

    def action(self, uid: str, kind: int, info: Dataset | None,
               via: str = UPS_PULL, class_uid: str = UPS_PUSH) -> Dataset:
        status, _ = self.assoc.send_n_action(info, kind, class_uid, uid, meta_uid=via)
        return status

    def state(self, uid: str, state: str, transaction: str | None) -> Dataset:
        info = Dataset()
        info.ProcedureStepState = state
        if transaction is not None:
            info.TransactionUID = transaction
        return self.action(uid, 1, info, UPS_PULL)

    def cancel(self, uid: str, reason: str | None = None, via: str = UPS_PUSH) -> Dataset:
        info = None  # (no Action Information: pynetdicom sends none for an empty one)
        if reason:
            info = Dataset()
            info.ReasonForCancellation = reason
        return self.action(uid, 2, info, via)

    def subscribe(self, uid: str, receiving: str | None = "WATCHER",
                  lock: str | None = "FALSE", **keys: Any) -> Dataset:
        info = Dataset()
        if receiving is not None:
            info.ReceivingAE = receiving
        if lock is not None:
            info.DeletionLock = lock
        for keyword, value in keys.items():
            setattr(info, keyword, value)
        return self.action(uid, 3, info, UPS_WATCH)

    def set(self, uid: str, mods: Dataset, transaction: str | None = None) -> Dataset:
        if transaction is not None:
            mods.TransactionUID = transaction
        status, _ = self.assoc.send_n_set(mods, UPS_PUSH, uid, meta_uid=UPS_PULL)
        return status

    def get(self, uid: str, tags: list[int] | None = None,
            via: str = UPS_PUSH) -> tuple[Dataset, Dataset | None]:
        status, ds = self.assoc.send_n_get([Tag(t) for t in tags or []], UPS_PUSH, uid,
                                           meta_uid=via)
        return status, ds

    def find(self, query: Dataset, model: str = UPS_PULL) -> tuple[int, list[Dataset]]:
        found: list[Dataset] = []
        final = -1
        for status, identifier in self.assoc.send_c_find(query, model):
            if status is None:
                break
            if status.Status in (0xFF00, 0xFF01):
                assert identifier is not None
                found.append(identifier)
            else:
                final = int(status.Status)
        return final, found
