"""Stored inventories: the Inventory Query/Retrieve information model (PS3.4 Annex JJ).

A single-level model over the Inventory Storage instances the archive holds: each is one record,
matched on its own top-level attributes (Content Date/Time, Inventory Level, Inventory Completion
Status, Transaction UID, Inventory Purpose, SOP Instance UID, ...). They are read from the index
(the attributes it keeps for every instance).

The index keeps no sequence of an inventory. The two a FIND may name, Scope of Inventory Sequence
(0008,0400) and Incorporated Inventory Instance Sequence (0008,0422), are read from the stored
object, and only from its head: both precede the Inventoried Studies Sequence (0008,0423), where
the reading stops (:meth:`Catalogue.head`). A request naming either as a return key gets the stored
items (restricted to the sub-keys its item names, PS3.4 C.2.2.1.3); one whose item holds values
matches it by Sequence Matching (PS3.4 C.2.2.2.6: some stored item matches every key of the
request's item). Any other sequence (the Inventoried Studies Sequence: the whole inventory) is
left out of the responses, and refused as a matching key.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_partial
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from archivist.archive import part10
from archivist.archive.archive import Archive
from archivist.archive.retrieve import InstanceRef
from archivist.archive.transcode import MAX_DECODE_BYTES
from archivist.core.levels import MatchKind, QueryLevel
from archivist.core.matching import Constraint, Query, kind_of, parse_constraint, value_matches
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
#: The sequences answered and matched from the stored object's head (keyword: tag).
FILE_SEQUENCES = {"ScopeOfInventorySequence": 0x00080400,
                  "IncorporatedInventoryInstanceSequence": 0x00080422}
#: Inventoried Studies Sequence: the head of an inventory ends before it.
_INVENTORIED_STUDIES = 0x00080423

log = logging.getLogger("archivist.inventory.catalogue")


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

    def head(self, stored: StoredInventory) -> Dataset | None:
        """The stored object up to its Inventoried Studies Sequence (which is not read): the
        top-level attributes and the sequences of :data:`FILE_SEQUENCES`; None when it cannot
        be read (deleted meanwhile, unreadable), logged."""
        try:
            with self.archive.retrieve.open(stored.ref) as fh:
                if part10.is_deflated(fh):
                    return part10.read_stored(fh, specific_tags=list(FILE_SEQUENCES.values()),
                                              ceiling=MAX_DECODE_BYTES)
                return read_partial(fh, stop_when=lambda tag, vr, length:
                                    int(tag) >= _INVENTORIED_STUDIES)
        except Exception as exc:  # noqa: BLE001 - the sequences are then not known
            log.warning("cannot read stored inventory %s: %s", stored.ref.sop_instance_uid,
                        type(exc).__name__)
            return None

    # -- Inventory FIND (JJ) -------------------------------------------------------------------

    def match(self, identifier: Dataset) -> Iterator[tuple[StoredInventory, Dataset]]:
        """Stored inventories matching an Inventory FIND identifier, with their responses.

        Raises
        ------
        QueryError
            A malformed value (a bad date range, ...), a sequence key with values other than
            those of :data:`FILE_SEQUENCES`, or one holding more than one item.
        """
        constraints: list[Constraint] = []
        keys: list[str] = []
        sequences: dict[str, DataElement] = {}  # the sequence keys (return or matching)
        for elem in identifier:
            kw = elem.keyword
            if not kw or kw in ("QueryRetrieveLevel", "SpecificCharacterSet"):
                continue
            if elem.VR == "SQ":
                _check_sequence_key(elem)
                if kw in FILE_SEQUENCES:
                    keys.append(kw)
                    sequences[kw] = elem
                elif _has_values(elem):
                    raise QueryError(f"{kw} is not supported for matching")
                continue  # another sequence: left out of the responses
            keys.append(kw)
            c = parse_constraint(kw, elem.value, _KIND.get(kw, MatchKind.TEXT))
            if c is not None:
                constraints.append(c)
        matching = {kw: e for kw, e in sequences.items() if _has_values(e)}
        for stored in self.all():
            if not all(value_matches(c, stored.get(c.keyword), pn_fold=False)
                       for c in constraints):
                continue
            head = self.head(stored) if sequences else None
            if matching and (head is None or not all(
                    _sequence_matches(e, head.get(e.tag)) for e in matching.values())):
                continue
            yield stored, self._response(stored, keys, head, sequences)

    @staticmethod
    def _response(stored: StoredInventory, keys: list[str], head: Dataset | None = None,
                  sequences: dict[str, DataElement] | None = None) -> Dataset:
        ds = Dataset()
        if head is not None and head.get("SpecificCharacterSet"):
            # The stored items are decoded by it (an item may have none of its own).
            ds.SpecificCharacterSet = head.SpecificCharacterSet
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
            elif kw in FILE_SEQUENCES:
                if head is None:
                    continue  # not known (the object could not be read): left out
                held = head.get(tag)
                request = (sequences or {}).get(kw)
                ds.add(DataElement(tag, "SQ", _returned_items(
                    held.value if held is not None and held.VR == "SQ" else [],
                    request.value if request is not None else [])))
            elif isinstance(item, dict) and "Value" in item:
                try:
                    ds.add(DataElement.from_json(Dataset, f"{tag:08X}", item["vr"],
                                                 item["Value"], "Value"))
                except Exception:  # noqa: BLE001 - an unreadable value is returned empty
                    ds.add_new(tag, vr, None)
            elif vr == "SQ":
                continue  # a sequence the index does not keep: left out, not claimed empty
            else:
                ds.add_new(tag, vr, None)
        return ds

    def refs_for(self, identifier: Dataset) -> list[InstanceRef]:
        """Instances an Inventory MOVE/GET names (by SOP Instance UID, or any matching key:
        an empty sequence, or one whose item holds no value, is none)."""
        if not any(elem.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet")
                   and (_has_values(elem) if elem.VR == "SQ" else elem.value not in (None, ""))
                   for elem in identifier):
            raise QueryError("Inventory retrieve needs at least one matching key")
        return [stored.ref for stored, _ in self.match(identifier)]


# -- sequence keys (PS3.4 C.2.2.1.3 and C.2.2.2.6) ---------------------------------------------


def _check_sequence_key(elem: DataElement) -> None:
    """A sequence key holds at most one item (PS3.4 C.2.2.2.6), at every depth."""
    items = elem.value or []
    if len(items) > 1:
        raise QueryError(f"{elem.keyword or elem.tag}: a sequence key holds one item at most")
    for item in items:
        for sub in item:
            if sub.VR == "SQ":
                _check_sequence_key(sub)


def _has_values(elem: DataElement) -> bool:
    """Whether a key is a matching key: a value other than empty (a sequence: some key of its
    item, at any depth, has one); an empty sequence, or one of empty keys, is a return key."""
    if elem.VR != "SQ":
        value = elem.value
        if isinstance(value, bytes):
            return value.strip(b" \0") != b""
        if isinstance(value, (list, tuple, MultiValue)):
            return any(str(v) != "" for v in value)
        return value is not None and str(value) != ""
    return any(_has_values(sub) for item in elem.value or [] for sub in item)


def _plain(value: Any) -> Any:
    """A pydicom value as :func:`value_matches` takes it (several values as a list)."""
    if isinstance(value, MultiValue):
        return [_plain(v) for v in value]
    return value


def _sequence_matches(request: DataElement, held: DataElement | None) -> bool:
    """Sequence Matching: some item of the stored sequence `held` matches every matching key
    of the request's item (a request without matching keys matches anything)."""
    items = request.value or []
    if not items or not _has_values(request):
        return True
    if held is None or held.VR != "SQ":
        return False
    return any(_item_matches(items[0], stored) for stored in held.value or [])


