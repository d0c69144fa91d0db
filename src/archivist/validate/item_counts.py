"""How many Items a sequence may hold: PS3.3 attribute descriptions and C.7.6.16.

The generated tables (``validate/_standard/``, from highdicom's JSON) give each attribute's type
but not its description, so "Only a single Item shall be included in this Sequence" (or "is
permitted") is not in them. The sequences below are kept by hand, each with the PS3.3 section
whose description says so; each was also checked against dciodvfy (dicom3tools 2022), which
reports two items in any of them as "Bad Sequence number of Items". A sequence that is not
listed is not checked, so a sequence that PS3.3 allows more items in is never reported.

The other count, Per-frame Functional Groups Sequence items against Number of Frames
(PS3.3 C.7.6.16), is checked by :mod:`.iod` with the top-level dataset at hand.
"""

from __future__ import annotations

# (module key or "*", keyword) -> the PS3.3 section whose description allows a single Item.
# "*" is any module; a module key keeps a keyword that other modules allow more items of to
# the modules where it is single.
SINGLE_ITEM: dict[tuple[str, str], str] = {
    # Multi-frame Functional Groups Module and the functional group macros (C.7.6.16.2).
    ("*", "SharedFunctionalGroupsSequence"): "PS3.3 C.7.6.16",
    ("*", "PixelMeasuresSequence"): "PS3.3 C.7.6.16.2.1",
    ("*", "FrameContentSequence"): "PS3.3 C.7.6.16.2.2",
    ("*", "PlanePositionSequence"): "PS3.3 C.7.6.16.2.3",
    ("*", "PlaneOrientationSequence"): "PS3.3 C.7.6.16.2.4",
    ("*", "FrameAnatomySequence"): "PS3.3 C.7.6.16.2.8",
    ("*", "PixelValueTransformationSequence"): "PS3.3 C.7.6.16.2.9",
    ("*", "FrameVOILUTSequence"): "PS3.3 C.7.6.16.2.10",
    ("*", "CTImageFrameTypeSequence"): "PS3.3 C.8.15.3.1",
    # Segmentation: Segment Identification Macro, Segment Description Macro (C.8.20).
    ("*", "SegmentIdentificationSequence"): "PS3.3 C.8.20.3.1",
    ("*", "SegmentedPropertyCategoryCodeSequence"): "PS3.3 C.8.20.2",
    ("*", "SegmentedPropertyTypeCodeSequence"): "PS3.3 C.8.20.2",
    # Numeric Measurement Macro (C.18.1) and Real World Value Mapping (C.7.6.16.2.11).
    ("*", "MeasurementUnitsCodeSequence"): "PS3.3 C.18.1, C.7.6.16.2.11",
    # Patient Module (C.7.1.1).
    ("*", "PatientSpeciesCodeSequence"): "PS3.3 C.7.1.1",
    # SOP Common Module, Contributing Equipment Sequence (C.12.1).
    ("sop-common", "PurposeOfReferenceCodeSequence"): "PS3.3 C.12.1",
    # SR Document Content Module (C.17.3): the Document Content Macro and the content item
    # macros of C.18, for the root and for every content item of the tree.
    ("sr-document-content", "ConceptNameCodeSequence"): "PS3.3 C.17.3",
    ("sr-document-content", "ContentTemplateSequence"): "PS3.3 C.17.3",
    ("sr-document-content", "ConceptCodeSequence"): "PS3.3 C.18.2",
    ("sr-document-content", "NumericValueQualifierCodeSequence"): "PS3.3 C.18.1",
    ("sr-document-content", "ReferencedSOPSequence"): "PS3.3 C.18.3-C.18.5",
    # General Anatomy Mandatory/Optional Macros (PS3.3 10.5-10.7) where the tables have them
    # at the top level of an image module, and in a Frame Anatomy item (C.7.6.16.2.8). The
    # Segment Description Macro's Anatomic Region Sequence is not listed (dciodvfy allows two).
    **{
        (module, "AnatomicRegionSequence"): "PS3.3 10.5"
        for module in (
            "cr-image", "ct-image", "dx-anatomy-imaged", "enhanced-us-image", "general-image",
            "intra-oral-image", "mammography-image", "mr-image", "nm-image", "pet-image",
            "us-image", "vl-image", "x-ray-image",
        )
    },
    ("mammography-image", "ViewCodeSequence"): "PS3.3 C.8.11.7",
    ("dx-positioning", "ViewCodeSequence"): "PS3.3 C.8.11.5",
}

# Item tables holding a single-item sequence whatever the module: keyed by (keyword of the
# enclosing sequence, keyword).
SINGLE_ITEM_IN: dict[tuple[str, str], str] = {
    ("FrameAnatomySequence", "AnatomicRegionSequence"): "PS3.3 C.7.6.16.2.8",
}


def single_item_reference(module: str, parent: str, keyword: str) -> str | None:
    """The PS3.3 reference when only a single Item is allowed in the sequence, else None.

    Parameters
    ----------
    module : str
        Key of the module holding the sequence (``sr-document-content``).
    parent : str
        Keyword of the sequence whose item holds it ("" at the top level).
    keyword : str
        Keyword of the sequence.
    """
    return (
        SINGLE_ITEM.get((module, keyword))
        or SINGLE_ITEM.get(("*", keyword))
        or SINGLE_ITEM_IN.get((parent, keyword))
    )
