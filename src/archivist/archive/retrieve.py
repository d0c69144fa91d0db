"""The one retrieve: C-MOVE, C-GET and (later) WADO read stored instances through here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import pydicom
from pydicom.dataset import Dataset

from archivist.archive.search import Search
from archivist.core.levels import QueryLevel
from archivist.core.matching import Query
from archivist.store.blob import BlobStore


@dataclass(frozen=True)
class InstanceRef:
    """One stored instance, as the index knows it."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    storage_key: str
    size: int
    sha256: str
    study_instance_uid: str
    series_instance_uid: str


class Retrieve:
    """Finds the instances a retrieve names and reads them from the blob store."""

    def __init__(self, search: Search, blobs: BlobStore) -> None:
        self.search = search
        self.blobs = blobs

    def instances(self, query: Query) -> Iterator[InstanceRef]:
        """Every stored instance under the entities `query` matches (at any level).

        Code Sequence constraints select the instances that carry the code.
        """
        q = Query(QueryLevel.IMAGE, list(query.constraints), [], query.pn_case_insensitive,
                  codes=list(query.codes))
        for row in self.search.rows(q):
            yield InstanceRef(
                sop_instance_uid=row["instance.sop_instance_uid"],
                sop_class_uid=row["instance.sop_class_uid"],
                transfer_syntax_uid=row["instance.transfer_syntax_uid"],
                storage_key=row["instance.storage_key"],
                size=int(row["instance.size"]),
                sha256=row["instance.sha256"],
                study_instance_uid=row["study.study_instance_uid"],
                series_instance_uid=row["series.series_instance_uid"],
            )

    def open(self, ref: InstanceRef) -> BinaryIO:
        """The stored Part 10 bytes, as received."""
        return self.blobs.open(ref.storage_key)

    def path(self, ref: InstanceRef) -> Path | None:
        return self.blobs.path(ref.storage_key)

    def dataset(self, ref: InstanceRef) -> Dataset:
        """The stored object parsed by pydicom (File Meta included)."""
        with self.open(ref) as fh:
            return pydicom.dcmread(fh)
