"""Coding Scheme Designators (0008,0102) that PS3.16 Section 8 defines.

The concept tables (``_data``) only hold the schemes that have codes in a PS3.16 context group or
in Annex D. Objects legitimately use other registered designators (PS3.16 Table 8-1), local
ones starting with ``99`` (PS3.16 Section 8.2), and designators declared in the Coding Scheme
Identification Sequence (0008,0110) of the object (PS3.3 C.12.1.1.2). The retired SNOMED
designators (PS3.16 Section 8.3) are still recognised, and mapped to ``SCT``.
"""

from __future__ import annotations

__all__ = ["MISSPELLINGS", "REGISTERED", "RETIRED_SNOMED", "is_local", "scheme_name"]

#: Retired SNOMED designators: SNOMED-RT style values (``T-62000``), replaced by ``SCT`` concept
#: ids (PS3.16 Section 8.3 and Annex O).
RETIRED_SNOMED = frozenset({"SRT", "SNM3", "99SDM"})

#: Designator -> name of the coding scheme, for the designators of PS3.16 Table 8-1 that an
#: archive is likely to meet. Hand-curated; the designators with codes in the tables are also
#: known from the data.
REGISTERED: dict[str, str] = {
    "SCT": "SNOMED CT",
    "SRT": "SNOMED-RT style code values (retired, use SCT)",
    "SNM3": "SNOMED Version 3 (retired, use SCT)",
    "99SDM": "SNOMED DICOM Microglossary (retired, use SCT)",
    "DCM": "DICOM Controlled Terminology (PS3.16 Annex D)",
    "LN": "LOINC",
    "UCUM": "Unified Code for Units of Measure",
    "RADLEX": "RadLex",
    "FMA": "Foundational Model of Anatomy",
    "NCIt": "NCI Thesaurus",
    "MDC": "ISO/IEEE 11073 Medical Device Nomenclature",
    "UMLS": "UMLS Concept Unique Identifier",
    "IBSI": "Image Biomarker Standardisation Initiative",
    "NEU": "NeuroNames",
    "BARI": "Bypass Angioplasty Revascularization Investigation",
    "MSH": "Medical Subject Headings (MeSH)",
    "ITIS_TSN": "Integrated Taxonomic Information System taxonomic serial number",
    "NDC": "National Drug Code Directory",
    "RXNORM": "RxNorm",
    "PUBCHEM_CID": "PubChem compound CID",
    "I10": "ICD-10",
    "I10P": "ICD-10 Procedure Coding System",
    "I9": "ICD-9",
    "I9C": "ICD-9-CM",
    "I11": "ICD-11",
    "C4": "CPT-4",
    "C5": "CPT-5",
    "CD2": "Current Dental Terminology 2",
    "HPC": "HCFA Procedure Codes",
    "ACR": "ACR Index for Radiological Diagnoses",
    "ASTM-sigpurpose": "ASTM E 2084 signature purpose",
    "DC": "Dublin Core",
    "DCMUID": "DICOM UID Registry",
    "ISO3166_1": "ISO 3166-1 country codes",
    "ISO639_1": "ISO 639-1 language codes",
    "ISO639_2": "ISO 639-2 language codes",
    "RFC3066": "IETF language tags (RFC 3066)",
    "RFC5646": "IETF language tags (RFC 5646)",
    "MA": "Adult Mouse Anatomy",
    "MGI": "Mouse Genome Initiative",
    "NCBITaxon": "NCBI organismal classification",
    "NICIP": "National Interim Clinical Imaging Procedure codes",
    "UBERON": "Uber anatomy ontology",
    "UPC": "Universal Product Code",
    "MDNS": "Universal Medical Device Nomenclature System",
    "MEDDRA": "Medical Dictionary for Regulatory Activities",
    "RADELEMENT": "RadElement common data elements",
    "HGNC": "HUGO Gene Nomenclature Committee",
    "SCPECG": "Standard Communications Protocol for Computer-Assisted Electrocardiography",
    "BI": "BI-RADS",
    "NCDR": "American College of Cardiology National Cardiovascular Data Registry",
    "NYUMCCG": "New York University Morphometry Coordinating Center Glossary",
    "MAYONRDB": "Mayo Clinic Non-radiological Images Specific Body Structure Anatomical Surface",
}

#: Designators seen in the wild that are not designators at all, with the one meant.
MISSPELLINGS: dict[str, str] = {
    "SNOMED": "SCT",
    "SNOMED-CT": "SCT",
    "SNOMEDCT": "SCT",
    "SNOMED CT": "SCT",
    "LOINC": "LN",
    "DICOM": "DCM",
    "99_OFFIS_DCMTK": "UCUM",
}


def is_local(designator: str) -> bool:
    """Whether `designator` is a private or local scheme (``99`` prefix, PS3.16 Section 8.2)."""
    return designator.startswith("99") and designator not in RETIRED_SNOMED


def scheme_name(designator: str) -> str | None:
    """The name of a registered coding scheme, or None when it is not in :data:`REGISTERED`."""
    return REGISTERED.get(designator)