def _item_matches(request: Dataset, stored: Dataset) -> bool:
    for elem in request:
        if not _has_values(elem):
            continue  # universal matching
        held = stored.get(elem.tag)
        if elem.VR == "SQ":
            if not _sequence_matches(elem, held):
                return False
            continue
        kw = elem.keyword
        if not kw:
            return False  # a private key with a value: not matched, nothing matches it
        c = parse_constraint(kw, _plain(elem.value), kind_of(kw))
        value = None if held is None or held.VR == "SQ" else _plain(held.value)
        if c is not None and not value_matches(c, value, pn_fold=False):
            return False
    return True


def _returned_items(held: list[Dataset], request_items: list[Dataset]) -> Sequence:
    """The stored items as a response returns them: whole when the request's item is absent
    or empty (all the attributes of the item), else only the keys the request's item names,
    zero-length where a stored item has no such attribute (PS3.4 C.2.2.1.3)."""
    wanted = request_items[0] if request_items else None
    return Sequence([_returned_item(item, wanted) for item in held])


def _returned_item(item: Dataset, wanted: Dataset | None) -> Dataset:
    if wanted is None or len(wanted) == 0:
        return copy.deepcopy(item)
    out = Dataset()
    for key in wanted:
        held = item.get(key.tag)
        if held is None:
            out.add(DataElement(key.tag, key.VR, Sequence() if key.VR == "SQ" else None))
        elif held.VR == "SQ":
            out.add(DataElement(held.tag, "SQ", _returned_items(
                list(held.value or []), list(key.value or []) if key.VR == "SQ" else [])))
        else:
            out.add(copy.deepcopy(held))
    return out
