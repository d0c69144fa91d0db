"""Query/Retrieve levels and the matching keys the archive indexes (PS3.4 C.6.1.1, C.6.2.1)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class QueryLevel(enum.Enum):
    """Query/Retrieve Level (0008,0052) values, top to bottom."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def parse(cls, text: str) -> QueryLevel:
        """Accept the DICOM value or a friendly name (``instance`` for IMAGE), any case."""
        value = str(text).strip().upper()
        if value == "INSTANCE":
            value = "IMAGE"
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown query level {text!r}") from None


_RANK = {QueryLevel.PATIENT: 0, QueryLevel.STUDY: 1, QueryLevel.SERIES: 2, QueryLevel.IMAGE: 3}


class MatchKind(enum.Enum):
    """How a key is matched (PS3.4 C.2.2.2)."""

    TEXT = "text"        # single value, wildcard, universal
    PN = "pn"            # like TEXT, optionally case-insensitive
    UID = "uid"          # single value or list of UIDs (C.2.2.2.2)
    DATE = "date"        # single value or range (C.2.2.2.5)
    TIME = "time"        # single value or range
    DATETIME = "datetime"  # single value or range (DT, matched on the stored attributes)
    INT = "int"          # single value (IS / US)
    MULTI = "multi"      # multi-valued stored attribute: any of the query values
    COUNT = "count"      # computed count, return key only


@dataclass(frozen=True)
class KeyDef:
    """One indexed key: the level it belongs to, how it matches, whether it is the unique key."""

    keyword: str
    level: QueryLevel
    kind: MatchKind
    unique: bool = False


_P, _ST, _SE, _IM = QueryLevel.PATIENT, QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE
_T, _PN, _U, _D, _TM, _I, _M, _C = (
    MatchKind.TEXT, MatchKind.PN, MatchKind.UID, MatchKind.DATE, MatchKind.TIME, MatchKind.INT,
    MatchKind.MULTI, MatchKind.COUNT,
)

#: Every key with a typed column in the index. Keys not listed here are still returned when the
#: stored objects carry them, but are matched by a filter over the stored attributes.
KEYS: dict[str, KeyDef] = {
    k.keyword: k
    for k in [
        KeyDef("PatientID", _P, _T, unique=True),
        KeyDef("IssuerOfPatientID", _P, _T),
        KeyDef("PatientName", _P, _PN),
        KeyDef("PatientBirthDate", _P, _D),
        KeyDef("PatientBirthTime", _P, _TM),
        KeyDef("PatientSex", _P, _T),
        KeyDef("NumberOfPatientRelatedStudies", _P, _C),
        KeyDef("NumberOfPatientRelatedSeries", _P, _C),
        KeyDef("NumberOfPatientRelatedInstances", _P, _C),
        KeyDef("StudyInstanceUID", _ST, _U, unique=True),
        KeyDef("StudyDate", _ST, _D),
        KeyDef("StudyTime", _ST, _TM),
        KeyDef("AccessionNumber", _ST, _T),
        KeyDef("StudyID", _ST, _T),
        KeyDef("ReferringPhysicianName", _ST, _PN),
        KeyDef("StudyDescription", _ST, _T),
        KeyDef("PatientAge", _ST, _T),
        KeyDef("PatientSize", _ST, _T),
        KeyDef("PatientWeight", _ST, _T),
        KeyDef("InstitutionName", _ST, _T),
        KeyDef("ModalitiesInStudy", _ST, _M),
        KeyDef("SOPClassesInStudy", _ST, _M),
        KeyDef("NumberOfStudyRelatedSeries", _ST, _C),
        KeyDef("NumberOfStudyRelatedInstances", _ST, _C),
        KeyDef("SeriesInstanceUID", _SE, _U, unique=True),
        KeyDef("Modality", _SE, _T),
        KeyDef("SeriesNumber", _SE, _I),
        KeyDef("SeriesDescription", _SE, _T),
        KeyDef("SeriesDate", _SE, _D),
        KeyDef("SeriesTime", _SE, _TM),
        KeyDef("BodyPartExamined", _SE, _T),
        KeyDef("ProtocolName", _SE, _T),
        KeyDef("StationName", _SE, _T),
        KeyDef("PerformedProcedureStepStartDate", _SE, _D),
        KeyDef("PerformedProcedureStepStartTime", _SE, _TM),
        KeyDef("NumberOfSeriesRelatedInstances", _SE, _C),
        KeyDef("SOPInstanceUID", _IM, _U, unique=True),
        KeyDef("SOPClassUID", _IM, _U),
        KeyDef("InstanceNumber", _IM, _I),
        KeyDef("ContentDate", _IM, _D),
        KeyDef("ContentTime", _IM, _TM),
        KeyDef("AcquisitionNumber", _IM, _I),
        KeyDef("NumberOfFrames", _IM, _I),
        KeyDef("Rows", _IM, _I),
        KeyDef("Columns", _IM, _I),
        KeyDef("BitsAllocated", _IM, _I),
        KeyDef("TransferSyntaxUID", _IM, _U),
    ]
}

#: A lower-level key a study search matches as the study-level attribute holding its values
#: in the study (C-FIND ``Modality=CT`` at STUDY level, QIDO-RS ``/studies?Modality=CT``).
STUDY_AGGREGATE_OF = {"Modality": "ModalitiesInStudy", "SOPClassUID": "SOPClassesInStudy"}

UNIQUE_KEY = {
    QueryLevel.PATIENT: "PatientID",
    QueryLevel.STUDY: "StudyInstanceUID",
    QueryLevel.SERIES: "SeriesInstanceUID",
    QueryLevel.IMAGE: "SOPInstanceUID",
}

#: Code Sequences (PS3.3 8.8) whose items are indexed on their normalised (scheme, value) at
#: ingest and matched by sequence matching (PS3.4 C.2.2.2.6) at any query level: an entity matches
#: when one of its instances carries the code. Keyword -> tag.
CODE_SEQUENCES: dict[str, int] = {
    "ProcedureCodeSequence": 0x00081032,
    "AnatomicRegionSequence": 0x00082218,
    "RequestedProcedureCodeSequence": 0x00321064,
    "ConceptNameCodeSequence": 0x0040A043,
}

#: The attributes of a Code Sequence item that a query may match on (PS3.3 Table 8.8-1).
CODE_ITEM_KEYS = frozenset({
    "CodeValue", "LongCodeValue", "URNCodeValue", "CodingSchemeDesignator", "CodeMeaning",
})

#: Attributes that carry a person's identity: never written to logs at INFO or above.
PHI_KEYWORDS = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames",
    "PatientAddress", "PatientTelephoneNumbers", "IssuerOfPatientID", "PatientMotherBirthName",
    "ReferringPhysicianName", "AccessionNumber",
})
