"""Stored inventories: the Inventory Query/Retrieve information model (PS3.4 Annex JJ).

A single-level model over the Inventory Storage instances the archive holds: each is one record,
matched on its own top-level attributes (Content Date/Time, Inventory Level, Inventory Completion
Status, Transaction UID, Inventory Purpose, SOP Instance UID, ...). They are read from the index
(the attributes it keeps for every instance), never from the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from archivist.archive.archive import Archive
from archivist.archive.retrieve import InstanceRef
from archivist.core.levels import MatchKind, QueryLevel
from archivist.core.matching import Constraint, Query, parse_constraint, value_matches
from archivist.errors import QueryError
from archivist.index.repository import attrs_of
from archivist.inventory import INVENTORY_STORAGE

#: Return/matching keys of the Inventory information model (JJ.2) that this archive supports.
INVENTORY_KEYS = (
    "SOPClassUID", "SOPInstanceUID", "ContentDate", "ContentTime", "InventoryLevel",
    "InventoryCompletionStatus", "InventoryPurpose", "InventoryInstanceDescription",
    "TransactionUID", "NumberOfStudyRecordsInInstance", "TotalNumberOfStudyRecords",
    "InstanceNumber", "InstanceCreationDate", "InstanceCreationTime", "StudyInstanceUID",
    "SeriesInstanceUID",
)
_KIND = {"ContentDate": MatchKind.DATE, "InstanceCreationDate": MatchKind.DATE,
         "ContentTime": MatchKind.TIME, "InstanceCreationTime": MatchKind.TIME,
         "SOPInstanceUID": MatchKind.UID, "TransactionUID": MatchKind.UID,
         "SOPClassUID": MatchKind.UID, "StudyInstanceUID": MatchKind.UID,
         "SeriesInstanceUID": MatchKind.UID}


@dataclass(frozen=True)
class StoredInventory:
    """One stored Inventory instance, as the index knows it."""

    ref: InstanceRef
    attrs: dict[str, Any]

    def get(self, keyword: str) -> Any:
        if keyword == "SOPInstanceUID":
            return self.ref.sop_instance_uid
        if keyword == "SOPClassUID":
            return self.ref.sop_class_uid
        if keyword == "StudyInstanceUID":
            return self.ref.study_instance_uid
        if keyword == "SeriesInstanceUID":
            return self.ref.series_instance_uid
        tag = tag_for_keyword(keyword)
        item = self.attrs.get(f"{tag:08X}") if tag is not None else None
        if not isinstance(item, dict) or not isinstance(item.get("Value"), list):
            return None
        values = item["Value"]
        return values[0] if len(values) == 1 else values

    @property
    def is_root(self) -> bool:
        return str(self.get("InstanceNumber") or "") in ("1", "")

    def summary(self) -> dict[str, Any]:
        return {k: self.get(k) for k in (
            "SOPInstanceUID", "StudyInstanceUID", "ContentDate", "ContentTime", "InventoryLevel",
            "InventoryCompletionStatus", "TotalNumberOfStudyRecords",
            "NumberOfStudyRecordsInInstance", "InventoryPurpose", "TransactionUID",
            "InstanceNumber")} | {"size": self.ref.size}


class Catalogue:
    """The inventories stored in `archive`."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def all(self) -> Iterator[StoredInventory]:
        search = self.archive.search
        query = Query(QueryLevel.IMAGE, [Constraint("SOPClassUID", "single", (INVENTORY_STORAGE,),
                                                    MatchKind.UID)])
        for row in search.rows(query):
            ref = InstanceRef(
                sop_instance_uid=row["instance.sop_instance_uid"],
                sop_class_uid=row["instance.sop_class_uid"],
                transfer_syntax_uid=row["instance.transfer_syntax_uid"],
                storage_key=row["instance.storage_key"],
                size=int(row["instance.size"]),
                sha256=row["instance.sha256"],
                study_instance_uid=row["study.study_instance_uid"],
                series_instance_uid=row["series.series_instance_uid"],
            )
            yield StoredInventory(ref, attrs_of(row, "instance"))

    def roots(self) -> list[StoredInventory]:
        return [s for s in self.all() if s.is_root]

    def tree(self, root_uid: str) -> list[StoredInventory]:
        """The root and every instance stored with it (same container study), root first."""
        found = [s for s in self.all() if s.ref.sop_instance_uid == root_uid]
        if not found:
            return []
        container = found[0].ref.study_instance_uid
        tree = [s for s in self.all() if s.ref.study_instance_uid == container]
        return sorted(tree, key=lambda s: int(s.get("InstanceNumber") or 0))

    def latest(self) -> StoredInventory | None:
        roots = self.roots()
        if not roots:
            return None
        return max(roots, key=lambda s: (str(s.get("ContentDate") or ""),
                                         str(s.get("ContentTime") or "")))

    def datasets(self, root_uid: str) -> list[Dataset]:
        return [self.archive.retrieve.dataset(s.ref) for s in self.tree(root_uid)]

    # -- Inventory FIND (JJ) -------------------------------------------------------------------

    def match(self, identifier: Dataset) -> Iterator[tuple[StoredInventory, Dataset]]:
        """Stored inventories matching an Inventory FIND identifier, with their responses.

        Raises
        ------
        QueryError
            A malformed value (a bad date range, ...).
        """
        constraints: list[Constraint] = []
        keys: list[str] = []
        for elem in identifier:
            kw = elem.keyword
            if not kw or kw in ("QueryRetrieveLevel", "SpecificCharacterSet"):
                continue
            keys.append(kw)
            if elem.VR == "SQ":
                continue
            c = parse_constraint(kw, elem.value, _KIND.get(kw, MatchKind.TEXT))
            if c is not None:
                constraints.append(c)
        for stored in self.all():
            if all(value_matches(c, stored.get(c.keyword), pn_fold=False) for c in constraints):
                yield stored, self._response(stored, keys)

    @staticmethod
    def _response(stored: StoredInventory, keys: list[str]) -> Dataset:
        ds = Dataset()
        if "SOPInstanceUID" not in keys:
            keys = [*keys, "SOPInstanceUID"]
        for kw in keys:
            tag = tag_for_keyword(kw)
            if tag is None:
                continue
            vr = dictionary_VR(tag)
            item = stored.attrs.get(f"{tag:08X}")
            if kw in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
                ds.add_new(tag, vr, stored.get(kw))
            elif isinstance(item, dict) and "Value" in item:
                try:
                    ds.add(DataElement.from_json(Dataset, f"{tag:08X}", item["vr"],
                                                 item["Value"], "Value"))
                except Exception:  # noqa: BLE001 - an unreadable value is returned empty
                    ds.add_new(tag, vr, None)
            elif vr == "SQ":
                ds.add_new(tag, vr, [])
            else:
                ds.add_new(tag, vr, None)
        return ds

    def refs_for(self, identifier: Dataset) -> list[InstanceRef]:
        """Instances an Inventory MOVE/GET names (by SOP Instance UID, or any matching key)."""
        if not any(elem.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet")
                   and elem.value not in (None, "") for elem in identifier):
            raise QueryError("Inventory retrieve needs at least one matching key")
        return [stored.ref for stored, _ in self.match(identifier)]
