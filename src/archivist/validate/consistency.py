"""Consistency across objects: the same entity must carry the same attributes (like dcentvfy).

PS3.3 C.7.1-C.7.3 and the Patient/Study/Series information entities of PS3.3 A.1.2: every
object of a study carries the Patient and Study modules, every object of a series the Series
modules, so objects that share a Study Instance UID must agree on the patient and study
attributes, objects that share a Series Instance UID on the series attributes, and a SOP Instance
UID names one object only (PS3.5 9.1).

:func:`entity_record` extracts the attributes compared; :func:`check_consistency` compares
records, which may come from files or from the archive's index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydicom.dataset import Dataset

from archivist.validate.encoding import text_value
from archivist.validate.findings import Finding, Severity

PATIENT_KEYS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")
STUDY_KEYS = ("StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName")
SERIES_KEYS = ("StudyInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "FrameOfReferenceUID")
IDENTITY_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")

_GROUPS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("StudyInstanceUID", "Patient", PATIENT_KEYS, "PS3.3 C.7.1.1"),
    ("StudyInstanceUID", "Study", STUDY_KEYS, "PS3.3 C.7.2.1"),
    ("SeriesInstanceUID", "Series", SERIES_KEYS, "PS3.3 C.7.3.1"),
    ("SOPInstanceUID", "Instance", ("SOPClassUID", "SeriesInstanceUID"), "PS3.5 9.1"),
)


def entity_record(ds: Dataset) -> dict[str, str]:
    """Return the identity, patient, study and series attributes of *ds* as strings."""
    record: dict[str, str] = {}
    for key in IDENTITY_KEYS + PATIENT_KEYS + STUDY_KEYS + SERIES_KEYS:
        if key in record:
            continue
        if key not in ds:
            continue
        record[key] = text_value(ds, key).strip()
    return record


def check_consistency(records: Iterable[tuple[str, Mapping[str, str]]]) -> list[Finding]:
    """Compare entity records across objects.

    Parameters
    ----------
    records : iterable of (label, record)
        A label (file path, or anything that names the object) and the mapping of
        :func:`entity_record`.

    Returns
    -------
    list of Finding
        One ``consistency.*`` error per attribute that differs within an entity, naming the two
        objects that disagree first; a warning for a patient identified by one Patient ID with
        different names.
    """
    records = list(records)
    findings: list[Finding] = []
    for key, entity, attributes, ref in _GROUPS:
        first: dict[tuple[str, str], tuple[str, str]] = {}
        reported: set[tuple[str, str]] = set()
        for label, record in records:
            uid = record.get(key, "")
            if not uid:
                continue
            for attr in attributes:
                if attr not in record:
                    continue
                value = record[attr]
                seen = first.setdefault((uid, attr), (label, value))
                if seen[1] != value and (uid, attr) not in reported:
                    reported.add((uid, attr))
                    rule = (
                        "consistency.duplicate-sop-instance"
                        if entity == "Instance"
                        else f"consistency.{entity.lower()}-attributes"
                    )
                    findings.append(
                        Finding(
                            Severity.ERROR, rule, f"/{attr}", entity, "",
                            f"{attr} differs within the {entity.lower()} with {key} {uid}: "
                            f"{seen[1]!r} in {seen[0]} but {value!r} in {label}.",
                            ref,
                        )
                    )
    by_patient: dict[str, tuple[str, str]] = {}
    warned: set[str] = set()
    for label, record in records:
        pid = record.get("PatientID", "")
        name = record.get("PatientName")
        if not pid or name is None:
            continue
        issuer = record.get("IssuerOfPatientID", "")
        key = f"{issuer}|{pid}"
        seen = by_patient.setdefault(key, (label, name))
        if seen[1] != name and key not in warned:
            warned.add(key)
            findings.append(
                Finding(
                    Severity.WARNING, "consistency.patient-id-names", "/PatientName", "Patient", "",
                    f"Patient ID {pid!r} has the name {seen[1]!r} in {seen[0]} but {name!r} in "
                    f"{label}.",
                    "PS3.3 C.7.1.1",
                )
            )
    return findings
