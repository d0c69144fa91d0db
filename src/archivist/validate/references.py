"""Where each requirement is written: PS3.3 sections of common IODs and modules.

The generated tables do not carry section numbers, so the ones a finding cites are listed here by
hand (DICOM 2024-2026 editions; section numbers of these IODs and modules have been stable for
many years). A module or IOD missing here is cited by name ("PS3.3, General Series Module").
"""

from __future__ import annotations

IOD_SECTIONS: dict[str, str] = {
    "computed-radiography-image": "A.2",
    "ct-image": "A.3",
    "mr-image": "A.4",
    "nuclear-medicine-image": "A.5",
    "ultrasound-image": "A.6",
    "ultrasound-multi-frame-image": "A.7",
    "secondary-capture-image": "A.8",
    "x-ray-angiographic-image": "A.14",
    "x-ray-radiofluoroscopic-image": "A.16",
    "positron-emission-tomography-image": "A.21",
    "digital-x-ray-image": "A.26",
    "digital-mammography-x-ray-image": "A.27",
    "digital-intra-oral-x-ray-image": "A.28",
    "key-object-selection-document": "A.35.4",
    "basic-text-sr": "A.35.1",
    "enhanced-sr": "A.35.2",
    "comprehensive-sr": "A.35.3",
    "enhanced-ct-image": "A.38",
    "enhanced-mr-image": "A.36",
    "segmentation": "A.51",
    "grayscale-softcopy-presentation-state": "A.33.1",
    "rt-image": "A.17",
    "rt-dose": "A.18",
    "rt-structure-set": "A.19",
    "rt-plan": "A.20",
    "encapsulated-pdf": "A.45.1",
    "inventory": "A.88",
}

MODULE_SECTIONS: dict[str, str] = {
    "patient": "C.7.1.1",
    "clinical-trial-subject": "C.7.1.3",
    "general-study": "C.7.2.1",
    "patient-study": "C.7.2.2",
    "clinical-trial-study": "C.7.2.3",
    "general-series": "C.7.3.1",
    "clinical-trial-series": "C.7.3.2",
    "frame-of-reference": "C.7.4.1",
    "synchronization": "C.7.4.2",
    "general-equipment": "C.7.5.1",
    "enhanced-general-equipment": "C.7.5.2",
    "general-image": "C.7.6.1",
    "image-plane": "C.7.6.2",
    "image-pixel": "C.7.6.3",
    "contrast-bolus": "C.7.6.4",
    "cine": "C.7.6.5",
    "multi-frame": "C.7.6.6",
    "device": "C.7.6.12",
    "acquisition-context": "C.7.6.14",
    "multi-frame-functional-groups": "C.7.6.16",
    "multi-frame-dimension": "C.7.6.17",
    "specimen": "C.7.6.22",
    "general-reference": "C.12.4",
    "general-acquisition": "C.7.10.1",
    "cr-series": "C.8.1.1",
    "cr-image": "C.8.1.2",
    "ct-image": "C.8.2.1",
    "mr-image": "C.8.3.1",
    "us-region-calibration": "C.8.5.5",
    "us-image": "C.8.5.6",
    "sc-equipment": "C.8.6.1",
    "sc-image": "C.8.6.2",
    "overlay-plane": "C.9.2",
    "modality-lut": "C.11.1",
    "voi-lut": "C.11.2",
    "sop-common": "C.12.1",
    "common-instance-reference": "C.12.2",
    "dx-series": "C.8.11.1",
    "dx-anatomy-imaged": "C.8.11.2",
    "dx-image": "C.8.11.3",
    "dx-detector": "C.8.11.4",
    "sr-document-series": "C.17.1",
    "sr-document-general": "C.17.2",
    "sr-document-content": "C.17.3",
    "key-object-document-series": "C.17.6.1",
    "key-object-document": "C.17.6.2",
    "segmentation-series": "C.8.20.1",
    "segmentation-image": "C.8.20.2",
    "palette-color-lookup-table": "C.7.9",
    "icc-profile": "C.11.15",
}


def module_reference(key: str, name: str) -> str:
    """Return ``PS3.3 C.x.y`` for a module key, or ``PS3.3 <name> Module`` when not listed."""
    section = MODULE_SECTIONS.get(key)
    return f"PS3.3 {section}" if section else f"PS3.3 {name} Module"


def iod_reference(key: str, name: str) -> str:
    """Return ``PS3.3 A.x`` for an IOD key, or ``PS3.3 <name> IOD`` when not listed."""
    section = IOD_SECTIONS.get(key)
    return f"PS3.3 {section}" if section else f"PS3.3 {name} IOD"
