"""A varied, deterministic set of objects and the findings the validator gives them.

Used by ``test_findings_unchanged.py`` to check that a change meant to make the validator faster
(or otherwise restructure it) keeps every finding the same: rule, path, module, IOD, message,
reference and order. The objects are pydicom's own test files (``data/test_files`` and
``data/charset_files``, never downloaded) as read, read up to the Pixel Data (as ingest reads
them), and broken on purpose in fixed ways; objects built here for what those files lack
(enhanced multi-frame functional groups, conditional modules, SR content items of every value
type, KOS, animal and de-identified patients); plus the broken cases of ``validation_cases``.

The expected findings are kept as one digest per object in ``data/findings_digests.json``.
Regenerate it (only when a change of findings is intended, and say so in the commit)::

    uv run --frozen python tests/validate/findings_corpus.py --write
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from archivist.archive.validation import PixelDataInfo, validate_on_ingest
from archivist.validate import Finding, ValidationOptions, validate_dataset, validate_file

DIGESTS = Path(__file__).parent / "data" / "findings_digests.json"
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def _data_files() -> list[Path]:
    import pydicom.data

    root = Path(os.path.dirname(pydicom.data.__file__))
    files = sorted((root / "test_files").glob("*.dcm")) + sorted(
        (root / "charset_files").glob("*.dcm")
    )
    return [f for f in files if f.stat().st_size > 0]


def _read(path: Path, **kwargs: object) -> Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, force=True, **kwargs)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - unreadable test files are simply not used
            return None


def _drop_every_third(ds: Dataset) -> Dataset:
    for index, tag in enumerate(list(ds.keys())):
        if index % 3 == 1 and tag != 0x00080016:
            del ds[tag]
    return ds


def _each_item(ds: Dataset, action: Callable[[Dataset], None]) -> None:
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except Exception:  # noqa: BLE001, S112 - undecodable elements stay as they are
            continue
        if elem.VR == "SQ" and isinstance(elem.value, (list, Sequence)):
            for item in elem.value:
                if isinstance(item, Dataset):
                    _each_item(item, action)
                    action(item)


def _drop_first_in_items(ds: Dataset) -> Dataset:
    def action(item: Dataset) -> None:
        keys = list(item.keys())
        if keys:
            del item[keys[0]]

    _each_item(ds, action)
    return ds


def _blank_every_fourth(ds: Dataset) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, tag in enumerate(list(ds.keys())):
            if index % 4 != 2 or tag >> 16 & 1 or tag == 0x00080005:
                continue
            try:
                elem = ds[tag]
                if elem.VR == "SQ":
                    elem.value = Sequence([Dataset()]) if index % 8 == 2 else Sequence()
                else:
                    elem.value = None
            except Exception:  # noqa: BLE001, S112
                continue
    return ds


def _garbage(ds: Dataset) -> Dataset:
    """Add the dictionary layer's favourite mistakes to a copy of *ds*."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.add_new(0x00091010, "LO", "no creator")  # private element without creator
        ds.add_new(0x00110010, "LO", "CREATOR")
        ds.add_new(0x00111001, "SQ", Sequence([Dataset()]))
        ds.add_new(0x00130001, "LO", "reserved")  # private, reserved range
        ds.add_new(0x00080040, "US", 1)  # retired (Data Set Type)
        ds.add_new(0x0008FFF0, "LO", "unknown")  # not in the dictionary
        ds.add_new(0x00100000, "UL", 4)  # group length
        ds.add_new(0x00181020, "LO", ["a", "b\x01"])  # Software Versions, control character
        ds.add_new(0x00200020, "CS", ["a", "P", "X"])  # Patient Orientation, VM 2 and lower case
        ds.add_new(0x00181030, "UN", b"PROTOCOL")  # known tag sent as UN
        ds.add_new(0x00080201, "SH", "+0100\\-0200")  # Timezone Offset, VM 1
        ds.add_new(0x00400254, "LO", "Caf\xe9")  # non-ASCII
        ds.add_new(0x00080012, "DA", "20241399")  # Instance Creation Date, bad month
        ds.add_new(0x00080013, "TM", "256100")  # Instance Creation Time, bad hour
        ds.add_new(0x00200012, "IS", "99999999999")  # Acquisition Number out of range
        ds.add_new(0x00101010, "AS", "45")  # Patient's Age
        ds.add_new(0x00081140, "SQ", Sequence([Dataset(), Dataset()]))  # empty items
        ds.add_new(0x00082218, "SQ", Sequence([Dataset()]))  # Anatomic Region, empty item
        ds.AnatomicRegionSequence[0].CodeMeaning = "x" * 70
    for tag, vr, value in (
        (0x00080070, "LO", b"odd"),  # Manufacturer, odd length
        (0x00280011, "US", b"\x01\x00\x02"),  # Columns, not a multiple of 2
        (0x00280034, "IS", b"1\\2\\3 "),  # Pixel Aspect Ratio, VM 2
        (0x00200052, "UI", b"1.2.3.04\x00"),  # Frame of Reference UID, leading zero
        (0x00180015, None, b"LEFT_KNEE "),  # Body Part Examined, implicit VR
        (0x00200060, "CS", b"X "),  # Laterality
        (0x00280008, "IS", b""),  # Number of Frames, empty
    ):
        ds._dict[BaseTag(tag)] = RawDataElement(
            BaseTag(tag), vr, len(value), value, 0, vr is None, True
        )
    return ds


