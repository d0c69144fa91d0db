"""The coded concepts of an object that the index keeps for query by code (issue 6).

At ingest, the items of the Code Sequences in :data:`archivist.core.levels.CODE_SEQUENCES`
(Procedure Code, Anatomic Region, Requested Procedure Code, and the Concept Name Code of an SR
document's root; also the Anatomic Region of the Frame Anatomy functional group, shared or per
frame, PS3.3 C.7.6.16.2.8, and of each segment of a Segmentation, C.8.20.2) become
:class:`~archivist.index.extract.CodeRow` values, one per distinct code as stored, each with
its normalised (scheme, value) to match on: retired SNOMED designators (SRT, SNM3, 99SDM) map
to SCT through PS3.16 Annex O (:func:`archivist.terminology.normalise_code`). Body Part
Examined (0018,0015) is indexed as the Anatomic Region code PS3.16 Annex L pairs it with. The
object itself is never changed.

Objects stored before index revision 0002 have no indexed codes, and those stored before codes
were kept in every stored form have one row per concept; :func:`reindex_codes` (the
``archivist reindex --codes`` command) reads each stored object's header once and rewrites its
codes, and can be run again at any time with the same outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from sqlalchemy import delete, insert, select

from archivist.core.levels import CODE_SEQUENCES
from archivist.index.extract import CodeRow
from archivist.index.repository import Index
from archivist.index.schema import instance, instance_code, series
from archivist.store.blob import BlobStore
from archivist.terminology import body_part_code, normalise_code

log = logging.getLogger("archivist.archive.coded")

#: At most this many codes per instance are indexed (an object cannot flood the index): distinct
#: concepts (normalised codes) of its Code Sequences, and twice as many forms as stored.
MAX_CODES_PER_INSTANCE = 64
_MAX_VALUE_LEN = 256

#: Sequences whose items may carry Code Sequences of the request, of all frames or of segments.
_CONTAINERS = {
    "RequestAttributesSequence": ("RequestedProcedureCodeSequence",),
    "ReferencedRequestSequence": ("RequestedProcedureCodeSequence",),
    "SharedFunctionalGroupsSequence": (),  # its FrameAnatomySequence, below
    # The anatomy of each segment of a Segmentation (Segment Sequence of the Segmentation
    # Image Module, PS3.3 C.8.20.2): the object's anatomy, as Frame Anatomy is an image's.
    "SegmentSequence": ("AnatomicRegionSequence",),
}
#: Per-frame Functional Groups Sequence (5200,9230), Frame Anatomy Sequence (0020,9071),
#: Anatomic Region Sequence (0008,2218): the anatomy of each frame (PS3.3 C.7.6.16.2.8).
_PER_FRAME_GROUPS = BaseTag(0x52009230)
_FRAME_ANATOMY = BaseTag(0x00209071)
_ANATOMIC_REGION = BaseTag(0x00082218)
#: Code Value, Long Code Value, URN Code Value, Coding Scheme Designator, Code Meaning.
_CODE_TAGS = tuple(BaseTag(t) for t in (0x00080100, 0x00080119, 0x00080120, 0x00080102,
                                        0x00080104))


def _text(value: object) -> str:
    if isinstance(value, (MultiValue, list, tuple)):
        # Code Value, Coding Scheme Designator and Code Meaning have VM 1 (PS3.3 Table 8.8-1);
        # of an invalid multi-valued one the first value is kept, not the list's repr.
        value = value[0] if value else None
    return "" if value is None else str(value).strip(" \x00")


def _code_of(item: Dataset) -> tuple[str, str, str | None] | None:
    """(designator, value, meaning) of one Code Sequence Macro item (PS3.3 8.8), or None."""
    value = ""
    for keyword in ("CodeValue", "LongCodeValue", "URNCodeValue"):
        value = _text(item.get(keyword))
        if value:
            break
    if not value or len(value) > _MAX_VALUE_LEN:
        return None
    scheme = _text(item.get("CodingSchemeDesignator"))
    meaning = _text(item.get("CodeMeaning")) or None
    return scheme, value, meaning


def _sequence_items(ds: Dataset, keyword: str) -> Iterator[Dataset]:
    tag = pydicom.datadict.tag_for_keyword(keyword)
    if tag is not None and tag not in ds._dict:  # absent: no look-up by keyword
        return
    try:
        seq = ds.get(keyword)
    except Exception:  # noqa: BLE001 - an undecodable element is simply not indexed
        return
    if seq is None:
        return
    try:
        yield from (item for item in seq if isinstance(item, Dataset))
    except TypeError:
        return


def _coded_items(ds: Dataset) -> Iterator[tuple[str, Dataset]]:
    """(Code Sequence keyword, item) for every indexed code of the object."""
    for keyword in CODE_SEQUENCES:
        for item in _sequence_items(ds, keyword):
            yield keyword, item
    for container, inner in _CONTAINERS.items():
        for outer in _sequence_items(ds, container):
            for keyword in inner:
                for item in _sequence_items(outer, keyword):
                    yield keyword, item
            if container == "SharedFunctionalGroupsSequence":
                for anatomy in _sequence_items(outer, "FrameAnatomySequence"):
                    for item in _sequence_items(anatomy, "AnatomicRegionSequence"):
                        yield "AnatomicRegionSequence", item
    if _PER_FRAME_GROUPS in ds._dict:
        for item in _per_frame_anatomy(ds):
            yield "AnatomicRegionSequence", item


def _per_frame_anatomy(ds: Dataset) -> Iterator[Dataset]:
    """The Anatomic Region items of every frame's Frame Anatomy, each distinct item once.

    The frames mostly repeat one region or a few (thousands of frames, one code). A frame's
    Frame Anatomy Sequence that pydicom has not parsed yet (its bytes, as read) is parsed only
    when those bytes differ from every frame's before; an item is compared with those already
    given on its code values, by dictionary look-ups. :func:`extract_codes` stops reading at
    its cap of distinct codes.
    """
    seen: set[tuple[object, ...]] = set()
    seen_raw: set[bytes] = set()
    for group in _items_at(ds, _PER_FRAME_GROUPS):
        raw = group._dict.get(_FRAME_ANATOMY)
        if raw is None:
            continue
        if not isinstance(raw, DataElement) and isinstance(raw.value, bytes):
            if raw.value in seen_raw:
                continue  # the anatomy of a frame before, byte for byte
            seen_raw.add(raw.value)
        for anatomy in _items_at(group, _FRAME_ANATOMY):
            for item in _items_at(anatomy, _ANATOMIC_REGION):
                elements = item._dict
                key = tuple(_plain(elements.get(tag)) for tag in _CODE_TAGS)
                if key not in seen:
                    seen.add(key)
                    yield item


def _items_at(ds: Dataset, tag: BaseTag) -> list[Dataset]:
    """The items of the sequence at `tag` of `ds` (none when it is absent or not a sequence)."""
    element = ds._dict.get(tag)
    if element is None:
        return []
    if not isinstance(element, DataElement):
        try:
            element = ds[tag]  # read as pydicom reads it, once
        except Exception:  # noqa: BLE001 - an undecodable element is simply not indexed
            return []
    try:
        return [item for item in element.value if isinstance(item, Dataset)]
    except TypeError:
        return []


def _plain(element: object) -> object:
    """The value of an element as a set key (a multi-valued one as its text)."""
    value = getattr(element, "value", None)
    return value if value is None or isinstance(value, (str, bytes)) else str(value)


def extract_codes(ds: Dataset) -> list[CodeRow]:
    """The coded concepts of `ds` to index: each distinct code as stored, with its normalised key.

    One row per distinct (sequence, designator, value, meaning) as the object has them, not
    per normalised key: an object carrying SCT 10200004 and its retired equivalent SRT T-62000
    keeps both, so that the sequence is answered with both items and a query on either form
    as stored (``T-6200*`` with ``SRT``) finds it. Identical items are kept once. The cap
    counts concepts, so an object giving each code in both forms keeps as many concepts as one
    giving one form.

    Parameters
    ----------
    ds
        The dataset as ingest read it (pixel data need not be loaded).

    Returns
    -------
    list of CodeRow
        At most :data:`MAX_CODES_PER_INSTANCE` concepts from the Code Sequences, in at most
        twice as many rows, and the code of Body Part Examined.
    """
    rows: dict[tuple[str, str, str, str, str | None], CodeRow] = {}
    concepts: set[tuple[str, str, str]] = set()
    for keyword, item in _coded_items(ds):
        try:
            code = _code_of(item)
        except Exception:  # noqa: BLE001, S112 - an item whose values cannot be decoded (a Code
            continue  # Value of VR FL...) is not indexed; the validator reports it
        if code is None:
            continue
        scheme, value, meaning = code
        key = (keyword, keyword, scheme, value, meaning)
        if key in rows:
            continue
        norm_scheme, norm_value = normalise_code(scheme, value)
        concept = (keyword, norm_scheme, norm_value)
        if concept not in concepts:
            if len(concepts) >= MAX_CODES_PER_INSTANCE:
                break
            concepts.add(concept)
        rows[key] = CodeRow(keyword, keyword, norm_scheme, norm_value, scheme, value, meaning)
        if len(rows) >= 2 * MAX_CODES_PER_INSTANCE:
            break
    body_part = _text(ds.get("BodyPartExamined"))
    if body_part:
        # Indexed as the Anatomic Region Sequence item it stands for, with the code's own
        # meaning (PS3.16 Annex L: HEAD -> SCT 69536005 "Head"), not the defined term.
        mapped = body_part_code(body_part)
        if mapped is not None:
            scheme, value, meaning = mapped
            rows[("AnatomicRegionSequence", "BodyPartExamined", scheme, value, meaning)] = (
                CodeRow("AnatomicRegionSequence", "BodyPartExamined", scheme, value, scheme,
                        value, meaning))
    return list(rows.values())


@dataclass
class CodeReindex:
    """What :func:`reindex_codes` did."""

    #: Instances whose header was read and whose codes were rewritten.
    instances: int = 0
    #: Of those, the instances that carry at least one indexed code.
    with_codes: int = 0
    #: Code rows written.
    codes: int = 0
    #: Instances whose stored object could not be read (left as they were).
    unreadable: int = 0
    #: Instances replaced or deleted while the reindex ran (the ingest or delete wrote them),
    #: also when their old object was gone by the time it was read.
    changed: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(vars(self))


def _header(blobs: BlobStore, key: str) -> Dataset:
    with blobs.open(key) as fh:
        return pydicom.dcmread(fh, stop_before_pixels=True)


def _count_failed(index: Index, failed: list[tuple[int, str, str, str]],
                  done: CodeReindex) -> None:
    """Count the instances whose object could not be read: changed meanwhile when the index no
    longer points at that object (deleted or replaced), unreadable (and logged) otherwise."""
    with index.reader.connect() as conn:
        current = {int(row.pk): row.storage_key for row in conn.execute(
            select(instance.c.pk, instance.c.storage_key)
            .where(instance.c.pk.in_([pk for pk, _, _, _ in failed])))}
    for pk, key, sop_uid, error in failed:
        if current.get(pk) != key:
            done.changed += 1
            continue
        done.unreadable += 1
        log.warning("reindex codes: %s not read (%s)", sop_uid, error)


def reindex_codes(index: Index, blobs: BlobStore, *, batch: int = 200,
                  progress: Callable[[int], None] | None = None) -> CodeReindex:
    """Rewrite the indexed codes of every stored instance from its stored object.

    Each object's header is read once (pixel data is not) and its codes are extracted as at
    ingest (:func:`extract_codes`); the instance's rows in ``instance_code`` are replaced in
    the same transaction, so running it again gives the same index. An instance replaced or
    deleted meanwhile (its storage key changed) is skipped: whoever changed it wrote its codes.
    So is one whose object could not be read because it was replaced or deleted meanwhile
    (a delete commits the index before it removes the object): only an object the index
    still points at counts as unreadable.
    Works beside a running ``archivist serve``: instances are read in batches by primary key
    and each batch is written in one short transaction.

    Parameters
    ----------
    index, blobs
        The archive's index and blob store.
    batch
        Instances per write transaction.
    progress
        Called with the number of instances handled after each batch.

    Returns
    -------
    CodeReindex
        Counts of what was read, written and skipped.
    """
    done = CodeReindex()
    last_pk = 0
    handled = 0
    while True:
        with index.reader.connect() as conn:
            page = conn.execute(
                select(instance.c.pk, instance.c.series_pk, series.c.study_pk,
                       instance.c.storage_key, instance.c.sop_instance_uid)
                .join(series, series.c.pk == instance.c.series_pk)
                .where(instance.c.pk > last_pk).order_by(instance.c.pk).limit(batch)
            ).all()
        if not page:
            return done
        last_pk = int(page[-1].pk)
        found: list[tuple[int, int, int, str, list[CodeRow]]] = []
        failed: list[tuple[int, str, str, str]] = []
        for row in page:
            try:
                codes = extract_codes(_header(blobs, str(row.storage_key)))
            except Exception as exc:  # noqa: BLE001 - one bad object must not stop the rest
                failed.append((int(row.pk), str(row.storage_key), str(row.sop_instance_uid),
                               type(exc).__name__))
                continue
            found.append((int(row.pk), int(row.series_pk), int(row.study_pk),
                          str(row.storage_key), codes))
        if failed:
            _count_failed(index, failed, done)
        with index.write_transaction() as conn:
            for pk, series_pk, study_pk, key, codes in found:
                current = conn.execute(
                    select(instance.c.storage_key).where(instance.c.pk == pk)).scalar()
                if current != key:
                    done.changed += 1
                    continue
                conn.execute(delete(instance_code).where(instance_code.c.instance_pk == pk))
                if codes:
                    conn.execute(insert(instance_code), [
                        {"instance_pk": pk, "series_pk": series_pk, "study_pk": study_pk,
                         "attribute": c.attribute, "origin": c.origin, "scheme": c.scheme,
                         "value": c.value, "original_scheme": c.original_scheme,
                         "original_value": c.original_value, "meaning": c.meaning}
                        for c in codes
                    ])
                    done.with_codes += 1
                    done.codes += len(codes)
                done.instances += 1
        handled += len(page)
        if progress is not None:
            progress(handled)


__all__ = ["MAX_CODES_PER_INSTANCE", "CodeReindex", "extract_codes", "reindex_codes"]
