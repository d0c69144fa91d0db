"""The Inventory IOD (PS3.3 A.88, modules C.38.1-C.38.2), built from the index.

Nothing is read from the blob store: every value comes from the index rows (the same rows a
Repository Query returns). An inventory of more than ``studies_per_instance`` studies is split:
leaf instances hold the study records, and a root instance lists them in its Incorporated
Inventory Instance Sequence (0008,0422) (A.88.1). The root is the instance to reference.

Storage in this archive: the index groups every instance under a study and a series, so each
inventory (root and leaves) carries a Study Instance UID and a Series Instance UID of its own
(one *container* study per inventory, holding only Inventory Storage instances). Those attributes
are not in the Inventory IOD; they are a standard extension (PS3.4 B.1.3) that lets the one
ingest store inventories and C-MOVE/C-GET/WADO retrieve them. Container studies are never
inventory records and never Repository Query records.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from archivist.archive.archive import Archive
from archivist.archive.ingest import IngestResult, Origin
from archivist.core.levels import QueryLevel
from archivist.core.matching import Constraint, build_query
from archivist.errors import QueryError
from archivist.inventory import INVENTORY_STORAGE, scope_by_level
from archivist.inventory.records import (
    REMOVED,
    TOMBSTONE,
    RepositoryQuery,
    RepositoryRequest,
    format_dt,
    parse_update_range,
    reason_item,
)

log = logging.getLogger("archivist.inventory")

#: Inventory Level (0008,0403) values (C.38.1.1.2) and the query level each one walks to.
LEVELS = {"STUDY": QueryLevel.STUDY, "SERIES": QueryLevel.SERIES, "INSTANCE": QueryLevel.IMAGE}
DEFAULT_STUDIES_PER_INSTANCE = 1000
MANUFACTURER = "Archivist"
#: Inventory Completion Status (0008,0426) values written here.
COMPLETE = "COMPLETE"
PARTIAL = "PARTIAL"

_STUDY_ITEM = ("StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription")
_PATIENT_ITEM = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")


class ScopeError(QueryError):
    """Scope keys the builder cannot match (the Inventory Creation SCP answers 0xB010)."""

    def __init__(self, message: str, keywords: list[str]) -> None:
        super().__init__(message)
        self.keywords = keywords


@dataclass
class InventorySpec:
    """What to inventory and how.

    Parameters
    ----------
    level
        ``STUDY``, ``SERIES`` or ``INSTANCE`` (Inventory Level).
    scope
        Query keys as ``(keyword, value)`` pairs (C-FIND matching); empty = the whole archive.
    """

    level: str = "STUDY"
    scope: list[tuple[str, str]] = field(default_factory=list)
    studies_per_instance: int = DEFAULT_STUDIES_PER_INSTANCE
    purpose: str = ""
    description: str = ""
    transaction_uid: str | None = None
    retrieve_aet: str | None = None

    def __post_init__(self) -> None:
        self.level = self.level.strip().upper()
        if self.level == "IMAGE":
            self.level = "INSTANCE"
        if self.level not in LEVELS:
            raise QueryError(f"Inventory Level must be STUDY, SERIES or INSTANCE, not {self.level!r}")
        if self.studies_per_instance < 1:
            raise QueryError("studies per instance must be at least 1")


#: VRs whose values a scope key cannot match: sequences, and binary data (PS3.4 C.2.2.2
#: defines matching for neither), also when the dictionary gives them as one of two VRs.
_UNMATCHABLE_VRS = frozenset({"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"})
#: Binary numeric VRs: their scope values (text) are written as numbers.
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})


def _vrs(keyword: str) -> list[str]:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    return [] if tag is None else [vr.strip() for vr in dictionary_VR(tag).split(" or ")]


def unsupported_scope_keys(scope: Iterable[tuple[str, str]]) -> list[str]:
    """Scope keywords that cannot be matched: not DICOM keywords, or of a sequence or binary VR
    (the rest are matched). The repository keys Study Update DateTime and Removed from
    Operational Use are matched (:func:`_pairs_to_request`)."""
    out = []
    for keyword, _ in scope:
        vrs = _vrs(keyword)
        if not vrs or any(vr in _UNMATCHABLE_VRS for vr in vrs):
            out.append(keyword)
    return out


def _split_scope(spec: InventorySpec) -> dict[QueryLevel, list[tuple[str, str]]]:
    bad = unsupported_scope_keys(spec.scope)
    if bad:
        raise ScopeError(f"scope keys not supported for matching: {', '.join(bad)}", bad)
    return scope_by_level(spec.scope)


def scope_sequence(spec: InventorySpec) -> list[Dataset]:
    """The Scope of Inventory Sequence (0008,0400) items (Scope of Inventory Macro, C.38.2).

    Keys go into the Range, List of UID or General Matching Sequence by how they match; an
    empty scope is a zero-length sequence (all studies).
    """
    if not spec.scope:
        return []
    query = build_query(QueryLevel.IMAGE, spec.scope, empty_value_matching=True)
    groups: dict[str, Dataset] = {}
    for c in query.constraints:
        if c.op == "empty":
            continue  # the Empty Value Matching Sequence, below
        if c.op == "range":
            name = "RangeMatchingSequence"
            value: Any = f"{c.values[0]}-{c.values[1]}"
        elif c.op == "list" and c.kind.value == "uid":
            name = "ListOfUIDMatchingSequence"
            value = list(c.values)
        else:
            name = "GeneralMatchingSequence"
            value = list(c.values) if len(c.values) > 1 else c.values[0]
        item = groups.setdefault(name, Dataset())
        _set_scope_value(item, c.keyword, value)
    empty = [k for k, v in spec.scope if str(v) == '""']
    item = Dataset()
    item.QueryRetrieveLevel = "IMAGE" if spec.level == "INSTANCE" else spec.level
    item.SpecificCharacterSet = "ISO_IR 192"
    for name, ds in groups.items():
        setattr(item, name, [ds])
    if empty:
        ev = Dataset()
        for k in empty:
            setattr(ev, k, None)
        item.EmptyValueMatchingSequence = [ev]
    return [item]


def _set_scope_value(item: Dataset, keyword: str, value: Any) -> None:
    """Add a scope key to a matching sequence item with the value its VR holds (a binary
    numeric VR as numbers, the first of two VRs: ``US`` for ``US or SS``)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None  # unknown keywords were refused (unsupported_scope_keys)
    vr = _vrs(keyword)[0]
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        convert = int if vr in _INT_VRS else float
        values = value if isinstance(value, list) else [value]
        try:
            numbers = [convert(str(v).strip()) for v in values]
        except ValueError:
            raise QueryError(f"{keyword}: {value!r} is not a number ({vr})") from None
        value = numbers if len(numbers) > 1 else numbers[0]
    item.add_new(tag, vr, value)


