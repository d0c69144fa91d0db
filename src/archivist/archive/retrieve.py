"""The one retrieve: C-MOVE, C-GET and (later) WADO read stored instances through here."""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset, read_preamble
from sqlalchemy.exc import OperationalError

from archivist.archive import part10
from archivist.archive.search import Search
from archivist.archive.transcode import MAX_DECODE_BYTES
from archivist.core.levels import QueryLevel
from archivist.core.matching import Query
from archivist.errors import IndexError_, NotFound, QueryError
from archivist.store.blob import BlobStore

#: The Unique Key of each Query/Retrieve Level, with its name for an Error Comment
#: (PS3.4 C.6.1.1 Patient Root, C.6.2.1 Study Root).
UNIQUE_KEYS = {
    QueryLevel.PATIENT: ("PatientID", "Patient ID"),
    QueryLevel.STUDY: ("StudyInstanceUID", "Study Instance UID"),
    QueryLevel.SERIES: ("SeriesInstanceUID", "Series Instance UID"),
    QueryLevel.IMAGE: ("SOPInstanceUID", "SOP Instance UID"),
}


def check_unique_key(query: Query) -> None:
    """Refuse a C-MOVE / C-GET Identifier that does not name what to retrieve by the Unique
    Key of its Query/Retrieve Level (PS3.4 C.4.2.2.1, C.4.3.2.1): one UID or a list of UIDs
    at STUDY, SERIES and IMAGE level, one Patient ID at PATIENT level. An absent or empty key
    (universal matching) or a wildcard would retrieve whatever happens to match, up to the
    whole archive. The keys of the levels above are not required (as with relational
    retrieve); when given they narrow the retrieve.

    Raises
    ------
    QueryError
        The Unique Key of the level is absent, empty, a wildcard or a range, or a list of
        Patient IDs (only Single Value Matching is defined for Patient ID).
    """
    keyword, name = UNIQUE_KEYS[query.level]
    c = query.constraint(keyword)
    if c is None:
        raise QueryError(f"Missing {name}, the unique key of {query.level.value} level")
    if c.op in ("wildcard", "range") or (c.op == "list" and query.level is QueryLevel.PATIENT):
        if query.level is QueryLevel.PATIENT:
            raise QueryError(f"{name} to retrieve: one value, no wildcard or list")
        raise QueryError(f"{name} to retrieve: one UID or a list of UIDs")


