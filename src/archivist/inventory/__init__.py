"""Supplement 223 (DICOM 2022c): Repository Query, Inventory objects, Inventory Q/R, Inventory
Creation, and what a user builds on them (inventory diff, verified migration).

Modules, one concept each:

- :mod:`~archivist.inventory.records`: Repository Query over the index (record keys, paging).
- :mod:`~archivist.inventory.builder`: the Inventory IOD (PS3.3 A.88) built from the index.
- :mod:`~archivist.inventory.catalogue`: stored inventories, the Inventory Q/R information model.
- :mod:`~archivist.inventory.export`: inventories as JSON and CSV.
- :mod:`~archivist.inventory.model` and :mod:`~archivist.inventory.diff`: inventories compared.
- :mod:`~archivist.inventory.remote`: the SCU side (Repository Query, plain C-FIND, C-MOVE/C-GET).
- :mod:`~archivist.inventory.migrate`: pull another archive in, resumably, and prove it.
- :mod:`~archivist.inventory.creation`: Inventory Creation jobs (PS3.4 Annex KK).
"""

from __future__ import annotations

from collections.abc import Iterable

from archivist.core.levels import KEYS, QueryLevel

#: PS3.6 Table A-1 (Supplement 223 UIDs).
INVENTORY_STORAGE = "1.2.840.10008.5.1.4.1.1.201.1"
INVENTORY_FIND = "1.2.840.10008.5.1.4.1.1.201.2"
INVENTORY_MOVE = "1.2.840.10008.5.1.4.1.1.201.3"
INVENTORY_GET = "1.2.840.10008.5.1.4.1.1.201.4"
INVENTORY_CREATION = "1.2.840.10008.5.1.4.1.1.201.5"
REPOSITORY_QUERY = "1.2.840.10008.5.1.4.1.1.201.6"
STORAGE_MANAGEMENT_INSTANCE = "1.2.840.10008.5.1.4.1.1.201.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"


def scope_by_level(scope: Iterable[tuple[str, str]]) -> dict[QueryLevel, list[tuple[str, str]]]:
    """The keys of an inventory scope by the query level they are matched at: a patient's
    with the study's, a key outside the dictionary of query keys at STUDY level, Query/Retrieve
    Level and Specific Character Set left out. This archive's own inventories
    (:mod:`~archivist.inventory.builder`) and those of a live source read with plain C-FIND
    (:mod:`~archivist.inventory.sources`, where a key sent at another level matches nothing
    at Orthanc and is ignored by dcmqrscp) split a scope so."""
    by_level: dict[QueryLevel, list[tuple[str, str]]] = {
        QueryLevel.STUDY: [], QueryLevel.SERIES: [], QueryLevel.IMAGE: []}
    for keyword, value in scope:
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        key = KEYS.get(keyword)
        level = key.level if key is not None else QueryLevel.STUDY
        if level is QueryLevel.PATIENT:
            level = QueryLevel.STUDY
        by_level[level].append((keyword, value))
    return by_level