def _pairs_to_request(rq: RepositoryQuery, level: QueryLevel, pairs: list[tuple[str, str]],
                      returns: Iterable[str], *, removed: bool = False) -> RepositoryRequest:
    """A request over live records, or over live and removed ones (`removed`).

    The repository keys among `pairs` are matched as a Repository Query matches them: Study
    Update DateTime (single value or range) and Removed from Operational Use (``YES``: removed
    records only, ``NO``: records in operational use only).
    """
    update_range = None
    removed_only = False
    items: list[tuple[str, object]] = []
    for keyword, value in pairs:
        if keyword == "StudyUpdateDateTime":
            update_range = parse_update_range(value)
        elif keyword == "RemovedFromOperationalUse":
            wanted = str(value or "").strip().upper()
            if wanted not in ("", "YES", "NO"):
                raise QueryError("RemovedFromOperationalUse must be YES or NO")
            removed_only = wanted == "YES"
            removed = removed and wanted != "NO"
        else:
            items.append((keyword, value))
    items += [(k, None) for k in returns]
    query = build_query(level, items, pn_case_insensitive=rq.search.pn_case_insensitive,
                        empty_value_matching=True)  # a scope key of "" (PS3.4 C.2.2.2.7)
    req = RepositoryRequest(level=level, query=query, limit=0,
                            include_removed=removed or removed_only,
                            update_range=update_range)
    if removed_only:
        req.removed = "YES"
    return req


def _mark_removal(item: Dataset, row: dict[str, Any]) -> None:
    """Removed from Operational Use (0008,0405) and its reason (0008,0406, CID 7031)."""
    reason = row.get(REMOVED)
    item.RemovedFromOperationalUse = "YES" if reason else "NO"
    if reason:
        item.ReasonForRemovalCodeSequence = [reason_item(*reason)]


def _value(row: dict[str, Any], column: str) -> Any:
    value = row.get(column)
    return None if value in ("", None) else value


@dataclass
class BuiltInventory:
    """An inventory as datasets: ``instances[0]`` is the root."""

    instances: list[Dataset]
    total_studies: int

    @property
    def root(self) -> Dataset:
        return self.instances[0]