def _no_charset_non_ascii(ds: Dataset) -> Dataset:
    if 0x00080005 in ds:
        del ds[0x00080005]
    ds.add_new(0x00081030, "LO", "\xc9tude")
    return ds


def _unknown_charset(ds: Dataset) -> Dataset:
    ds.add_new(0x00080005, "CS", ["ISO_IR 100", "KLINGON"])
    return ds


MUTATIONS: dict[str, Callable[[Dataset], Dataset]] = {
    "drop-every-third": _drop_every_third,
    "drop-first-in-items": _drop_first_in_items,
    "blank-every-fourth": _blank_every_fourth,
    "garbage": _garbage,
    "no-charset-non-ascii": _no_charset_non_ascii,
    "unknown-charset": _unknown_charset,
}


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _base(sop_class: str, modality: str, number: int) -> Dataset:
    """The Patient, Study, Series, Equipment and SOP Common attributes, fixed UIDs."""
    root = "1.2.826.0.1.3680043.10.1235.99"
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{root}.3.{number}"
    ds.PatientName = "Corpus^Patient"
    ds.PatientID = "C1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = f"{root}.1"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.SeriesInstanceUID = f"{root}.2.{number}"
    ds.Modality = modality
    ds.SeriesNumber = "1"
    ds.InstanceNumber = "1"
    ds.Manufacturer = "Corpus"
    return ds


def _image(ds: Dataset, photometric: str = "MONOCHROME2", samples: int = 1) -> Dataset:
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(16 * samples)
    return ds


def _enhanced_mr() -> Dataset:
    ds = _image(_base("1.2.840.10008.5.1.4.1.1.4.1", "MR", 1))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = 2
    ds.ContentDate, ds.ContentTime = "20240101", "120000"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.1235.99.4"
    ds.SharedFunctionalGroupsSequence = [_item(
        PixelMeasuresSequence=[_item(PixelSpacing=[1, 1], SliceThickness="1")],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
    )]
    ds.PerFrameFunctionalGroupsSequence = [
        _item(
            FrameContentSequence=[_item(FrameAcquisitionNumber=i, StackID="1")],
            PlanePositionSequence=[_item(ImagePositionPatient=[0, 0, i])],
        )
        for i in range(2)
    ]
    ds.DimensionOrganizationSequence = [_item()]
    return ds


