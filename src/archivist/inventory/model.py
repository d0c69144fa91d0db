"""An inventory as plain records (study -> series -> instance), whatever it was read from.

Sources: Inventory instances (PS3.3 A.88, a root and the leaves it incorporates), the JSON this
module writes, or any stream of C-FIND / Repository Query identifiers at STUDY, SERIES and IMAGE
level. Outputs: JSON and CSV for people who are not DICOM tools, and the input of
:mod:`archivist.inventory.diff`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from archivist.errors import ArchivistError
from archivist.inventory import INVENTORY_STORAGE

FORMAT = "archivist-inventory/1"


class InventoryFormatError(ArchivistError):
    """A file that is not an inventory this module can read."""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _is_removed(item: Dataset) -> bool:
    return str(item.get("RemovedFromOperationalUse", "") or "").upper() == "YES"


def removal_reason(item: Dataset) -> str:
    """The first Reason for Removal Code Sequence item as ``VALUE SCHEME Meaning``."""
    for code in item.get("ReasonForRemovalCodeSequence", []) or []:
        parts = [_text(code.get(k)) for k in ("CodeValue", "CodingSchemeDesignator",
                                              "CodeMeaning")]
        return " ".join(p for p in parts if p)
    return ""


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _sop_uid(path: Path) -> str | None:
    """The SOP Instance UID of a DICOM file (only that element is read), or None."""
    try:
        ds = pydicom.dcmread(path, specific_tags=["SOPInstanceUID"], stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - not DICOM: not one of the instances looked for
        return None
    uid = ds.get("SOPInstanceUID")
    return str(uid) if uid else None


def _incorporated(datasets: list[Dataset], files: list[Path]) -> list[Dataset]:
    """The Inventory instances that `datasets` incorporate by reference (Incorporated
    Inventory Instance Sequence (0008,0422), followed down the tree) and that were not given,
    read from the files beside the given ones: first those named as ``archivist inventory
    export`` names them (``NAME-0002.dcm``...), then any other file in those folders.

    Raises InventoryFormatError naming the instances that are not there: an inventory read
    without some of its leaves would compare as if their studies were not held.
    """
    have = {str(ds.get("SOPInstanceUID", "")) for ds in datasets}
    wanted: dict[str, None] = {}

    def want(ds: Dataset) -> None:
        for ref in ds.get("IncorporatedInventoryInstanceSequence", []) or []:
            uid = str(ref.get("ReferencedSOPInstanceUID", "") or "")
            if uid and uid not in have:
                wanted[uid] = None

    for ds in datasets:
        want(ds)
    if not wanted:
        return []
    given = {f.resolve() for f in files}
    candidates: list[Path] = []
    for f in files:
        beside = sorted(f.parent.glob(f"{f.stem}-*{f.suffix}"))
        others = sorted(x for x in f.parent.iterdir() if x.is_file() and x not in beside)
        candidates += [x for x in beside + others if x.resolve() not in given]
    found: list[Dataset] = []
    seen: set[Path] = set()
    for path in candidates:
        if not wanted:
            break
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        uid = _sop_uid(path)
        if uid is None or uid not in wanted:
            continue
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # noqa: BLE001
            raise InventoryFormatError(f"{path}: not a DICOM file ({type(exc).__name__})") \
                from None
        del wanted[uid]
        have.add(uid)
        found.append(ds)
        want(ds)  # a leaf may itself incorporate others
    if wanted:
        folders = ", ".join(sorted({str(f.parent) for f in files}))
        names = ", ".join(list(wanted)[:5]) + (" ..." if len(wanted) > 5 else "")
        raise InventoryFormatError(
            f"{len(wanted)} Inventory instance(s) the root incorporates are not among the files "
            f"given nor beside them in {folders}: {names} (give every file of a split "
            "inventory, or the folder holding them)")
    return found


#: First characters that make a spreadsheet cell a formula (or, for tab and CR, can hide one).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """`value` as a CSV cell a spreadsheet shows as text: a string starting like a formula gets
    a leading single quote. Numbers and None are left alone."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class _SafeWriter:
    """A ``csv.writer`` whose rows go through :func:`csv_cell`."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([csv_cell(v) for v in row])


@dataclass
class InstanceRecord:
    sop_instance_uid: str
    sop_class_uid: str = ""
    instance_number: int | None = None
    #: Bytes of the stored object, where the source knows it (this archive's index, the JSON
    #: export of it); DICOM inventories and C-FIND do not carry it.
    size: int | None = None


@dataclass
class SeriesRecord:
    series_instance_uid: str
    modality: str = ""
    series_number: int | None = None
    number_of_instances: int | None = None
    instances: dict[str, InstanceRecord] = field(default_factory=dict)


@dataclass
class StudyRecord:
    study_instance_uid: str
    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    accession_number: str = ""
    modalities: str = ""
    number_of_series: int | None = None
    number_of_instances: int | None = None
    update_datetime: str = ""
    series: dict[str, SeriesRecord] = field(default_factory=dict)


@dataclass
class Inventory:
    """Records of one repository (or of a scope of it)."""

    level: str = "STUDY"
    studies: dict[str, StudyRecord] = field(default_factory=dict)
    source: str = ""
    content_datetime: str = ""
    completion: str = ""
    #: Records the inventory lists as Removed from Operational Use (0008,0405): UID -> level.
    #: They are not held, so they are not among :attr:`studies` and do not count.
    removed: dict[str, str] = field(default_factory=dict)
    #: The Reason for Removal (0008,0406) of those records, as ``VALUE SCHEME Meaning``: UID ->
    #: text (absent when the inventory gives none).
    removal_reasons: dict[str, str] = field(default_factory=dict)
    #: The study each removed record belongs to: UID -> Study Instance UID.
    removed_in: dict[str, str] = field(default_factory=dict)

    # -- building ------------------------------------------------------------------------------

    def add_study(self, ds: Dataset) -> StudyRecord:
        uid = str(ds.get("StudyInstanceUID", "") or "")
        rec = self.studies.get(uid)
        if rec is None:
            rec = self.studies[uid] = StudyRecord(uid)
        rec.patient_id = _text(ds.get("PatientID")) or rec.patient_id
        rec.patient_name = _text(ds.get("PatientName")) or rec.patient_name
        rec.study_date = _text(ds.get("StudyDate")) or rec.study_date
        rec.accession_number = _text(ds.get("AccessionNumber")) or rec.accession_number
        mods = ds.get("ModalitiesInStudy")
        if mods:
            rec.modalities = "\\".join(sorted(set(_text(mods).split("\\")) - {""}))
        rec.number_of_series = _int(ds.get("NumberOfStudyRelatedSeries"))
        rec.number_of_instances = _int(ds.get("NumberOfStudyRelatedInstances"))
        rec.update_datetime = _text(ds.get("StudyUpdateDateTime"))
        return rec

    def add_series(self, ds: Dataset, study_uid: str | None = None) -> SeriesRecord:
        study_uid = study_uid or str(ds.get("StudyInstanceUID", "") or "")
        study = self.studies.setdefault(study_uid, StudyRecord(study_uid))
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        rec = study.series.get(uid)
        if rec is None:
            rec = study.series[uid] = SeriesRecord(uid)
        rec.modality = _text(ds.get("Modality")) or rec.modality
        rec.series_number = _int(ds.get("SeriesNumber"))
        rec.number_of_instances = _int(ds.get("NumberOfSeriesRelatedInstances"))
        return rec

    def add_instance(self, ds: Dataset, study_uid: str | None = None,
                     series_uid: str | None = None) -> InstanceRecord:
        study_uid = study_uid or str(ds.get("StudyInstanceUID", "") or "")
        series_uid = series_uid or str(ds.get("SeriesInstanceUID", "") or "")
        study = self.studies.setdefault(study_uid, StudyRecord(study_uid))
        series = study.series.setdefault(series_uid, SeriesRecord(series_uid))
        uid = str(ds.get("SOPInstanceUID", "") or "")
        rec = InstanceRecord(uid, _text(ds.get("SOPClassUID")), _int(ds.get("InstanceNumber")))
        series.instances[uid] = rec
        return rec

    @classmethod
    def from_datasets(cls, instances: Iterable[Dataset], source: str = "") -> Inventory:
        """Read Inventory instances (the root and its leaves, in any order)."""
        inv = cls(source=source)
        for ds in instances:
            if str(ds.get("SOPClassUID", "")) != INVENTORY_STORAGE:
                raise InventoryFormatError("not an Inventory object (SOP Class UID)")
            inv.level = str(ds.get("InventoryLevel", inv.level))
            if not inv.content_datetime or int(ds.get("InstanceNumber", 0) or 0) == 1:
                inv.content_datetime = f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}"
                inv.completion = str(ds.get("InventoryCompletionStatus", ""))
            for study in ds.get("InventoriedStudiesSequence", []):
                suid = str(study.StudyInstanceUID)
                if _is_removed(study):
                    inv.mark_removed(suid, "STUDY", suid, removal_reason(study))
                    continue
                inv.add_study(study)
                for series in study.get("InventoriedSeriesSequence", []):
                    if _is_removed(series):
                        inv.mark_removed(str(series.SeriesInstanceUID), "SERIES", suid,
                                         removal_reason(series))
                        continue
                    inv.add_series(series, suid)
                    for inst in series.get("InventoriedInstancesSequence", []):
                        if _is_removed(inst):
                            inv.mark_removed(str(inst.SOPInstanceUID), "INSTANCE", suid,
                                             removal_reason(inst))
                            continue
                        inv.add_instance(inst, suid, str(series.SeriesInstanceUID))
        return inv

    def mark_removed(self, uid: str, level: str, study_uid: str, reason: str = "") -> None:
        """Record `uid` as listed Removed from Operational Use (not held)."""
        self.removed[uid] = level
        self.removed_in[uid] = study_uid
        if reason:
            self.removal_reasons[uid] = reason

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> Inventory:
        """Read inventory files: DICOM Inventory instances (a folder = every file in it), or JSON."""
        files: list[Path] = []
        for p in paths:
            if p.is_dir():
                found = sorted(x for x in p.rglob("*") if x.is_file())
                if not found:
                    raise InventoryFormatError(f"{p}: an empty folder, no inventory files in it")
                files.extend(found)
            elif not p.is_file():
                raise InventoryFormatError(f"{p}: no such file or folder")
            else:
                files.append(p)
        if len(files) == 1 and files[0].suffix.lower() == ".json":
            try:
                data = json.loads(files[0].read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise InventoryFormatError(f"{files[0]}: not readable JSON ({exc})") from None
            return cls.from_json(data, source=str(files[0]))
        datasets: list[Dataset] = []
        for f in files:
            if f.suffix.lower() == ".csv":
                raise InventoryFormatError(
                    f"{f}: a CSV export cannot be compared (its values are written for "
                    "spreadsheets): compare the DICOM inventory or its JSON export")
            try:
                datasets.append(pydicom.dcmread(f))
            except Exception as exc:  # noqa: BLE001
                raise InventoryFormatError(f"{f}: not a DICOM file ({type(exc).__name__})") from None
        datasets += _incorporated(datasets, files)
        return cls.from_datasets(datasets, source=", ".join(str(f) for f in files[:3]))

    # -- JSON / CSV ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "level": self.level,
            "source": self.source,
            "content_datetime": self.content_datetime,
            "completion": self.completion,
            "total_studies": len(self.studies),
            "studies": [
                {
                    "StudyInstanceUID": st.study_instance_uid, "PatientID": st.patient_id,
                    "PatientName": st.patient_name, "StudyDate": st.study_date,
                    "AccessionNumber": st.accession_number, "ModalitiesInStudy": st.modalities,
                    "NumberOfStudyRelatedSeries": st.number_of_series,
                    "NumberOfStudyRelatedInstances": st.number_of_instances,
                    "StudyUpdateDateTime": st.update_datetime,
                    "series": [
                        {
                            "SeriesInstanceUID": se.series_instance_uid, "Modality": se.modality,
                            "SeriesNumber": se.series_number,
                            "NumberOfSeriesRelatedInstances": se.number_of_instances,
                            "instances": [
                                {"SOPInstanceUID": i.sop_instance_uid,
                                 "SOPClassUID": i.sop_class_uid,
                                 "InstanceNumber": i.instance_number,
                                 **({"size": i.size} if i.size is not None else {})}
                                for i in se.instances.values()
                            ],
                        }
                        for se in st.series.values()
                    ],
                }
                for st in self.studies.values()
            ],
            "removed": [
                {"uid": uid, "level": level, "StudyInstanceUID": self.removed_in.get(uid, ""),
                 **({"reason": self.removal_reasons[uid]} if uid in self.removal_reasons
                    else {})}
                for uid, level in self.removed.items()
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "") -> Inventory:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InventoryFormatError(f"not an {FORMAT} JSON document")
        inv = cls(level=data.get("level", "STUDY"), source=source or data.get("source", ""),
                  content_datetime=data.get("content_datetime", ""),
                  completion=data.get("completion", ""))
        for st in data.get("studies", []):
            ds = Dataset()
            for k in ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate",
                      "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                      "NumberOfStudyRelatedInstances", "StudyUpdateDateTime"):
                if st.get(k) not in (None, ""):
                    setattr(ds, k, st[k])
            inv.add_study(ds)
            for se in st.get("series", []):
                sds = Dataset()
                for k in ("SeriesInstanceUID", "Modality", "SeriesNumber",
                          "NumberOfSeriesRelatedInstances"):
                    if se.get(k) not in (None, ""):
                        setattr(sds, k, se[k])
                inv.add_series(sds, st["StudyInstanceUID"])
                for i in se.get("instances", []):
                    ids = Dataset()
                    for k in ("SOPInstanceUID", "SOPClassUID", "InstanceNumber"):
                        if i.get(k) not in (None, ""):
                            setattr(ids, k, i[k])
                    rec = inv.add_instance(ids, st["StudyInstanceUID"], se["SeriesInstanceUID"])
                    rec.size = _int(i.get("size"))
        for r in data.get("removed", []) or []:
            if isinstance(r, dict) and r.get("uid"):
                inv.mark_removed(str(r["uid"]), str(r.get("level", "")),
                                 str(r.get("StudyInstanceUID", "")), str(r.get("reason", "")))
        return inv

    CSV_COLUMNS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                   "PatientID", "StudyDate", "AccessionNumber", "ModalitiesInStudy", "Modality",
                   "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
                   "NumberOfSeriesRelatedInstances", "StudyUpdateDateTime")

    def to_csv(self) -> str:
        """One row per record at the inventory's deepest level.

        A value that a spreadsheet would take as a formula (it starts with ``=``, ``+``, ``-``,
        ``@``, a tab or a carriage return; OWASP "CSV Injection") is written with a single quote
        before it, so that opening the file runs nothing: a Patient ID ``=1+1`` is the cell
        ``'=1+1``. The CSV is for people; the JSON and DICOM exports keep every value as stored
        (and are what ``archivist inventory diff`` reads).
        """
        out = io.StringIO()
        writer = _SafeWriter(csv.writer(out, lineterminator="\n"))
        writer.writerow(self.CSV_COLUMNS)
        for st in self.studies.values():
            base = [st.patient_id, st.study_date, st.accession_number, st.modalities]
            counts = [st.number_of_series, st.number_of_instances]
            if not st.series:
                writer.writerow([st.study_instance_uid, "", "", "", *base, "", *counts, "",
                                 st.update_datetime])
            for se in st.series.values():
                if not se.instances:
                    writer.writerow([st.study_instance_uid, se.series_instance_uid, "", "", *base,
                                     se.modality, *counts, se.number_of_instances,
                                     st.update_datetime])
                for i in se.instances.values():
                    writer.writerow([st.study_instance_uid, se.series_instance_uid,
                                     i.sop_instance_uid, i.sop_class_uid, *base, se.modality,
                                     *counts, se.number_of_instances, st.update_datetime])
        return out.getvalue()

    # -- counts --------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        series = sum(len(s.series) for s in self.studies.values())
        instances = sum(len(se.instances) for s in self.studies.values()
                        for se in s.series.values())
        return {"studies": len(self.studies), "series": series, "instances": instances}
