"""Modality Performed Procedure Step data sets for tests, as a CT modality sends them: the
N-CREATE Attribute List of a step IN PROGRESS (every Type 1 and Type 2 attribute of PS3.4
Table F.7.2-1) and the N-SET Modification List that completes it."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from archivist.testing.datasets import new_uid

__all__ = ["completion", "in_progress", "scheduled_item"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def scheduled_item(study: str, sps_id: str) -> Dataset:
    """One Scheduled Step Attributes Sequence item: the step `sps_id` of study `study`."""
    item = Dataset()
    item.StudyInstanceUID = study
    item.AccessionNumber = "ACC" + sps_id
    item.ReferencedStudySequence = []
    item.RequestedProcedureID = "RP" + sps_id
    item.RequestedProcedureDescription = ""
    item.ScheduledProcedureStepID = sps_id
    item.ScheduledProcedureStepDescription = ""
    item.ScheduledProtocolCodeSequence = []
    return item


def in_progress(study: str, sps_id: str = "SPS1", **changes: Any) -> Dataset:
    """An N-CREATE Attribute List; `changes` sets attributes by keyword (None removes one)."""
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = [scheduled_item(study, sps_id)]
    ds.PatientName = "Roe^Mpps"
    ds.PatientID = "MPPS-PID-7"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.ReferencedPatientSequence = []
    ds.PerformedProcedureStepID = "PPS-" + sps_id
    ds.PerformedStationAETitle = "CT_SCANNER"
    ds.PerformedStationName = ""
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = "20261207"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = "CT chest"
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "CT"
    ds.StudyID = "1"
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def completion(sops: list[str], status: str = "COMPLETED") -> Dataset:
    """An N-SET Modification List ending the step: end date and time, and one performed
    series listing the CT images `sops`."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261207"
    ds.PerformedProcedureStepEndTime = "103000"
    series = Dataset()
    series.SeriesInstanceUID = new_uid()
    series.ProtocolName = "chest"
    series.RetrieveAETitle = ""
    series.SeriesDescription = ""
    series.PerformingPhysicianName = ""
    series.OperatorsName = ""
    refs = []
    for sop in sops:
        ref = Dataset()
        ref.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        ref.ReferencedSOPInstanceUID = sop
        refs.append(ref)
    series.ReferencedImageSequence = refs
    series.ReferencedNonImageCompositeSOPInstanceSequence = []
    ds.PerformedSeriesSequence = [series]
    return ds