def _enhanced_mr_frame_content_shared() -> Dataset:
    ds = _enhanced_mr()
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.FrameContentSequence
    ds.SharedFunctionalGroupsSequence[0].FrameContentSequence = [_item(StackID="1")]
    return ds


def _enhanced_mr_no_frame_content() -> Dataset:
    ds = _enhanced_mr()
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.FrameContentSequence
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    return ds


def _dx_for_presentation() -> Dataset:
    ds = _image(_base("1.2.840.10008.5.1.4.1.1.1.1", "DX", 2))
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImageLaterality = "L"
    ds.BodyPartExamined = "KNEE"
    return ds


def _palette_sc() -> Dataset:
    ds = _image(_base("1.2.840.10008.5.1.4.1.1.7", "OT", 3), "PALETTE COLOR")
    ds.ConversionType = "WSD"
    ds.RedPaletteColorLookupTableDescriptor = [256, 0, 16]
    return ds


def _rgb_sc() -> Dataset:
    ds = _image(_base("1.2.840.10008.5.1.4.1.1.7", "OT", 4), "RGB", samples=3)
    ds.ConversionType = "XX"
    return ds


def _multienergy_ct() -> Dataset:
    ds = _image(_base("1.2.840.10008.5.1.4.1.1.2", "CT", 5))
    ds.MultienergyCTAcquisition = "YES"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientSpeciesDescription = "Canine"
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "HAND"
    ds.WindowWidth = "400"
    ds.ModalityLUTSequence = [_item(LUTDescriptor=[2, 0, 8], ModalityLUTType="HU")]
    return ds


def _sr_items() -> Dataset:
    ds = _base("1.2.840.10008.5.1.4.1.1.88.33", "SR", 6)
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    ds.ContentDate, ds.ContentTime = "20240101", "120000"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_item(CodeValue="1", CodingSchemeDesignator="99X",
                                        CodeMeaning="Title")]
    items = []
    for value_type in ("TEXT", "NUM", "CODE", "DATE", "TIME", "DATETIME", "UIDREF", "PNAME",
                       "SCOORD", "SCOORD3D", "TCOORD", "CONTAINER", "IMAGE", "WRONG"):
        items.append(_item(
            RelationshipType="CONTAINS", ValueType=value_type,
            ConceptNameCodeSequence=[_item(LongCodeValue="x" * 20, CodeMeaning="Item")],
        ))
    items[0].ContentSequence = [_item(RelationshipType="HAS PROPERTIES", ValueType="TEXT")]
    ds.ContentSequence = items
    return ds