#: How often :meth:`Retrieve.open` follows an instance replaced while it opens it.
_REPLACED_TRIES = 4


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

    def instance(self, sop_instance_uid: str) -> InstanceRef | None:
        """The stored instance with this SOP Instance UID, None when there is none: one index
        lookup by the unique key (a WADO-RS frame, rendered or metadata request names one
        instance; the general search cost ~0.7 ms more a request).

        Raises
        ------
        IndexError_
            The index could not be read.
        """
        try:
            row = self.search.index.stored_copy(sop_instance_uid)
        except OperationalError as exc:
            raise IndexError_(f"index read failed: {type(exc).__name__}") from exc
        if row is None:
            return None
        return InstanceRef(
            sop_instance_uid=sop_instance_uid, sop_class_uid=row["sop_class_uid"],
            transfer_syntax_uid=row["transfer_syntax_uid"], storage_key=row["storage_key"],
            size=int(row["size"]), sha256=row["sha256"],
            study_instance_uid=row["study_instance_uid"],
            series_instance_uid=row["series_instance_uid"])

    def instances(self, query: Query) -> Iterator[InstanceRef]:
        """Every stored instance under the entities `query` matches (at any level), a study's
        series by Series Number and a series' instances by Instance Number (then in the order
        they were stored): what C-MOVE and C-GET send, and WADO-RS a study or series in, so a
        receiver gets a series in viewing order.

        Code Sequence constraints select the instances that carry the code.
        """
        q = Query(QueryLevel.IMAGE, list(query.constraints), [], query.pn_case_insensitive,
                  codes=list(query.codes))
        rows = list(self.search.rows(q))
        studies: dict[str, int] = {}
        series: dict[str, int] = {}
        for row in rows:
            studies.setdefault(row["study.study_instance_uid"], len(studies))
            series.setdefault(row["series.series_instance_uid"], len(series))
        never = 1 << 62  # a missing number sorts after the numbered ones

        def order(item: tuple[int, dict[str, Any]]) -> tuple[int, ...]:
            n, row = item
            return (studies[row["study.study_instance_uid"]],
                    _number(row.get("series.series_number"), never),
                    series[row["series.series_instance_uid"]],
                    _number(row.get("instance.instance_number"), never), n)

        for _, row in sorted(enumerate(rows), key=order):
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
        """The stored Part 10 bytes, as received: those of `ref`, or, when the instance was
        replaced since `ref` was found (duplicate policy ``replace``), those of its new copy
        if it has the size and transfer syntax `ref` says (a caller may have announced them,
        as a Content-Length or a part's media type).

        Raises
        ------
        NotFound
            The instance was deleted since `ref` was found (or replaced by a copy that cannot
            stand in for it).
        """
        return self._open_current(ref, strict=True)

    def _open_current(self, ref: InstanceRef, *, strict: bool) -> BinaryIO:
        """:meth:`open`; with ``strict=False`` a new copy of another size or transfer syntax
        stands in too (for readers that take both from the bytes they read)."""
        for _ in range(_REPLACED_TRIES):
            try:
                return self.blobs.open(ref.storage_key)
            except NotFound:
                newer = self.replacement(ref, same_syntax=strict)
                if newer is None or (strict and newer.size != ref.size):
                    raise
                ref = newer
        return self.blobs.open(ref.storage_key)

    def path(self, ref: InstanceRef) -> Path | None:
        """The file of `ref`, or of its new copy when it was replaced since `ref` was found
        (a new copy in the same transfer syntax; a path that does not exist: deleted
        meanwhile)."""
        path = self.blobs.path(ref.storage_key)
        if path is None or path.exists():
            return path
        newer = self.replacement(ref)
        return self.blobs.path(newer.storage_key) if newer is not None else path

    def replacement(self, ref: InstanceRef, *, same_syntax: bool = True) -> InstanceRef | None:
        """The instance of `ref` as stored now when it was replaced since `ref` was found (a
        new copy of the same SOP Instance under another storage key, whose old blob the
        replacing store deletes), else None (deleted, or not replaced).

        The new copy stands in only when the caller's decisions still hold for it: same SOP
        Class, series and study, and (`same_syntax`) transfer syntax (a retrieve has chosen
        its presentation context or part header by them); otherwise the instance is treated
        as gone.
        """
        row = self.search.index.stored_copy(ref.sop_instance_uid)
        if row is None or row["storage_key"] == ref.storage_key:
            return None
        if (row["sop_class_uid"], row["series_instance_uid"], row["study_instance_uid"]) != \
                (ref.sop_class_uid, ref.series_instance_uid, ref.study_instance_uid):
            return None
        if same_syntax and row["transfer_syntax_uid"] != ref.transfer_syntax_uid:
            return None
        return dataclasses.replace(ref, storage_key=row["storage_key"], size=int(row["size"]),
                                   sha256=row["sha256"],
                                   transfer_syntax_uid=row["transfer_syntax_uid"])

    def dataset(self, ref: InstanceRef) -> Dataset:
        """The stored object parsed by pydicom (File Meta included); a deflated one is inflated
        a step at a time (:func:`~archivist.archive.part10.read_stored`), at most to what a
        transcoding may take.

        Raises
        ------
        part10.InflateRefused
            A deflated data set past that (a bomb stored before ingest refused them).
        """
        with self._open_current(ref, strict=False) as fh:
            return part10.read_stored(fh, ceiling=MAX_DECODE_BYTES)

    def encoded(self, ref: InstanceRef) -> tuple[str, bytes]:
        """The stored data set without its File Meta Information (PS3.10 7.1), as stored:
        ``(transfer syntax, bytes)``, ready to go out in a C-STORE request unchanged."""
        with self._open_current(ref, strict=False) as fh:
            head = fh.read(144)
            # The usual layout: preamble, DICM, then (0002,0000) UL 4 <group length>.
            if len(head) == 144 and head[128:140] == b"DICM\x02\x00\x00\x00UL\x04\x00":
                (group_length,) = struct.unpack("<L", head[140:144])
                group = fh.read(group_length)
                data = fh.read()
                # The File Meta walked with struct (a pydicom parse of it was ~8 % of the
                # CPU of a C-MOVE); pydicom's reader where the walk cannot tell.
                ts = part10.meta_syntax(head + group) if len(group) == group_length else None
                if ts is not None:
                    return ts, _padded(ts, data)
                meta = BytesIO(group)
            else:
                meta = BytesIO(head + fh.read())
                read_preamble(meta, True)  # type: ignore[arg-type]
                data = b""
        file_meta = read_dataset(meta, is_implicit_VR=False, is_little_endian=True,  # type: ignore[arg-type]
                                 stop_when=lambda tag, vr, length: tag.group != 2)
        if not data:
            data = meta.read()
        ts = str(file_meta.get("TransferSyntaxUID", "") or ref.transfer_syntax_uid)
        return ts, _padded(ts, data)

    def encoded_stream(self, ref: InstanceRef) -> tuple[str, BinaryIO, int]:
        """As :meth:`encoded`, without reading the data set: ``(transfer syntax, the stored
        file positioned at the data set's first byte, the data set's length)``, for a large
        object sent as it is read. The caller closes the file."""
        fh = self._open_current(ref, strict=False)
        try:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(144)
            if len(head) == 144 and head[128:140] == b"DICM\x02\x00\x00\x00UL\x04\x00":
                (group_length,) = struct.unpack("<L", head[140:144])
                group = fh.read(group_length)
                ts = part10.meta_syntax(head + group) if len(group) == group_length else None
                if ts is None:
                    file_meta = read_dataset(BytesIO(group), is_implicit_VR=False,  # type: ignore[arg-type]
                                             is_little_endian=True,
                                             stop_when=lambda tag, vr, length: tag.group != 2)
                    ts = str(file_meta.get("TransferSyntaxUID", "") or ref.transfer_syntax_uid)
                start = fh.tell()
                if not (ts == _DEFLATED and (size - start) % 2):
                    return ts, fh, size - start
                # Its pad byte is missing (below): read whole, as encoded() does.
        except BaseException:
            fh.close()
            raise
        fh.close()  # an unusual layout: read whole, as encoded() reads it
        ts, data = self.encoded(ref)
        return ts, BytesIO(data), len(data)

    def stored(self, ref: InstanceRef) -> StoredInstance:
        """`ref` as a :class:`StoredInstance`: nothing is read until asked."""
        return StoredInstance(self, ref)