class InventoryBuilder:
    """Builds Inventory instances from the index of `archive`."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.rq = RepositoryQuery(archive.search)

    # -- records -------------------------------------------------------------------------------

    def study_keys(self, spec: InventorySpec) -> list[int]:
        """The studies in scope, in record order: a snapshot.

        Live studies are their index keys (positive); studies removed from operational use
        (tombstones not yet purged) are their tombstone's key, negated.
        """
        by_level = _split_scope(spec)
        scope_sequence(spec)  # a value the Scope of Inventory Sequence cannot hold fails now
        req = _pairs_to_request(self.rq, QueryLevel.STUDY, by_level[QueryLevel.STUDY], (),
                                removed=True)
        keys = []
        deeper = by_level[QueryLevel.SERIES] or by_level[QueryLevel.IMAGE]
        for pk, row in self.rq.all_records(req):
            removed = TOMBSTONE in row
            # A removed study is in scope when the series or instances it had match.
            if deeper and not self._has_children(row["study.study_instance_uid"], by_level,
                                                 removed=removed):
                continue
            keys.append(-int(row[TOMBSTONE]) if removed else pk)
        return keys

    def _has_children(self, study_uid: str, by_level: dict[QueryLevel, list[tuple[str, str]]],
                      *, removed: bool = False) -> bool:
        level = QueryLevel.IMAGE if by_level[QueryLevel.IMAGE] else QueryLevel.SERIES
        pairs = [("StudyInstanceUID", study_uid)] + by_level[QueryLevel.SERIES]
        if level is QueryLevel.IMAGE:
            pairs += by_level[QueryLevel.IMAGE]
        req = _pairs_to_request(self.rq, level, pairs, (), removed=removed)
        return next(iter(self.rq.rows(req)), None) is not None

    def _study_row(self, pk: int) -> dict[str, Any] | None:
        from sqlalchemy import select

        from archivist.index.removal import decode_row
        from archivist.index.schema import patient, study, tombstone

        if pk < 0:  # a removed study (see study_keys)
            with self.archive.index.reader.connect() as conn:
                t = conn.execute(select(tombstone).where(tombstone.c.pk == -pk)).first()
            if t is None:
                return None  # purged meanwhile
            kept = decode_row(t.row)
            kept[REMOVED] = (t.reason_value, t.reason_scheme, t.reason_meaning)
            return kept

        with self.archive.index.reader.connect() as conn:
            row = conn.execute(
                select(*[c.label(f"study.{c.name}") for c in study.c],
                       *[c.label(f"patient.{c.name}") for c in patient.c])
                .select_from(study.join(patient, study.c.patient_pk == patient.c.pk))
                .where(study.c.pk == pk)
            ).first()
        return dict(row._mapping) if row is not None else None

    def study_item(self, row: dict[str, Any], spec: InventorySpec, now: str,
                   by_level: dict[QueryLevel, list[tuple[str, str]]]) -> Dataset:
        """One Inventoried Studies Sequence item, with its series and instances."""
        item = Dataset()
        item.StudyInstanceUID = row["study.study_instance_uid"]
        item.ItemInventoryDateTime = now
        for keyword in _STUDY_ITEM:
            from archivist.index.schema import COLUMN_OF

            _, column = COLUMN_OF[keyword]
            setattr(item, keyword, _value(row, f"study.{column}"))
        mods = [m for m in str(row.get("study.modalities_in_study") or "").split("\\") if m]
        item.ModalitiesInStudy = mods or None
        item.PatientName = _value(row, "patient.patient_name")
        item.PatientID = _value(row, "patient.patient_id")
        item.PatientBirthDate = _value(row, "patient.patient_birth_date")
        item.PatientSex = _value(row, "patient.patient_sex")
        if row.get("patient.issuer_of_patient_id"):
            item.IssuerOfPatientID = row["patient.issuer_of_patient_id"]
        item.NumberOfStudyRelatedSeries = int(row.get("study.number_of_study_related_series") or 0)
        item.NumberOfStudyRelatedInstances = int(
            row.get("study.number_of_study_related_instances") or 0)
        item.StudyUpdateDateTime = format_dt(row.get("study.updated_at"))
        _mark_removal(item, row)
        if spec.retrieve_aet:
            item.RetrieveAETitle = spec.retrieve_aet
        if spec.level == "STUDY":
            return item
        series_items = []
        req = _pairs_to_request(self.rq, QueryLevel.SERIES,
                                [("StudyInstanceUID", item.StudyInstanceUID)]
                                + by_level[QueryLevel.SERIES], (), removed=True)
        for srow in self.rq.rows(req):
            sitem = Dataset()
            sitem.SeriesInstanceUID = srow["series.series_instance_uid"]
            sitem.Modality = _value(srow, "series.modality") or "OT"
            sitem.SeriesNumber = srow.get("series.series_number")
            if srow.get("series.series_description"):
                sitem.SeriesDescription = srow["series.series_description"]
            sitem.NumberOfSeriesRelatedInstances = int(
                srow.get("series.number_of_series_related_instances") or 0)
            _mark_removal(sitem, srow)
            if spec.level == "INSTANCE":
                sitem.InventoriedInstancesSequence = list(
                    self._instance_items(sitem.SeriesInstanceUID, by_level))
                if by_level[QueryLevel.IMAGE] and not sitem.InventoriedInstancesSequence:
                    continue
            series_items.append(sitem)
        item.InventoriedSeriesSequence = series_items
        return item

    def _instance_items(self, series_uid: str, by_level: dict[QueryLevel, list[tuple[str, str]]]
                        ) -> Iterator[Dataset]:
        req = _pairs_to_request(self.rq, QueryLevel.IMAGE,
                                [("SeriesInstanceUID", series_uid)] + by_level[QueryLevel.IMAGE],
                                (), removed=True)
        for irow in self.rq.rows(req):
            iitem = Dataset()
            iitem.SOPClassUID = irow["instance.sop_class_uid"]
            iitem.SOPInstanceUID = irow["instance.sop_instance_uid"]
            iitem.InstanceNumber = irow.get("instance.instance_number")
            _mark_removal(iitem, irow)
            yield iitem

    # -- instances -----------------------------------------------------------------------------

    def _instance(self, spec: InventorySpec, started: datetime, container: tuple[str, str],
                  number: int) -> Dataset:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = INVENTORY_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceCreationDate = datetime.now(UTC).strftime("%Y%m%d")
        ds.InstanceCreationTime = datetime.now(UTC).strftime("%H%M%S")
        ds.TimezoneOffsetFromUTC = "+0000"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = container
        ds.InstanceNumber = number
        ds.Manufacturer = MANUFACTURER
        ds.ContentDate = started.strftime("%Y%m%d")
        ds.ContentTime = started.strftime("%H%M%S.%f")
        ds.ScopeOfInventorySequence = scope_sequence(spec)
        if spec.transaction_uid:
            ds.TransactionUID = spec.transaction_uid
        ds.InventoryPurpose = spec.purpose or None
        if spec.description:
            ds.InventoryInstanceDescription = spec.description
        ds.InventoryLevel = spec.level
        ds.InventoryCompletionStatus = COMPLETE
        ds.IncorporatedInventoryInstanceSequence = []
        ds.InventoriedStudiesSequence = []
        return ds

    def iter_build(self, spec: InventorySpec, *, keys: list[int] | None = None,
                   start: int = 0, should_stop: Any = None,
                   container: tuple[str, str] | None = None,
                   prior_leaves: list[str] | None = None,
                   prior_records: int | None = None,
                   started: datetime | None = None) -> Iterator[tuple[int, Dataset]]:
        """Leaf instances one by one, then the root: ``(studies done, dataset)``.

        Parameters
        ----------
        keys
            A snapshot from :meth:`study_keys` (taken now when None).
        start
            Resume after this many studies of `keys` (leaves already built are not rebuilt).
        should_stop
            Called between studies; when it returns True the build ends with a PARTIAL root.
        container, prior_leaves, prior_records
            When resuming: the container Study/Series UIDs, the SOP Instance UIDs of the
            leaves already stored, which the root references first, and how many study records
            they hold (for the Total Number of Study Records of a PARTIAL root).
        started
            When the creation of the inventory began (Content Date and Time of every instance,
            C.38.1.1.1; default: now). A job built leaf by leaf gives the time it was initiated.
        """
        built_at = datetime.now(UTC)
        started = started or built_at
        by_level = _split_scope(spec)
        keys = self.study_keys(spec) if keys is None else keys
        total = len(keys)
        now = format_dt(built_at) or ""  # Item Inventory DateTime: when the records are read
        container = container or (generate_uid(), generate_uid())
        per = spec.studies_per_instance
        leaves: list[Dataset] = []
        done = start
        stopped = False
        if total <= per and start == 0:
            single = self._instance(spec, started, container, 1)
            for pk in keys:
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                row = self._study_row(pk)
                if row is not None:
                    single.InventoriedStudiesSequence.append(
                        self.study_item(row, spec, now, by_level))
                done += 1
            single.NumberOfStudyRecordsInInstance = len(single.InventoriedStudiesSequence)
            single.TotalNumberOfStudyRecords = total
            if stopped:
                mark_partial([single])
            yield done, single
            return
        number = 2 + len(prior_leaves or [])
        for offset in range(start, total, per):
            leaf = self._instance(spec, started, container, number)
            number += 1
            for pk in keys[offset:offset + per]:
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                row = self._study_row(pk)
                if row is not None:
                    leaf.InventoriedStudiesSequence.append(self.study_item(row, spec, now, by_level))
                done += 1
            leaf.NumberOfStudyRecordsInInstance = len(leaf.InventoriedStudiesSequence)
            leaf.TotalNumberOfStudyRecords = total
            if leaf.InventoriedStudiesSequence:
                leaves.append(leaf)
                yield done, leaf
            if stopped:
                break
        root = self._instance(spec, started, container, 1)
        root.NumberOfStudyRecordsInInstance = 0
        root.TotalNumberOfStudyRecords = total
        if stopped:
            # The leaves already yielded said `total`; a caller keeping a stopped build
            # (`mark_partial`) corrects them. The root counts what the tree holds.
            root.InventoryCompletionStatus = PARTIAL
            root.TotalNumberOfStudyRecords = sum(
                int(leaf.NumberOfStudyRecordsInInstance) for leaf in leaves) + (
                    prior_records or 0)
        refs = []
        for uid in prior_leaves or []:
            ref = Dataset()
            ref.ReferencedSOPClassUID = INVENTORY_STORAGE
            ref.ReferencedSOPInstanceUID = uid
            refs.append(ref)
        for leaf in leaves:
            ref = Dataset()
            ref.ReferencedSOPClassUID = leaf.SOPClassUID
            ref.ReferencedSOPInstanceUID = leaf.SOPInstanceUID
            refs.append(ref)
        root.IncorporatedInventoryInstanceSequence = Sequence(refs)
        yield done, root

    def build(self, spec: InventorySpec) -> BuiltInventory:
        """The whole inventory in memory (root first)."""
        items = [ds for _, ds in self.iter_build(spec)]
        root = items[-1]
        return BuiltInventory([root, *items[:-1]], int(root.TotalNumberOfStudyRecords))

    def create(self, spec: InventorySpec) -> tuple[BuiltInventory, list[IngestResult]]:
        """Build and store through the one ingest (leaves first, the root last)."""
        stored: list[IngestResult] = []
        instances: list[Dataset] = []
        for _, ds in self.iter_build(spec):
            stored.append(self.store(ds))
            instances.append(ds)
        root = instances[-1]
        log.info("inventory %s stored: level=%s studies=%d instances=%d", root.SOPInstanceUID,
                 spec.level, int(root.TotalNumberOfStudyRecords), len(instances))
        return BuiltInventory([root, *instances[:-1]], int(root.TotalNumberOfStudyRecords)), stored

    def store(self, ds: Dataset) -> IngestResult:
        """One Inventory instance through the archive's one ingest."""
        return self.archive.ingest.store_bytes(to_part10(ds), Origin("inventory"))


def mark_partial(instances: list[Dataset]) -> int:
    """Make `instances` (every instance of one inventory: the root and the leaves it
    incorporates) a PARTIAL inventory, as kept when its creation stopped before every study in
    scope was read: each says Inventory Completion Status PARTIAL (C.38.1.1.3: the degree of
    completion with respect to the Scope of Inventory, which the leaves carry too), and Total
    Number of Study Records is the number of study records the instances hold, not the number
    of studies that were in scope (the root and leaves of a kept, canceled job said 34 while
    they held 8). Returns that number."""
    total = sum(len(ds.get("InventoriedStudiesSequence", []) or []) for ds in instances)
    for ds in instances:
        ds.InventoryCompletionStatus = PARTIAL
        ds.TotalNumberOfStudyRecords = total
    return total


def to_part10(ds: Dataset) -> bytes:
    """The dataset as a Part 10 file (Explicit VR Little Endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


__all__ = ["Constraint", "InventoryBuilder", "InventorySpec", "ScopeError", "mark_partial",
           "to_part10"]
