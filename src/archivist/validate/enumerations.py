"""Enumerated values and defined terms of common attributes (PS3.3, PS3.5 7.4 and 7.5).

The generated tables do not carry them, so the ones that matter for the common IODs are listed
here. An enumerated value outside its list is an error; a defined term outside its list is a
warning, since defined terms may be extended (PS3.3 5.3.2, "Defined Terms"), as dciodvfy does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Enumeration:
    """Allowed values of one attribute.

    Attributes
    ----------
    values : frozenset of str
        The allowed values.
    enumerated : bool
        True for Enumerated Values (closed list), False for Defined Terms (open list).
    index : int or None
        0-based value number the list applies to (e.g. Image Type value 1), or None for every
        value.
    reference : str
        The PS3 section that lists the values.
    """

    values: frozenset[str]
    enumerated: bool
    index: int | None
    reference: str


def _enum(ref: str, *values: str, index: int | None = None) -> tuple[Enumeration, ...]:
    return (Enumeration(frozenset(values), True, index, ref),)


def _terms(ref: str, *values: str, index: int | None = None) -> tuple[Enumeration, ...]:
    return (Enumeration(frozenset(values), False, index, ref),)


MODALITIES = (
    "ANN", "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CFM", "CR", "CT", "CTPROTOCOL", "DMS", "DG",
    "DOC", "DX", "ECG", "EEG", "EMG", "EOG", "EPS", "ES", "FID", "GM", "HC", "HD", "IO", "IOL",
    "IVOCT", "IVUS", "KER", "KO", "LEN", "LS", "MG", "MR", "M3D", "NM", "OAM", "OCT", "OP", "OPM",
    "OPT", "OPTBSV", "OPTENF", "OPV", "OSS", "OT", "PA", "PLAN", "POS", "PR", "PT", "PX", "REG",
    "RESP", "RF", "RG", "RTDOSE", "RTIMAGE", "RTINTENT", "RTPLAN", "RTRAD", "RTRECORD",
    "RTSEGANN", "RTSTRUCT", "RWV", "SEG", "SM", "SMR", "SR", "SRF", "STAIN", "TEXTUREMAP", "TG",
    "US", "VA", "XA", "XAPROTOCOL", "XC",
    # Retired but still met in archives (PS3.3 C.7.3.1.1.1, retired terms).
    "AS", "CD", "CF", "CP", "CS", "DD", "DF", "DM", "DS", "EC", "FA", "FS", "LP", "MA", "MS",
    "OPR", "ST", "VF",
)

# Keyed by keyword; every entry applies wherever the attribute occurs.
ENUMERATIONS: dict[str, tuple[Enumeration, ...]] = {
    "PatientSex": _enum("PS3.3 C.7.1.1", "M", "F", "O"),
    "Laterality": _enum("PS3.3 C.7.3.1", "R", "L"),
    "ImageLaterality": _enum("PS3.3 C.7.6.2", "R", "L", "U", "B"),
    "Modality": _terms("PS3.3 C.7.3.1.1.1", *MODALITIES),
    "ImageType": _enum("PS3.3 C.7.6.1.1.2", "ORIGINAL", "DERIVED", index=0)
    + _enum("PS3.3 C.7.6.1.1.2", "PRIMARY", "SECONDARY", index=1),
    "PhotometricInterpretation": _terms(
        "PS3.3 C.7.6.3.1.2", "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL",
        "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV",
        "ARGB", "CMYK", "XYB",
    ),
    "PixelRepresentation": _enum("PS3.3 C.7.6.3", "0", "1"),
    "PlanarConfiguration": _enum("PS3.3 C.7.6.3.1.3", "0", "1"),
    "PatientPosition": _terms(
        "PS3.3 C.7.3.1.1.2", "HFP", "HFS", "HFDR", "HFDL", "FFDR", "FFDL", "FFP", "FFS", "LFP",
        "LFS", "RFP", "RFS", "AFDR", "AFDL", "PFDR", "PFDL",
    ),
    "BurnedInAnnotation": _enum("PS3.3 C.7.6.1", "YES", "NO"),
    "RecognizableVisualFeatures": _enum("PS3.3 C.7.6.1", "YES", "NO"),
    "LossyImageCompression": _enum("PS3.3 C.7.6.1.1.5", "00", "01"),
    "PresentationIntentType": _enum("PS3.3 C.8.11.1", "FOR PRESENTATION", "FOR PROCESSING"),
    "ConversionType": _terms(
        "PS3.3 C.8.6.1", "DV", "DI", "DF", "WSD", "SD", "SI", "DRW", "SYN"
    ),
    "ValueType": _enum(
        "PS3.3 C.17.3.2.1", "TEXT", "NUM", "CODE", "DATETIME", "DATE", "TIME", "UIDREF", "PNAME",
        "COMPOSITE", "IMAGE", "WAVEFORM", "SCOORD", "SCOORD3D", "TCOORD", "CONTAINER", "TABLE",
    ),
    "RelationshipType": _enum(
        "PS3.3 C.17.3.2.4", "CONTAINS", "HAS PROPERTIES", "HAS OBS CONTEXT", "HAS ACQ CONTEXT",
        "INFERRED FROM", "SELECTED FROM", "HAS CONCEPT MOD",
    ),
    "ContinuityOfContent": _enum("PS3.3 C.18.8", "SEPARATE", "CONTINUOUS"),
    "CompletionFlag": _enum("PS3.3 C.17.2.1", "PARTIAL", "COMPLETE"),
    "VerificationFlag": _enum("PS3.3 C.17.2.1", "UNVERIFIED", "VERIFIED"),
    "PreliminaryFlag": _enum("PS3.3 C.17.2", "PRELIMINARY", "FINAL"),
    "SegmentationType": _enum("PS3.3 C.8.20.2", "BINARY", "FRACTIONAL", "LABELMAP"),
    "SegmentationFractionalType": _enum("PS3.3 C.8.20.2", "PROBABILITY", "OCCUPANCY"),
    "SegmentAlgorithmType": _enum("PS3.3 C.8.20.2", "AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"),
    "QueryRetrieveLevel": _enum("PS3.4 C.6", "PATIENT", "STUDY", "SERIES", "IMAGE", "FRAME"),
}
