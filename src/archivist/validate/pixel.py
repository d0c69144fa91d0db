"""Image Pixel rules that tie attributes to each other (PS3.5 8.1.1, PS3.3 C.7.6.3.1), and the
values some image IODs narrow them to (PS3.3 C.8).

The data dictionary layer checks each attribute on its own and the IOD layer checks presence;
neither sees that Bits Stored exceeds Bits Allocated, or that a CT image says PALETTE COLOR.
Only the top-level Image Pixel attributes are checked (an icon image in a sequence follows the
same rules but is rarely what a reader needs to hear about). An attribute that is absent or
cannot be read as one integer is left to the other layers: these rules are then not checked.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from archivist.validate import paths
from archivist.validate.findings import Collector, Severity

ERROR = Severity.ERROR

SAMPLES_PER_PIXEL = 0x00280002
PHOTOMETRIC = 0x00280004
BITS_ALLOCATED = 0x00280100
BITS_STORED = 0x00280101
HIGH_BIT = 0x00280102
PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
MODULE = "Image Pixel"

# Samples per Pixel each Photometric Interpretation implies (PS3.3 C.7.6.3.1.2).
_SAMPLES_OF = {
    "MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1,
    "RGB": 3, "YBR_FULL": 3, "YBR_FULL_422": 3, "YBR_PARTIAL_422": 3, "YBR_PARTIAL_420": 3,
    "YBR_ICT": 3, "YBR_RCT": 3, "HSV": 3, "XYB": 3, "ARGB": 4, "CMYK": 4,
}

_MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})
# IOD key -> (the Photometric Interpretations its image module allows, that module's section).
# Each was checked against dciodvfy (dicom3tools), which reports the same values as errors.
_PHOTOMETRIC_OF_IOD: dict[str, tuple[frozenset[str], str]] = {
    "ct-image": (_MONOCHROME, "PS3.3 C.8.2.1"),
    "mr-image": (_MONOCHROME, "PS3.3 C.8.3.1"),
    "positron-emission-tomography-image": (frozenset({"MONOCHROME2"}), "PS3.3 C.8.9.4"),
    "computed-radiography-image": (_MONOCHROME, "PS3.3 C.8.1.2"),
    "digital-x-ray-image": (_MONOCHROME, "PS3.3 C.8.11.3"),
    "digital-mammography-x-ray-image": (_MONOCHROME, "PS3.3 C.8.11.3"),
    "digital-intra-oral-x-ray-image": (_MONOCHROME, "PS3.3 C.8.11.3"),
    "x-ray-angiographic-image": (frozenset({"MONOCHROME2"}), "PS3.3 C.8.7.1"),
    "x-ray-radiofluoroscopic-image": (frozenset({"MONOCHROME2"}), "PS3.3 C.8.7.1"),
    "nuclear-medicine-image": (frozenset({"MONOCHROME2", "PALETTE COLOR"}), "PS3.3 C.8.4.7"),
}

# IOD key -> (Bits Allocated, the Bits Stored range) its image module allows, and the section.
# PS3.3 C.8.2.1.1.4-5 (CT Image Module): Bits Allocated 16, Bits Stored 12 to 16 (High Bit is
# then one less, checked for every image). dciodvfy reports the same values as errors: an 8-bit
# lossy JPEG copy of a CT (DCMTK dcmcjpeg +eb) is no longer a conformant CT Image.
_BITS_OF_IOD: dict[str, tuple[int, range, str, str, str]] = {
    "ct-image": (16, range(12, 17), "CT Image", "PS3.3 C.8.2.1.1.4", "PS3.3 C.8.2.1.1.5"),
}


def _integer(ds: Dataset, tag: int) -> int | None:
    if tag not in ds:
        return None
    try:
        value = ds[tag].value
        return None if value is None or value == "" or value == b"" else int(value)
    except Exception:  # noqa: BLE001 - unreadable or several values: other layers report it
        return None


def _photometric(ds: Dataset) -> str:
    if PHOTOMETRIC not in ds:
        return ""
    try:
        value = ds[PHOTOMETRIC].value
    except Exception:  # noqa: BLE001 - the data dictionary layer reports an unreadable value
        return ""
    return value.strip() if isinstance(value, str) else ""


def check_image_pixel(
    ds: Dataset, iod_key: str | None, out: Collector, has_pixels: bool | None = None
) -> None:
    """Report Image Pixel attributes that contradict each other or the image IOD.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The dataset; nothing is checked unless the object has pixel data.
    iod_key : str or None
        The IOD's key in the PS3.3 tables (``ct-image``), None when the SOP Class is unknown.
    out : Collector
        Where findings go.
    has_pixels : bool, optional
        Whether the object has pixel data (for a dataset read without it); None looks in `ds`.
    """
    if has_pixels is None:
        has_pixels = any(tag in ds for tag in PIXEL_DATA_TAGS)
    if not has_pixels:
        return
    allocated = _integer(ds, BITS_ALLOCATED)
    stored = _integer(ds, BITS_STORED)
    high = _integer(ds, HIGH_BIT)
    if allocated is not None and allocated > 0 and allocated != 1 and allocated % 8:
        out.add(ERROR, "pixel.bits-allocated", paths.step(BITS_ALLOCATED), MODULE,
                f"Bits Allocated is {allocated}; it must be 1 or a multiple of 8.", "PS3.5 8.1.1")
    if allocated is not None and stored is not None and stored > allocated:
        out.add(ERROR, "pixel.bits-stored", paths.step(BITS_STORED), MODULE,
                f"Bits Stored ({stored}) exceeds Bits Allocated ({allocated}).", "PS3.5 8.1.1")
    if stored is not None and high is not None and high != stored - 1:
        out.add(ERROR, "pixel.high-bit", paths.step(HIGH_BIT), MODULE,
                f"High Bit is {high}; it must be one less than Bits Stored ({stored}).",
                "PS3.3 C.7.6.3.1")
    photometric = _photometric(ds)
    samples = _integer(ds, SAMPLES_PER_PIXEL)
    implied = _SAMPLES_OF.get(photometric)
    if implied is not None and samples is not None and samples != implied:
        out.add(ERROR, "pixel.samples-per-pixel", paths.step(SAMPLES_PER_PIXEL), MODULE,
                f"Samples per Pixel is {samples}, but Photometric Interpretation "
                f"{photometric} has {implied}.", "PS3.3 C.7.6.3.1.2")
    if iod_key is None:
        return
    bits = _BITS_OF_IOD.get(iod_key)
    if bits is not None:
        wanted, stored_range, module, allocated_ref, stored_ref = bits
        if allocated is not None and allocated != wanted:
            out.add(ERROR, "iod.enumerated-value", paths.step(BITS_ALLOCATED), module,
                    f"Bits Allocated is {allocated}; the {module} Module allows {wanted}.",
                    allocated_ref)
        if stored is not None and stored not in stored_range:
            out.add(ERROR, "iod.enumerated-value", paths.step(BITS_STORED), module,
                    f"Bits Stored is {stored}; the {module} Module allows "
                    f"{stored_range.start} to {stored_range.stop - 1}.", stored_ref)
    allowed = _PHOTOMETRIC_OF_IOD.get(iod_key)
    if allowed is not None and photometric and photometric not in allowed[0]:
        out.add(ERROR, "iod.enumerated-value", paths.step(PHOTOMETRIC), MODULE,
                f"Photometric Interpretation is {photometric!r}; this IOD allows "
                f"{', '.join(sorted(allowed[0]))}.", allowed[1])
