"""Entry points of the validator: one dataset, one file, many files.

Layers run in this order (docs/validation.md):

1. encoding: PS3.10 preamble and File Meta Information, Pixel Data length (:mod:`.encoding`);
2. data dictionary: tags, VR, VM, value length, character repertoire, enumerations
   (:mod:`.dictionary`);
3. IOD and modules: Type 1/2/1C/2C for every module of the SOP Class's IOD (:mod:`.iod`);
4. coded entries: optional terminology checkers (:mod:`.coded`);
5. across files: entity consistency (:mod:`.consistency`, for :func:`validate_paths`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from archivist.validate.coded import CodeChecker, run_code_checkers
from archivist.validate.consistency import check_consistency, entity_record
from archivist.validate.dictionary import ElementChecker
from archivist.validate.encoding import (
    check_file_meta,
    check_pixel_data,
    check_preamble,
    text_value,
)
from archivist.validate.findings import Collector, Finding, Report, Severity
from archivist.validate.iod import checker_for
from archivist.validate.pixel import check_image_pixel
from archivist.validate.standard import tables

# Media Storage Directory Storage (PS3.4 Annex I, PS3.10 8): the DICOMDIR.
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass(frozen=True, slots=True)
class ValidationOptions:
    """What to check beyond the defaults.

    Attributes
    ----------
    code_checkers : tuple of callables
        Terminology checks run on every coded item (see :mod:`archivist.validate.coded`).
    report_extended : bool
        Report top-level attributes that no module of the IOD defines (``iod.not-in-iod``).
    """

    code_checkers: tuple[CodeChecker, ...] = ()
    report_extended: bool = True


DEFAULT_OPTIONS = ValidationOptions()


def validate_dataset(
    ds: Dataset, *, options: ValidationOptions | None = None, has_pixels: bool | None = None
) -> list[Finding]:
    """Validate a dataset against the data dictionary and the IOD of its SOP Class.

    Safe to call on every received object: the dataset is only read (values read from a file are
    checked on their raw bytes, without conversion) and the PS3.3 tables are loaded once per
    process.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The dataset. When it has ``file_meta``, its Transfer Syntax is used for the Pixel Data
        checks (PS3.5 8, A.4); the File Meta Information itself is checked by
        :func:`validate_file`.
    options : ValidationOptions, optional
        Extra checks; defaults to :data:`DEFAULT_OPTIONS`.
    has_pixels : bool, optional
        Whether the object has pixel data, for a dataset read without it (ingest reads up to
        the Pixel Data); None looks in `ds`.

    Returns
    -------
    list of Finding
        Errors, warnings and infos, in layer order (PS3.5, PS3.6, PS3.3).
    """
    options = options or DEFAULT_OPTIONS
    std = tables()
    sop_class = text_value(ds, "SOPClassUID").rstrip("\x00 ")
    iod = std.iod_for_sop_class(sop_class) if sop_class else None
    out = Collector(iod.name if iod else "")
    _identify(ds, sop_class, iod is not None, out)
    checker, module_of = checker_for(std, sop_class, out)
    if checker is not None and not options.report_extended:
        checker.report_extended = False
    meta = getattr(ds, "file_meta", None)
    ts = text_value(meta, "TransferSyntaxUID") if meta is not None else ""
    _guarded(out, "Pixel Data", check_pixel_data, ds, ts, out)
    _guarded(out, "Image Pixel", check_image_pixel, ds, iod.key if iod else None, out,
             has_pixels)
    _guarded(out, "data dictionary", ElementChecker(out, module_of).check, ds)
    if checker is not None:
        _guarded(out, "IOD", checker.check, ds)
    findings = out.findings
    if options.code_checkers:
        findings.extend(run_code_checkers(ds, options.code_checkers))
    return findings


def _guarded(out: Collector, layer: str, check: Callable[..., None], *args: object) -> None:
    """Run one layer's `check`; a value pydicom cannot decode (a corrupt element the data
    dictionary layer reports) ends that layer with an ``encoding.unreadable`` error, not an
    exception: a corrupt object is reported, and refused under ``validation_policy=reject``."""
    try:
        check(*args)
    except Exception as exc:  # noqa: BLE001 - pydicom's conversion errors vary by VR
        reason = str(exc)
        if len(reason) > 200:
            reason = reason[:200] + "..."
        out.add(Severity.ERROR, "encoding.unreadable", "", "",
                f"A value cannot be decoded ({type(exc).__name__}: {reason}), so the {layer} "
                "checks stopped there.", "PS3.5 7")


def _identify(ds: Dataset, sop_class: str, known: bool, out: Collector) -> None:
    if not sop_class:
        out.add(Severity.ERROR, "iod.sop-class-missing", "/SOPClassUID(0008,0016)", "SOP Common",
                "SOP Class UID is missing, so the IOD cannot be determined.", "PS3.3 C.12.1")
    elif not known:
        from pydicom.uid import UID

        name = UID(sop_class).name
        out.add(Severity.WARNING, "iod.unknown-sop-class", "/SOPClassUID(0008,0016)", "SOP Common",
                f"SOP Class {sop_class} ({name}) has no IOD in the tables; only the data "
                "dictionary layer was checked.", "PS3.4 B.5")


def validate_file(path: str | os.PathLike[str], *, options: ValidationOptions | None = None) -> Report:
    """Read a file and validate it: PS3.10 encoding, then :func:`validate_dataset`.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM Part 10 file (a bare dataset is accepted with a warning).
    options : ValidationOptions, optional
        Extra checks.

    Returns
    -------
    Report
        Findings and identification of the object. A file that cannot be parsed gives a report
        with one ``encoding.unreadable`` error.
    """
    import pydicom

    start = time.perf_counter()
    report = Report(path=str(path))
    out = Collector()
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        out.add(Severity.ERROR, "encoding.unreadable", "", "", f"Cannot open the file: {exc}",
                "PS3.10 7")
        report.findings = out.findings
        return report
    has_preamble = check_preamble(head, out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a finding
            out.add(Severity.ERROR, "encoding.unreadable", "", "",
                    f"The file cannot be parsed as DICOM: {exc}", "PS3.5 7")
            report.findings = out.findings
            report.elapsed_ms = (time.perf_counter() - start) * 1000
            return report
    for warning in caught:
        out.add(Severity.WARNING, "encoding.parser-warning", "", "", str(warning.message),
                "PS3.5 7")
    if not has_preamble and "SOPClassUID" not in ds and not any(
        0x0008 <= int(t) >> 16 <= 0x0020 for t in ds.keys()  # noqa: SIM118
    ):
        out.add(Severity.ERROR, "encoding.unreadable", "", "",
                "The file is not DICOM: no Part 10 header and no identifying attributes.",
                "PS3.10 7")
        report.findings = out.findings
        report.elapsed_ms = (time.perf_counter() - start) * 1000
        return report
    if len(ds) == 0 or not any(int(t) >> 16 != 0x0002 for t in ds.keys()):  # noqa: SIM118
        out.add(Severity.ERROR, "encoding.unreadable", "", "",
                "The file holds no DICOM dataset.", "PS3.5 7")
        report.findings = out.findings
        report.elapsed_ms = (time.perf_counter() - start) * 1000
        return report
    meta = getattr(ds, "file_meta", None)
    _guarded(out, "File Meta Information", check_file_meta, meta, ds, out)
    if meta is not None:
        _guarded(out, "File Meta Information",
                 ElementChecker(out, lambda tag: "File Meta Information").check_meta, meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        findings = validate_dataset(ds, options=options)
        report.entity = entity_record(ds)
    if meta is not None and text_value(meta, "MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
        findings = [f for f in findings if f.rule_id != "iod.sop-class-missing"]
        findings.append(Finding(
            Severity.INFO, "iod.directory-not-checked", "", "", "",
            "A DICOMDIR (Basic Directory IOD, PS3.3 F) is checked for encoding and data "
            "dictionary only; its directory records are not checked.", "PS3.10 8",
        ))
    iod_name = next((f.iod for f in findings if f.iod), "")
    if not iod_name:
        iod = tables().iod_for_sop_class(text_value(ds, "SOPClassUID"))
        iod_name = iod.name if iod else ""
    report.findings = [
        Finding(f.severity, f.rule_id, f.path, f.module, iod_name, f.message, f.reference)
        for f in out.findings
    ] + findings
    report.sop_class_uid = text_value(ds, "SOPClassUID")
    report.sop_instance_uid = text_value(ds, "SOPInstanceUID")
    report.transfer_syntax_uid = text_value(meta, "TransferSyntaxUID") if meta else ""
    report.iod = iod_name
    report.elapsed_ms = (time.perf_counter() - start) * 1000
    return report


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Yield the files named, and the files under the folders named (recursively, sorted)."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not child.name.startswith("."):
                    yield child
        else:
            yield path


@dataclass(slots=True)
class BatchResult:
    """The validation of several files: one report each plus cross-file findings."""

    reports: list[Report] = field(default_factory=list)
    consistency: list[Finding] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Findings per severity over all reports and the consistency check."""
        total = {s.value: 0 for s in Severity}
        for report in self.reports:
            for key, value in report.counts().items():
                total[key] += value
        for finding in self.consistency:
            total[finding.severity.value] += 1
        return total

    @property
    def ok(self) -> bool:
        """True when no file and no consistency check has an error."""
        return all(r.ok for r in self.reports) and not any(
            f.severity is Severity.ERROR for f in self.consistency
        )

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-serialisable mapping."""
        return {
            "ok": self.ok,
            "files": len(self.reports),
            "files_with_errors": sum(1 for r in self.reports if not r.ok),
            "skipped_non_dicom": self.skipped,
            "counts": self.counts(),
            "reports": [r.to_dict() for r in self.reports],
            "consistency": [f.to_dict() for f in self.consistency],
        }


def _not_dicom(report: Report) -> bool:
    return any(
        f.rule_id == "encoding.unreadable" and "not DICOM" in f.message for f in report.findings
    )


def validate_paths(
    paths: Iterable[str | os.PathLike[str]], *, options: ValidationOptions | None = None
) -> BatchResult:
    """Validate files and folders, then check entity consistency across them (like dcentvfy).

    Parameters
    ----------
    paths : iterable of path
        Files or folders (searched recursively). Files found in a folder that are not DICOM
        at all are listed in ``skipped`` instead of being reported; files named explicitly
        are always reported.
    options : ValidationOptions, optional
        Extra checks.
    """
    result = BatchResult()
    paths = list(paths)
    named = {Path(p) for p in paths if not Path(p).is_dir()}
    for path in iter_files(paths):
        report = validate_file(path, options=options)
        if path not in named and _not_dicom(report):
            result.skipped.append(str(path))  # found in a folder: not ours to judge
            continue
        result.reports.append(report)
    result.consistency = check_consistency(
        (r.path, r.entity) for r in result.reports if r.entity
    )
    return result


__all__ = [
    "DEFAULT_OPTIONS",
    "BatchResult",
    "ValidationOptions",
    "iter_files",
    "validate_dataset",
    "validate_file",
    "validate_paths",
]
