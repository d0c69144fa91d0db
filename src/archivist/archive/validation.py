"""Validation on ingest: :func:`archivist.validate.validate_dataset` on the header ingest read.

Ingest reads each object once, up to its Pixel Data (``stop_before_pixels``), and notes where the
Pixel Data value is and how long it is (:class:`PixelDataInfo`). The validator runs on that
dataset, so validating costs no second read of the file; what the validator cannot see (the Pixel
Data value) is judged from the noted length:

- a Type 1/1C "missing" finding on the pixel data element is dropped when the file has it;
- the Pixel Data length is checked against Rows x Columns x Samples per Pixel x Bits Allocated x
  Number of Frames (PS3.5 8.1.1), and encapsulation against the transfer syntax (PS3.5 A.4),
  with the rule ids the file validator uses.

The policy (``off``, ``warn``, ``reject``) is applied by :class:`archivist.archive.ingest.Ingest`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID

from archivist.validate import Finding, Severity, validate_dataset
from archivist.validate.encoding import expected_pixel_data_length
from archivist.validate.findings import Collector
from archivist.validate.paths import step

_PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class PixelDataInfo:
    """Where the pixel data element of a file is, as ingest found it without loading it.

    Attributes
    ----------
    tag
        Pixel Data, Float Pixel Data or Double Float Pixel Data.
    length
        The value length in bytes (0xFFFFFFFF: undefined, i.e. encapsulated).
    offset
        Where the value starts in the file.
    """

    tag: int
    length: int
    offset: int = 0

    @property
    def undefined_length(self) -> bool:
        return self.length == 0xFFFFFFFF


def _pixel_findings(ds: Dataset, pixel: PixelDataInfo, iod: str) -> list[Finding]:
    """The Pixel Data checks of the file validator, made on the noted length."""
    if pixel.tag != _PIXEL_DATA:
        return []
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") or "").strip("\x00 ") if meta is not None else ""
    path = step(_PIXEL_DATA)
    if ts and UID(ts).is_compressed:
        if pixel.undefined_length:
            return []
        return [Finding(Severity.ERROR, "encoding.pixel-data-not-encapsulated", path,
                        "Image Pixel", iod,
                        f"Transfer syntax {UID(ts).name} requires encapsulated Pixel Data of "
                        "undefined length.", "PS3.5 A.4")]
    if pixel.undefined_length:
        return []
    out = Collector(iod)
    expected = expected_pixel_data_length(ds, out)  # a malformed Rows/Columns is a finding
    if expected is None:
        return out.findings
    if pixel.length == expected:
        return []
    return [Finding(Severity.ERROR, "encoding.pixel-data-length", path, "Image Pixel", iod,
                    f"Pixel Data has {pixel.length} bytes; Rows x Columns x Samples per Pixel x "
                    f"Bits Allocated x Number of Frames gives {expected}.", "PS3.5 8.1.1")]


def validate_on_ingest(ds: Dataset, pixel: PixelDataInfo | None) -> Sequence[Finding]:
    """Validate the dataset ingest read (no pixel data loaded) against the standard.

    Parameters
    ----------
    ds
        The dataset read with ``stop_before_pixels`` (File Meta attached).
    pixel
        The pixel data element the file has, None when it has none.

    Returns
    -------
    list of Finding
        As :func:`archivist.validate.validate_dataset` reports them, with the pixel data
        judged from `pixel`.
    """
    findings = validate_dataset(ds, has_pixels=pixel is not None)
    if pixel is None:
        return findings
    pixel_path = step(pixel.tag)
    kept = [
        f for f in findings
        if not (f.path == pixel_path and f.rule_id.startswith("iod.")
                and f.rule_id.endswith("-missing"))
    ]
    iod = next((f.iod for f in findings if f.iod), "")
    return kept + _pixel_findings(ds, pixel, iod)


__all__ = ["PixelDataInfo", "validate_on_ingest"]
