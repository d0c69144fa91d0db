"""Conditions of Type 1C/2C attributes and Conditional (``C``) modules, as a rule registry.

The generated tables give the type of every attribute but not the prose of its condition. The
conditions that matter for the common IODs (CT, MR, CR, DX, US, SC, SR, SEG, KOS) are written
here in a small grammar modelled on DVTk's definition files (``PRESENT``, ``NOT PRESENT``,
``VALUE``), combined with ``&``, ``|`` and ``~``::

    ATTRIBUTE_CONDITIONS[("image-pixel", "PlanarConfiguration")] = greater("SamplesPerPixel", 1)

A keyword refers to the item (dataset or sequence item) that holds the attribute; a leading
``/`` refers to the top-level dataset. A condition that is not registered is not evaluated: a
missing 1C/2C attribute is then not reported (dciodvfy evaluates more conditions; the differences
are listed in docs/validation.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from archivist.validate.dictionary import deferred_chunks, is_deferred

Predicate = Callable[[Dataset, Dataset], bool]


@dataclass(frozen=True, slots=True)
class Condition:
    """A predicate over (item, root dataset) with the text a person reads in a finding."""

    test: Predicate
    text: str

    def __call__(self, item: Dataset, root: Dataset) -> bool:
        return self.test(item, root)

    def __and__(self, other: Condition) -> Condition:
        return Condition(lambda i, r: self(i, r) and other(i, r), f"{self.text} and {other.text}")

    def __or__(self, other: Condition) -> Condition:
        return Condition(lambda i, r: self(i, r) or other(i, r), f"{self.text} or {other.text}")

    def __invert__(self) -> Condition:
        return Condition(lambda i, r: not self(i, r), f"not ({self.text})")


@dataclass(frozen=True, slots=True)
class _Attribute:
    """An attribute a condition reads: of the item, or of the top-level dataset (``/Keyword``).

    The tag is looked up once, so evaluating the condition builds no Tag from a keyword.
    """

    keyword: str
    on_root: bool
    tag: BaseTag | None

    @classmethod
    def of(cls, keyword: str) -> _Attribute:
        on_root = keyword.startswith("/")
        bare = keyword[1:] if on_root else keyword
        tag = tag_for_keyword(bare)
        return cls(bare, on_root, BaseTag(tag) if tag is not None else None)

    def present(self, item: Dataset, root: Dataset) -> bool:
        """``keyword in ds``, as :meth:`Dataset.__contains__` answers it."""
        ds = root if self.on_root else item
        return self.tag is not None and self.tag in ds._dict

    def value(self, item: Dataset, root: Dataset, default: object = None) -> object:
        """``ds.get(keyword, default)``, as :meth:`Dataset.get` answers it."""
        ds = root if self.on_root else item
        if self.tag is None:
            return ds.get(self.keyword, default)
        elem = ds._dict.get(self.tag)
        if elem is None:
            return default
        try:
            # A decoded element is what ds[tag] returns; a raw one is decoded by ds[tag].
            return (ds[self.tag] if type(elem) is RawDataElement else elem).value
        except Exception:  # noqa: BLE001 - a value pydicom cannot decode counts as absent here
            return default  # (the data dictionary layer reports it)


def _as_strings(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v).strip() for v in value]  # type: ignore[attr-defined]
    return [str(value).strip()]


def present(keyword: str) -> Condition:
    """True when the attribute is present (even empty), DVTk ``PRESENT``."""

    return Condition(_Attribute.of(keyword).present, f"{keyword.lstrip('/')} is present")


def absent(keyword: str) -> Condition:
    """True when the attribute is not present, DVTk ``NOT PRESENT``."""
    cond = ~present(keyword)
    return Condition(cond.test, f"{keyword.lstrip('/')} is absent")


def value_in(keyword: str, *values: str, index: int | None = None) -> Condition:
    """True when a value of the attribute (or value *index*, 0-based) is one of *values*."""
    wanted = frozenset(values)
    attribute = _Attribute.of(keyword)

    def test(item: Dataset, root: Dataset) -> bool:
        got = _as_strings(attribute.value(item, root))
        if index is not None:
            return len(got) > index and got[index] in wanted
        return any(v in wanted for v in got)

    shown = " or ".join(values)
    return Condition(test, f"{keyword.lstrip('/')} is {shown}")


def greater(keyword: str, limit: float) -> Condition:
    """True when the (first) numeric value of the attribute is greater than *limit*."""

    attribute = _Attribute.of(keyword)

    def test(item: Dataset, root: Dataset) -> bool:
        got = _as_strings(attribute.value(item, root))
        try:
            return bool(got) and float(got[0]) > limit
        except ValueError:
            return False

    return Condition(test, f"{keyword.lstrip('/')} > {limit:g}")


def _non_empty(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, bytes):
        return len(value.strip(b" \x00")) > 0
    if isinstance(value, (list, tuple)) or type(value).__name__ in ("MultiValue", "Sequence"):
        return len(value) > 0  # type: ignore[arg-type]
    return str(value).strip(" \x00") != ""


def has_value(keyword: str) -> Condition:
    """True when the attribute is present with a value (a sequence: with an item)."""
    attribute = _Attribute.of(keyword)

    def test(item: Dataset, root: Dataset) -> bool:
        return _non_empty(attribute.value(item, root))

    return Condition(test, f"{keyword.lstrip('/')} has a value")


def empty_or_absent(keyword: str) -> Condition:
    """True when the attribute is absent or has no value (a sequence: no item)."""
    cond = ~has_value(keyword)
    return Condition(cond.test, f"{keyword.lstrip('/')} is absent or empty")


def any_present(*keywords: str) -> Condition:
    """True when at least one of the attributes is present."""
    cond = present(keywords[0])
    for kw in keywords[1:]:
        cond = cond | present(kw)
    return Condition(cond.test, "one of " + ", ".join(k.lstrip("/") for k in keywords) + " present")


def sop_class_in(*uids: str) -> Condition:
    """True when the top-level SOP Class UID is one of *uids*."""
    wanted = frozenset(uids)
    sop_class = _Attribute.of("/SOPClassUID")

    def test(item: Dataset, root: Dataset) -> bool:
        return str(sop_class.value(item, root, "")) in wanted

    return Condition(test, "the SOP Class is " + " or ".join(sorted(wanted)))


def _non_ascii_text(item: Dataset, root: Dataset) -> bool:
    """True when a text value of the dataset uses bytes outside the default repertoire."""
    text_vrs = {"SH", "LO", "ST", "LT", "PN", "UC", "UT"}

    def walk(ds: Dataset) -> bool:
        for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset decodes every element
            # A value left unread (deferred) is not loaded: a large binary value (an OB of
            # hundreds of MB) is not text, and a text one is scanned where it is stored.
            elem = ds.get_item(tag, keep_deferred=True)
            vr = elem.VR
            if vr == "SQ":
                if any(walk(it) for it in ds[tag].value):
                    return True
                continue
            if vr not in text_vrs:
                continue
            if is_deferred(elem):  # text left unread: its bytes a step at a time, not kept
                if not all(piece.isascii() for piece in deferred_chunks(ds, elem)):
                    return True
                continue
            value = elem.value
            if isinstance(value, bytes):
                if any(b > 0x7F for b in value):
                    return True
            elif value is not None and not str(value).isascii():
                return True
        return False

    return walk(root)


_FUNCTIONAL_GROUPS = (
    _Attribute.of("/SharedFunctionalGroupsSequence"),
    _Attribute.of("/PerFrameFunctionalGroupsSequence"),
)
_FRAME_ANATOMY = _Attribute.of("FrameAnatomySequence")
_FRAME_LATERALITY = _Attribute.of("FrameLaterality")


def _items(value: object) -> list[Dataset]:
    """The items of a sequence value (none for anything else)."""
    if isinstance(value, list) or type(value).__name__ == "Sequence":
        return [item for item in value if isinstance(item, Dataset)]  # type: ignore[attr-defined]
    return []


def _frame_laterality(item: Dataset, root: Dataset) -> bool:
    """True when Frame Laterality is given, at the top level or in a Frame Anatomy Sequence
    item of the Shared or Per-frame Functional Groups (PS3.3 C.7.6.16.2.8)."""
    if _FRAME_LATERALITY.present(root, root):
        return True
    return any(
        _FRAME_LATERALITY.present(anatomy, root)
        for groups in _FUNCTIONAL_GROUPS
        for group in _items(groups.value(root, root))
        for anatomy in _items(_FRAME_ANATOMY.value(group, root))
    )


FRAME_LATERALITY_ABSENT = Condition(
    lambda item, root: not _frame_laterality(item, root),
    "FrameLaterality is absent (top level and functional groups)",
)

_SOP_CLASS = _Attribute.of("/SOPClassUID")
_ORIENTATION = _Attribute.of("/ImageOrientationPatient")


@functools.lru_cache(maxsize=512)
def _image_plane_mandatory(sop_class: str) -> bool | None:
    """Whether the IOD of a SOP Class has a mandatory Image Plane Module (None: unknown IOD)."""
    from archivist.validate.standard import tables

    iod = tables().iod_for_sop_class(sop_class)
    if iod is None:
        return None
    return any(m.module == "image-plane" and m.usage == "M" for m in iod.modules)


def _without_image_plane(item: Dataset, root: Dataset) -> bool:
    """True when the IOD of the SOP Class has no mandatory Image Plane Module."""
    mandatory = _image_plane_mandatory(str(_SOP_CLASS.value(item, root, "")))
    if mandatory is None:
        return not _ORIENTATION.present(item, root)
    return not mandatory


ROOT_CONTENT_ITEM = Condition(
    lambda item, root: item is root, "this is the Root Content Item (the top-level dataset)"
)

IMAGE_PLANE_NOT_REQUIRED = Condition(
    _without_image_plane, "the IOD does not require Image Orientation/Position (Patient)"
)

NON_DEFAULT_CHARACTERS = Condition(
    _non_ascii_text, "characters outside the default repertoire are used"
)

# SOP Classes named in conditions (PS3.4 B.5).
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"

# Body parts that are paired structures (PS3.16 Annex L, CID 4031 laterality-bearing terms),
# written as PS3.3 C.7.3.1 Body Part Examined defined terms.
PAIRED_BODY_PARTS = frozenset(
    {
        "BREAST", "EYE", "EAR", "KIDNEY", "LUNG", "OVARY", "TESTIS", "ADRENAL", "CLAVICLE",
        "SHOULDER", "ARM", "ELBOW", "FOREARM", "WRIST", "HAND", "FINGER", "THUMB", "HIP",
        "THIGH", "KNEE", "LEG", "ANKLE", "FOOT", "TOE", "HEEL", "FEMUR", "TIBIA", "FIBULA",
        "HUMERUS", "RADIUS", "ULNA", "SCAPULA", "PATELLA", "CALCANEUS", "ACJOINT", "SIJOINT",
        "TMJ", "SJOINT", "ORBIT", "PAROTID", "SUBMANDIBULAR", "CAROTID",
        "EXTREMITY", "UPRLIMB", "LOWLIMB", "AXILLA", "HIPJOINT",
    }
)

# Condition of a Type 1C/2C attribute, keyed by (module key, keyword); "*" means any module.
# The condition is evaluated on the item holding the attribute, at any depth of the module.
ATTRIBUTE_CONDITIONS: dict[tuple[str, str], Condition] = {
    # PS3.3 C.7.1.1 Patient Module: animal patients.
    # Patient Breed Description only when Patient Breed Code Sequence is empty (a coded breed
    # is enough, C.7.1.1.1.1); Responsible Person Role when Responsible Person has a value.
    ("patient", "PatientBreedDescription"): any_present(
        "PatientSpeciesDescription", "PatientSpeciesCodeSequence"
    ) & empty_or_absent("PatientBreedCodeSequence"),
    ("patient", "ResponsiblePersonRole"): has_value("ResponsiblePerson"),
    ("patient", "PatientBreedCodeSequence"): any_present(
        "PatientSpeciesDescription", "PatientSpeciesCodeSequence"
    ),
    ("patient", "BreedRegistrationSequence"): any_present(
        "PatientSpeciesDescription", "PatientSpeciesCodeSequence"
    ),
    ("patient", "ResponsiblePerson"): any_present(
        "PatientSpeciesDescription", "PatientSpeciesCodeSequence"
    ),
    ("patient", "ResponsibleOrganization"): any_present(
        "PatientSpeciesDescription", "PatientSpeciesCodeSequence"
    ),
    ("patient", "DeidentificationMethod"): value_in("PatientIdentityRemoved", "YES")
    & absent("DeidentificationMethodCodeSequence"),
    ("patient", "DeidentificationMethodCodeSequence"): value_in("PatientIdentityRemoved", "YES")
    & absent("DeidentificationMethod"),
    # PS3.3 C.7.2.2 Patient Study Module: Patient's Sex Neutered "Required if the Patient is an
    # animal" (an animal: Patient Species given, as in the Patient Module's conditions).
    ("patient-study", "PatientSexNeutered"): any_present(
        "/PatientSpeciesDescription", "/PatientSpeciesCodeSequence"
    ),
    # PS3.3 C.8.8.9 RT General Plan Module.
    ("rt-general-plan", "ReferencedStructureSetSequence"): value_in("RTPlanGeometry", "PATIENT"),
    # PS3.3 C.7.3.1 General Series Module: a paired body part, and neither Image Laterality,
    # Frame Laterality (in the functional groups of an enhanced image) nor Measurement
    # Laterality given.
    ("general-series", "Laterality"): value_in("BodyPartExamined", *sorted(PAIRED_BODY_PARTS))
    & absent("ImageLaterality")
    & FRAME_LATERALITY_ABSENT
    & absent("MeasurementLaterality"),
    ("general-series", "PatientPosition"): sop_class_in(CT_IMAGE, MR_IMAGE, ENHANCED_CT, ENHANCED_MR)
    & absent("PatientOrientationCodeSequence"),
    # PS3.3 C.7.6.1 General Image Module: images without an Image Plane Module.
    ("general-image", "PatientOrientation"): IMAGE_PLANE_NOT_REQUIRED
    & absent("/SharedFunctionalGroupsSequence"),
    # PS3.3 C.7.6.3 Image Pixel Module.
    ("image-pixel", "PlanarConfiguration"): greater("SamplesPerPixel", 1),
    ("image-pixel", "PixelData"): absent("PixelDataProviderURL")
    & absent("FloatPixelData")
    & absent("DoubleFloatPixelData"),
    ("image-pixel", "RedPaletteColorLookupTableDescriptor"): value_in(
        "PhotometricInterpretation", "PALETTE COLOR"
    ),
    ("image-pixel", "GreenPaletteColorLookupTableDescriptor"): value_in(
        "PhotometricInterpretation", "PALETTE COLOR"
    ),
    ("image-pixel", "BluePaletteColorLookupTableDescriptor"): value_in(
        "PhotometricInterpretation", "PALETTE COLOR"
    ),
    ("image-pixel", "RedPaletteColorLookupTableData"): value_in(
        "PhotometricInterpretation", "PALETTE COLOR"
    ),
    ("image-pixel", "GreenPaletteColorLookupTableData"): value_in(
        "PhotometricInterpretation", "PALETTE COLOR"
    ),
    ("image-pixel", "BluePaletteColorLookupTableData"): value_in(
        "PhotometricInterpretation", "PALETTE COLOR"
    ),
    # PS3.3 C.8.6.3 SC Multi-frame Image Module (the multi-frame Secondary Capture IODs).
    ("sc-multi-frame-image", "FrameIncrementPointer"): greater("NumberOfFrames", 1),
    # PS3.3 C.8.7.2 X-Ray Acquisition Module: X-Ray Tube Current and Exposure Time are required
    # if Exposure is not present; Exposure "if either X-Ray Tube Current or Exposure Time are
    # not present", read as dciodvfy reads it: when neither is (a tube current alone does
    # not require Exposure there).
    ("x-ray-acquisition", "XRayTubeCurrent"): absent("Exposure"),
    ("x-ray-acquisition", "ExposureTime"): absent("Exposure"),
    ("x-ray-acquisition", "Exposure"): absent("XRayTubeCurrent") & absent("ExposureTime"),
    # PS3.3 C.8.3.1 MR Image Module.
    ("mr-image", "InversionTime"): value_in("ScanningSequence", "IR"),
    # PS3.3 C.11.1 Modality LUT Module and C.11.2 VOI LUT Module.
    ("modality-lut", "RescaleIntercept"): absent("ModalityLUTSequence"),
    ("modality-lut", "RescaleSlope"): absent("ModalityLUTSequence"),
    ("modality-lut", "RescaleType"): absent("ModalityLUTSequence"),
    ("modality-lut", "ModalityLUTSequence"): absent("RescaleIntercept"),
    ("voi-lut", "WindowCenter"): absent("VOILUTSequence"),
    ("voi-lut", "WindowWidth"): present("WindowCenter"),
    # PS3.3 C.12.1 SOP Common Module.
    ("sop-common", "SpecificCharacterSet"): NON_DEFAULT_CHARACTERS,
    # PS3.3 C.17.2 SR Document General Module.
    ("sr-document-general", "VerifyingObserverSequence"): value_in("VerificationFlag", "VERIFIED"),
    ("sr-document-general", "VerificationDateTime"): value_in("VerificationFlag", "VERIFIED"),
    # PS3.3 C.17.3 SR Document Content Module and Table C.17-5 (content items by value type).
    # Concept Name Code Sequence: required for the root content item and for the value types
    # that name a value (TEXT ... PNAME); a CONTAINER "with a heading" cannot be told apart.
    ("sr-document-content", "ConceptNameCodeSequence"): ROOT_CONTENT_ITEM
    | value_in("ValueType", "TEXT", "NUM", "CODE", "DATETIME", "DATE", "TIME", "UIDREF",
               "PNAME"),
    ("sr-document-content", "ContinuityOfContent"): value_in("ValueType", "CONTAINER"),
    ("sr-document-content", "TextValue"): value_in("ValueType", "TEXT"),
    ("sr-document-content", "ConceptCodeSequence"): value_in("ValueType", "CODE"),
    ("sr-document-content", "MeasuredValueSequence"): value_in("ValueType", "NUM"),
    ("sr-document-content", "DateTime"): value_in("ValueType", "DATETIME"),
    ("sr-document-content", "Date"): value_in("ValueType", "DATE"),
    ("sr-document-content", "Time"): value_in("ValueType", "TIME"),
    ("sr-document-content", "UID"): value_in("ValueType", "UIDREF"),
    ("sr-document-content", "PersonName"): value_in("ValueType", "PNAME"),
    ("sr-document-content", "GraphicType"): value_in("ValueType", "SCOORD", "SCOORD3D"),
    ("sr-document-content", "TemporalRangeType"): value_in("ValueType", "TCOORD"),
    ("sr-document-content", "ReferencedFrameOfReferenceUID"): value_in("ValueType", "SCOORD3D"),
    # PS3.3 C.8.20.2 Segmentation Image Module.
    ("segmentation-image", "SegmentationFractionalType"): value_in(
        "/SegmentationType", "FRACTIONAL"
    ),
    ("segmentation-image", "MaximumFractionalValue"): value_in("/SegmentationType", "FRACTIONAL"),
    ("segmentation-image", "SegmentAlgorithmName"): present("SegmentAlgorithmType")
    & ~value_in("SegmentAlgorithmType", "MANUAL"),
    # PS3.3 8.8 Code Sequence Macro, wherever it is included.
    ("*", "CodeValue"): absent("LongCodeValue") & absent("URNCodeValue"),
    ("*", "CodingSchemeDesignator"): any_present("CodeValue", "LongCodeValue"),
}

# Conditional attributes whose PS3.3 description ends "Shall not be present otherwise" (or "...
# may not be present otherwise"): present while their registered condition does not hold, they
# are an error (``iod.not-allowed``, as dciodvfy's "Attribute present when condition
# unsatisfied"). Keyed like ATTRIBUTE_CONDITIONS; the value is the PS3.3 reference.
NOT_PRESENT_OTHERWISE: dict[tuple[str, str], str] = {
    ("image-pixel", "PlanarConfiguration"): "PS3.3 C.7.6.3.1.3",
    ("modality-lut", "RescaleIntercept"): "PS3.3 C.11.1",
    ("modality-lut", "ModalityLUTSequence"): "PS3.3 C.11.1",
    ("sr-document-general", "VerifyingObserverSequence"): "PS3.3 C.17.2",
    ("*", "CodeValue"): "PS3.3 8.8",
}

# Attributes that the generated tables list with an unconditional type although PS3.3 includes
# their macro conditionally ("Include Table C.18.x if Value Type is ..."). Their type applies
# only when the condition holds. Keyed like ATTRIBUTE_CONDITIONS.
_SR_VALUE_MACROS: dict[str, tuple[str, ...]] = {
    # PS3.3 C.17.3 Table C.17-5 and the Content Item Macros of C.18.
    "TextValue": ("TEXT",),
    "ConceptCodeSequence": ("CODE",),
    "MeasuredValueSequence": ("NUM",),
    "DateTime": ("DATETIME",),
    "Date": ("DATE",),
    "Time": ("TIME",),
    "UID": ("UIDREF",),
    "PersonName": ("PNAME",),
    "ReferencedSOPSequence": ("COMPOSITE", "IMAGE", "WAVEFORM"),
    "GraphicData": ("SCOORD", "SCOORD3D"),
    "GraphicType": ("SCOORD", "SCOORD3D"),
    "ReferencedFrameOfReferenceUID": ("SCOORD3D",),
    "TemporalRangeType": ("TCOORD",),
    "ContinuityOfContent": ("CONTAINER",),
    "TabulatedValuesSequence": ("TABLE",),
}
INCLUDED_IF: dict[tuple[str, str], Condition] = {
    ("sr-document-content", keyword): value_in("ValueType", *types)
    for keyword, types in _SR_VALUE_MACROS.items()
}
# PS3.3 C.17.3, Table C.17-5: a content item included by reference (Referenced Content Item
# Identifier, C.17.3.2.5) carries the Document Relationship Macro only; the Document Content
# Macro, and its Value Type, is included only in an item that is not a reference. (The value
# macros and Concept Name need a Value Type, so they follow.)
INCLUDED_IF[("sr-document-content", "ValueType")] = absent("ReferencedContentItemIdentifier")

# Condition of a Conditional module, keyed by (IOD key or "*", module key). A module without an
# entry is checked only when one of its own attributes is present.
MODULE_CONDITIONS: dict[tuple[str, str], Condition] = {
    # PS3.3 A.26: VOI LUT Module required if Presentation Intent Type is FOR PRESENTATION.
    ("digital-x-ray-image", "voi-lut"): value_in("/PresentationIntentType", "FOR PRESENTATION"),
    ("digital-mammography-x-ray-image", "voi-lut"): value_in(
        "/PresentationIntentType", "FOR PRESENTATION"
    ),
    ("digital-intra-oral-x-ray-image", "voi-lut"): value_in(
        "/PresentationIntentType", "FOR PRESENTATION"
    ),
    # PS3.3 A.3: Multi-energy CT Image Module required if Multi-energy CT Acquisition is YES.
    ("ct-image", "multi-energy-ct-image"): value_in("/MultienergyCTAcquisition", "YES"),
    # PS3.3 A.6, A.7, A.8, A.51: Palette Color Lookup Table Module required if Photometric
    # Interpretation is PALETTE COLOR.
    ("*", "palette-color-lookup-table"): value_in("/PhotometricInterpretation", "PALETTE COLOR"),
    # PS3.3 A.75 (Parametric Map) and the other IODs where the pixel modules are Conditional:
    # one pixel module, chosen by the pixel data element the object has. The Image Pixel Module
    # (C.7.6.3) with integer Pixel Data, the Floating Point (C.7.6.24) and Double Floating Point
    # (C.7.6.25) Image Pixel Modules with Float / Double Float Pixel Data. Bits Stored, High Bit
    # and Pixel Representation belong to the Image Pixel Module only.
    ("*", "image-pixel"): any_present("/PixelData", "/PixelDataProviderURL"),
    ("*", "floating-point-image-pixel"): present("/FloatPixelData"),
    ("*", "double-floating-point-image-pixel"): present("/DoubleFloatPixelData"),
}

# Functional group macros that an IOD's functional group table makes Conditional, keyed by
# (IOD key, keyword of the macro's sequence): the macro is required (in the Shared or the
# Per-frame Functional Groups) only when the condition holds. PS3.3 Table A.51-2 (Segmentation,
# both the Segmentation and the Label Map Segmentation SOP Classes): the Segmentation Macro
# only if Dimension Organization Type is not TILED_FULL and Segmentation Type is not LABELMAP
# (a label map's pixel values are the segment numbers); Frame Content only if Dimension
# Organization Type is not TILED_FULL (a TILED_FULL object has no Per-frame Functional Groups).
FUNCTIONAL_GROUP_CONDITIONS: dict[tuple[str, str], Condition] = {
    ("segmentation", "SegmentIdentificationSequence"): ~value_in(
        "/DimensionOrganizationType", "TILED_FULL"
    ) & ~value_in("/SegmentationType", "LABELMAP"),
    ("segmentation", "FrameContentSequence"): ~value_in(
        "/DimensionOrganizationType", "TILED_FULL"
    ),
}

# Attributes whose type a module of the IOD specialises ("This Type definition shall override
# the definition in the ... Module", PS3.3 C.1.2.3): keyed by (overriding module, keyword), the
# modules whose type for the attribute no longer applies when both are in the IOD. The
# overriding module's own type is checked as usual.
TYPE_OVERRIDES: dict[tuple[str, str], tuple[str, ...]] = {
    # PS3.3 C.8.6.1 SC Equipment Module: Modality Type 3 overrides the General Series Module's
    # Type 1 (Secondary Capture IODs; the Encapsulated Document Series Module makes it Type 1
    # again, C.24.1, and is checked on its own).
    ("sc-equipment", "Modality"): ("general-series",),
    # PS3.3 C.8.6.3 SC Multi-frame Image Module: Frame Increment Pointer is Type 1C (required
    # when Number of Frames is greater than 1), overriding the Multi-frame Module's Type 1.
    ("sc-multi-frame-image", "FrameIncrementPointer"): ("multi-frame",),
}


def attribute_condition(module: str, keyword: str) -> Condition | None:
    """Return the registered condition of a 1C/2C attribute in a module, or None."""
    return ATTRIBUTE_CONDITIONS.get((module, keyword)) or ATTRIBUTE_CONDITIONS.get(("*", keyword))


def forbidden_otherwise(module: str, keyword: str) -> str | None:
    """The PS3.3 reference when a 1C/2C attribute shall not be present unless its condition
    holds, else None."""
    return NOT_PRESENT_OTHERWISE.get((module, keyword)) or NOT_PRESENT_OTHERWISE.get(
        ("*", keyword)
    )


def inclusion_condition(module: str, keyword: str) -> Condition | None:
    """Return the condition under which a conditionally included macro's attribute applies."""
    return INCLUDED_IF.get((module, keyword))


def functional_group_condition(iod: str, keyword: str) -> Condition | None:
    """Return the condition under which a functional group macro is required, or None."""
    return FUNCTIONAL_GROUP_CONDITIONS.get((iod, keyword))


def module_condition(iod: str, module: str) -> Condition | None:
    """Return the registered condition of a Conditional module in an IOD, or None."""
    return MODULE_CONDITIONS.get((iod, module)) or MODULE_CONDITIONS.get(("*", module))


def overridden_types(modules: set[str] | frozenset[str]) -> dict[str, frozenset[str]]:
    """For the modules of an IOD: module key -> keywords whose type another module overrides."""
    out: dict[str, set[str]] = {}
    for (overriding, keyword), targets in TYPE_OVERRIDES.items():
        if overriding in modules:
            for target in targets:
                if target in modules:
                    out.setdefault(target, set()).add(keyword)
    return {k: frozenset(v) for k, v in out.items()}