class StoredInstance:
    """One stored instance on its way out (a C-MOVE or C-GET sub-operation), read lazily:
    either as the stored bytes (:meth:`encoded`, no parsing) or parsed (:meth:`dataset`)."""

    def __init__(self, retrieve: Retrieve, ref: InstanceRef) -> None:
        self.retrieve = retrieve
        self.ref = ref

    @property
    def sop_instance_uid(self) -> str:
        return self.ref.sop_instance_uid

    def encoded(self) -> tuple[str, bytes]:
        return self.retrieve.encoded(self.ref)

    def encoded_stream(self) -> tuple[str, BinaryIO, int]:
        return self.retrieve.encoded_stream(self.ref)

    def dataset(self) -> Dataset:
        return self.retrieve.dataset(self.ref)


_DEFLATED = "1.2.840.10008.1.2.1.99"


def _padded(ts: str, data: bytes) -> bytes:
    """A deflated data set with its pad byte: an odd number of deflated bytes takes a NUL
    (PS3.5 A.5), which a file written by DCMTK 3.6.7's dcmconv +td lacks; a PDV of odd length
    makes DCMTK's receivers abort the association."""
    if ts == _DEFLATED and len(data) % 2:
        return data + b"\0"
    return data


def _number(value: Any, missing: int) -> int:
    """An IS value of the index as a sort key (`missing` when absent or not a number)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return missing