def _kos() -> Dataset:
    ds = _base("1.2.840.10008.5.1.4.1.1.88.59", "KO", 7)
    ds.ContentDate, ds.ContentTime = "20240101", "120000"
    ds.ValueType = "CONTAINER"
    ds.ContentTemplateSequence = [_item(MappingResource="DCMR", TemplateIdentifier="2010")]
    ds.CurrentRequestedProcedureEvidenceSequence = [_item(
        StudyInstanceUID="1.2.3", ReferencedSeriesSequence=[_item(ReferencedSOPSequence=[
            _item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.2")])])]
    return ds


SYNTHETIC: dict[str, Callable[[], Dataset]] = {
    "enhanced-mr": _enhanced_mr,
    "enhanced-mr-frame-content-shared": _enhanced_mr_frame_content_shared,
    "enhanced-mr-no-frame-content": _enhanced_mr_no_frame_content,
    "dx-for-presentation": _dx_for_presentation,
    "palette-sc": _palette_sc,
    "rgb-sc": _rgb_sc,
    "multienergy-animal-ct": _multienergy_ct,
    "sr-value-types": _sr_items,
    "kos": _kos,
}


def _pixel_info(path: Path, ds: Dataset) -> PixelDataInfo | None:
    full = _read(path)
    if full is None:
        return None
    for tag in _PIXEL_TAGS:
        if tag in full:
            raw = full.get_item(tag)
            length = getattr(raw, "length", None)
            if length is None:
                value = full[tag].value
                length = len(value) if value is not None else 0
            return PixelDataInfo(tag, int(length))
    return None


Case = tuple[str, Callable[[], list[Finding]]]


def cases() -> Iterator[Case]:
    """Yield (name, run) for every object; run() returns its findings."""
    no_extended = ValidationOptions(report_extended=False)
    for path in _data_files():
        name = f"{path.parent.name}/{path.name}"
        if _read(path) is None:
            continue

        def run_file(path: Path = path) -> list[Finding]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return validate_file(path).findings

        yield f"{name}:file", run_file

        def run_full(path: Path = path) -> list[Finding]:
            ds = _read(path)
            assert ds is not None
            return validate_dataset(ds)

        yield f"{name}:dataset", run_full

        def run_header(path: Path = path) -> list[Finding]:
            ds = _read(path, stop_before_pixels=True)
            assert ds is not None
            return list(validate_on_ingest(ds, _pixel_info(path, ds)))

        yield f"{name}:ingest", run_header

        def run_no_extended(path: Path = path) -> list[Finding]:
            ds = _read(path, stop_before_pixels=True)
            assert ds is not None
            return validate_dataset(ds, options=no_extended)

        yield f"{name}:no-extended", run_no_extended

        for label, mutate in MUTATIONS.items():

            def run_mutated(
                path: Path = path, mutate: Callable[[Dataset], Dataset] = mutate
            ) -> list[Finding]:
                ds = _read(path, stop_before_pixels=True)
                assert ds is not None
                ds = mutate(ds)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return validate_dataset(ds)

            yield f"{name}:{label}", run_mutated

    for label, build in SYNTHETIC.items():

        def run_synthetic(build: Callable[[], Dataset] = build) -> list[Finding]:
            ds = build()
            findings = validate_dataset(copy.deepcopy(ds))
            for label, mutate in MUTATIONS.items():
                if label != "garbage":  # its broken Columns would stop check_pixel_data
                    findings += validate_dataset(mutate(copy.deepcopy(ds)))
            return findings

        yield f"synthetic:{label}", run_synthetic

    from validation_cases import CASES

    for case in CASES:

        def run_case(build: Callable[[], Dataset] = case.build) -> list[Finding]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = build()
                first = validate_dataset(copy.deepcopy(ds))
                for label, mutate in MUTATIONS.items():
                    if label != "garbage":
                        first += validate_dataset(mutate(copy.deepcopy(ds)))
                return first

        yield f"case:{case.name}", run_case


def _canonical(findings: list[Finding]) -> list[list[str]]:
    return [
        [f.severity.value, f.rule_id, f.path, f.module, f.iod, f.message, f.reference]
        for f in findings
    ]


def digest(findings: list[Finding]) -> str:
    """A short digest of the findings, in order."""
    text = json.dumps(_canonical(findings), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def summary(findings: list[Finding]) -> dict[str, object]:
    """Digest, count and rule ids of the findings (what the digests file keeps)."""
    return {
        "digest": digest(findings),
        "count": len(findings),
        "rules": dict(sorted(Counter(f.rule_id for f in findings).items())),
    }


def _quiet(run: Callable[[], list[Finding]]) -> list[Finding]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run()


def compute() -> dict[str, dict[str, object]]:
    """The summary of every case's findings."""
    return {name: summary(_quiet(run)) for name, run in cases()}


def main() -> None:
    result = compute()
    if "--write" in sys.argv:
        DIGESTS.parent.mkdir(exist_ok=True)
        DIGESTS.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(result)} digests to {DIGESTS}")
    if "--dump" in sys.argv:
        out = {name: _canonical(_quiet(run)) for name, run in cases()}
        target = Path(sys.argv[sys.argv.index("--dump") + 1])
        target.write_text(json.dumps(out, indent=0))
        print(f"wrote findings of {len(out)} cases to {target}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
