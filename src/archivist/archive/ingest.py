"""The one ingest pipeline: C-STORE, STOW-RS and ``archivist import`` all call :meth:`Ingest.store_file`.

Order of work (the durability promise): parse and check the header -> apply the duplicate policy ->
write the bytes (temp file, fsync, rename, fsync dir) -> one index transaction (instance,
aggregates, change row) -> only then report success. If the index transaction fails the blob is
removed, so a failure leaves neither an orphan blob nor an orphan row.
"""

from __future__ import annotations

import enum
import io
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydicom.datadict import private_dictionary_VR
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from pydicom.valuerep import AMBIGUOUS_VR
from pydicom.valuerep import VR as VR_

from archivist.archive import part10
from archivist.archive.coded import extract_codes
from archivist.archive.decode import decode, value_vr, vr_of
from archivist.archive.validation import PixelDataInfo
from archivist.config import Settings
from archivist.core.truncation import cut_short
from archivist.core.uids import clean_uid, is_valid_uid
from archivist.errors import (
    ArchivistError,
    DuplicateRejected,
    IndexError_,
    InvalidObject,
    SOPClassMismatch,
    StorageError,
    StudyMismatch,
    ValidationRejected,
)
from archivist.index.extract import FindingRow, ValidationRecord, extract
from archivist.index.repository import AddOutcome, AddRequest, BlobInfo, Index
from archivist.store.blob import BlobStore, temp_prefix
from archivist.store.removals import REMOVING, PendingRemovals

log = logging.getLogger("archivist.ingest")

#: Objects up to this size are read whole and parsed from memory (see ``_read_header``).
_PARSE_IN_MEMORY = 4 << 20

_CHARSET_TAG = Tag(0x00080005)  # Specific Character Set
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_UNDEFINED_LENGTH = 0xFFFFFFFF
#: VRs whose value is its bytes as read (pydicom decodes nothing): a deferred one is left
#: unread, however large (a 200 MB Encapsulated Document or private blob).
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN",
                        "OB or OW", "US or OW", "US or SS or OW", "US or SS"})
#: Bytes per value of the number VRs: a deferred one is checked by its length alone.
_NUMBER_SIZE = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "AT": 4, "FD": 8, "SV": 8, "UV": 8}
#: A deferred text value up to this size is decoded (an undecodable one is refused); a longer
#: one (a huge UT) is left unread, like a binary one: no index column takes such a value.
_DECODE_DEFERRED = 1 << 20
#: Text VRs whose values may not hold NUL (PS3.5 6.2: only UI is padded with it).
_NUL_PADDING_INVALID = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN",
                                  "SH", "ST", "TM", "UC", "UR", "UT"})


def _uid_in(ds: Dataset, tag: int) -> str:
    """A UID of `ds`, its padding stripped. An element left raw (one padded with a space) is
    read without being decoded in place, as ``ds.get`` would: validation judges its bytes."""
    elem = ds._dict.get(tag)  # type: ignore[call-overload]
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return clean_uid(value)


class StoreStatus(enum.Enum):
    """Outcome of one store (after Orthanc's StoreStatus)."""

    STORED = "stored"
    ALREADY_STORED = "already-stored"
    REPLACED = "replaced"


@dataclass(frozen=True)
class Origin:
    """Where an object came from: ``dimse``, ``stow`` or ``import``, and the peer."""

    kind: str
    aet: str | None = None
    address: str | None = None


@dataclass
class IngestResult:
    """What happened to one object.

    ``warnings`` are readable remarks about the store itself; ``validation`` is the outcome of
    the validation on ingest (counts and findings; None when not validated).
    A refused object raises instead (:class:`~archivist.errors.ValidationRejected` and the other
    :class:`~archivist.errors.IngestError` subclasses, whose text is the reason).
    """

    status: StoreStatus
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    size: int = 0
    change_seq: int = 0
    warnings: list[str] = field(default_factory=list)
    validation: ValidationRecord | None = None


#: Validates the dataset ingest read (no pixel data) given where the file's pixel data is;
#: returns findings (objects with ``severity``, ``rule_id``, ``path``, ``module``, ``iod``,
#: ``message``, ``reference``), e.g. :func:`archivist.archive.validation.validate_on_ingest`.
Validator = Callable[[Dataset, PixelDataInfo | None], Sequence[Any]]

#: At most this many findings are kept per instance (the counts are always complete).
MAX_FINDINGS_PER_INSTANCE = 200
_MAX_FINDING_TEXT = 1024


_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # Float, Double Float, Pixel Data


def _pixel_element(ds: Dataset, deflated: bool) -> PixelDataInfo | None:
    """The first pixel data element of `ds`, read raw (its value is never loaded)."""
    for tag in _PIXEL_TAGS:
        # The raw element: Dataset.get_item() would load a deferred value (all of it).
        raw = ds._dict.get(Tag(tag))
        if raw is None:
            continue
        length = getattr(raw, "length", None)
        tell = None if deflated else getattr(raw, "value_tell", None)
        return PixelDataInfo(tag, int(length) if length is not None else 0,
                             int(tell) if tell is not None else 0)
    return None


def _private_vr(ds: Dataset, tag: BaseTag) -> str:
    """The VR pydicom gives the private element `tag` read without one (implicit VR, or UN):
    LO for a private creator, else its private dictionary's by its creator, else UN."""
    if tag.is_private_creator:
        return "LO"
    creator = ds._dict.get(BaseTag((tag.group << 16) | (tag.element >> 8)))
    name = getattr(creator, "value", None)
    if tag.element & 0xFF00 and isinstance(name, str) and name:
        try:
            return str(private_dictionary_VR(tag, name))
        except KeyError:
            pass
    return "UN"


def _left_unread(ds: Dataset, tag: BaseTag, raw: RawDataElement) -> bool:
    """Whether the value pydicom deferred of `raw` (an element of `ds`) is left unread by
    ingest, for it may be huge and nothing needs it (an index column that does reads it).
    The VR pydicom would read it with decides (the data dictionary's for an implicit VR or UN
    element, as the validator does), and the length: sequences are read (they are walked and
    their errors refused); bytes and private values are not read (decoding them cannot fail);
    numbers are checked by their length alone; text is read up to :data:`_DECODE_DEFERRED`.

    Raises
    ------
    BytesLengthException
        A number value whose length is not a multiple of its size (what decoding it would
        raise, without reading it).
    """
    if tag.is_private:
        vr = raw.VR
        if vr is None or vr == VR_.UN:
            vr = _private_vr(ds, tag)
        return vr != VR_.SQ
    vr = value_vr(raw)
    if vr is None or vr in _BYTES_VRS:
        return True
    if raw.length == _UNDEFINED_LENGTH or vr == VR_.SQ:
        return False  # pydicom's way (a sequence, or says what is wrong)
    size = _NUMBER_SIZE.get(vr)
    if size is None:
        return raw.length > _DECODE_DEFERRED
    if raw.length % size:
        raise BytesLengthException(f"{vr} value of {raw.length} bytes, not a multiple of "
                                   f"{size}")
    return True


def _reason(exc: Exception) -> str:
    """A short reason from a parser's exception (its first line, capped), else its type."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:120]}" if lines else type(exc).__name__


#: An object being stored: its file, or its bytes when it is held in memory.
Source = Path | bytes


def _holds_pixel_tag(source: Source, ts: UID) -> bool:
    """Whether the bytes of the Pixel Data tag (7FE0,0010) occur in the file after its File Meta
    (read in 1 MiB chunks; only asked when the parse found no Pixel Data in an image)."""
    tag = b"\x7f\xe0\x00\x10" if not ts.is_little_endian else b"\xe0\x7f\x10\x00"
    if isinstance(source, bytes):
        return source.find(tag, 132) >= 0
    tail = b""
    with open(source, "rb") as fh:
        fh.seek(132)
        while chunk := fh.read(1 << 20):
            if tag in tail + chunk:
                return True
            tail = chunk[-3:]
    return False


#: The start of an encapsulated Pixel Data's first item (FFFE,E000), little endian.
_ITEM_START = b"\xfe\xff\x00\xe0"
_FRAGMENTS_UNDER_NATIVE = (
    "Pixel Data holds compressed fragments but transfer syntax {ts} is a native (uncompressed) "
    "one: send the object under its compressed transfer syntax")


def _check_complete(source: Source, size: int, ds: Dataset, ts: UID,
                    pixel: PixelDataInfo | None) -> None:
    """Refuse an image whose pixel data is cut short (nothing more is parsed or loaded)."""
    if ts.is_deflated:
        return
    rows, cols = ds.get("Rows"), ds.get("Columns")
    bits = ds.get("BitsAllocated")
    if not (rows and cols and bits):
        return
    if pixel is None:
        if _holds_pixel_tag(source, ts):
            # The element starts in the file but could not be parsed: cut short.
            raise InvalidObject("truncated: the Pixel Data element is cut short")
        # An image header without Pixel Data is complete, only invalid (a Type 1 attribute
        # missing): the validation policy decides, as for any other invalid object.
        return
    if ts.is_encapsulated:
        start = max(pixel.offset, size - 65536)
        if isinstance(source, bytes):
            tail = source[start:]
        else:
            with open(source, "rb") as fh:
                fh.seek(start)
                tail = fh.read()
        if _SEQ_DELIMITER not in tail:
            raise InvalidObject("truncated: encapsulated Pixel Data has no sequence delimiter")
        return
    if pixel.length == 0xFFFFFFFF:
        # Fragments (compressed frames) under a native transfer syntax: no reader can take
        # the frames out (a sender that names the wrong syntax, as odil's storescu does).
        raise InvalidObject(_FRAGMENTS_UNDER_NATIVE.format(ts=ts))
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        spp = int(ds.get("SamplesPerPixel") or 1)
        if str(ds.get("PhotometricInterpretation", "")).startswith("YBR_FULL_422"):
            spp = 2  # chroma subsampled horizontally: two samples per pixel on average
        expected = int(rows) * int(cols) * frames * spp * int(bits) // 8
    except (TypeError, ValueError):
        return
    if expected and size < expected:
        if isinstance(source, bytes):
            head = source[pixel.offset:pixel.offset + 4]
        else:
            with open(source, "rb") as fh:
                fh.seek(pixel.offset)
                head = fh.read(4)
        if head == _ITEM_START:
            raise InvalidObject(_FRAGMENTS_UNDER_NATIVE.format(ts=ts))
        raise InvalidObject(
            f"truncated: {size} bytes in the file, Pixel Data alone needs {expected}"
        )


class _Pending:
    __slots__ = ("done", "error", "outcome", "request")

    def __init__(self, request: AddRequest) -> None:
        self.request = request
        self.outcome: AddOutcome | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """Group commit of stores that run at the same time (leader/followers, no extra thread).

    Each store has written and fsynced its blob, then calls :meth:`commit`. Whoever takes the
    lock first is the leader: it takes every store waiting at that moment (up to
    `max_group`), fsyncs their blob directories once, writes their index rows in ONE
    transaction (one commit, one fsync of the log) and hands each store its own outcome. The
    others wait on the lock meanwhile and are done when they get it, or lead the next group.
    No store is answered before its own blob and row are durable; a lone store is committed at
    once, never held back to wait for company.
    """

    def __init__(self, blobs: BlobStore, index: Index, max_group: int = 64) -> None:
        self.blobs = blobs
        self.index = index
        self.max_group = max_group
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self.groups = 0  # how many transactions, for figures
        self.committed = 0

    def commit(self, request: AddRequest) -> AddOutcome:
        """Make the blob and the index row of `request` durable; returns the outcome.

        Raises
        ------
        UIDConflict
            The request's UIDs contradict the index (a Series Instance UID of another study);
            only this request is refused, the rest of its group is committed.
        IndexError_
            The index refused this request (the blob is the caller's to delete).
        """
        mine = _Pending(request)
        with self._queue_lock:
            self._queue.append(mine)
        while True:
            with self._lock:
                if mine.done:
                    break
                with self._queue_lock:
                    group = self._queue[:self.max_group]
                    del self._queue[:self.max_group]
                if group:
                    self._run(group)
        if mine.error is not None:
            raise mine.error
        assert mine.outcome is not None
        return mine.outcome

    def _run(self, group: list[_Pending]) -> None:
        try:
            self.blobs.sync(p.request.blob.storage_key for p in group)
            outcomes = self.index.add_instances([p.request for p in group])
        except BaseException as exc:  # noqa: BLE001 - handed to every store of the group
            for p in group:
                p.error, p.done = exc, True
            return
        self.groups += 1
        self.committed += len(group)
        for p, outcome in zip(group, outcomes):
            if isinstance(outcome, BaseException):
                p.error = outcome
            else:
                p.outcome = outcome
            p.done = True


class Ingest:
    """Stores objects durably and indexes them."""

    def __init__(
        self,
        settings: Settings,
        blobs: BlobStore,
        index: Index,
        validator: Validator | None = None,
    ) -> None:
        self.settings = settings
        self.blobs = blobs
        self.index = index
        self.validator = validator
        self._group = GroupCommit(blobs, index)
        #: The blobs of replaced objects, listed until removed (and by deletions, through
        #: the archive).
        self.removals = PendingRemovals(Path(settings.data_dir) / REMOVING)

    def read_header(self, path: Path) -> tuple[Dataset, UID]:
        """Parse the File Meta and the dataset up to Pixel Data.

        Raises
        ------
        InvalidObject
            Not a DICOM Part 10 file, unreadable, or cut short.
        """
        ds, ts, _ = self._read_header(path)
        return ds, ts

    def _read_header(self, source: Source) -> tuple[Dataset, UID, PixelDataInfo | None]:
        """The File Meta and the data set up to the pixel data, every value decoded (so an
        undecodable object is refused here), the transfer syntax and the pixel data element's
        tag, length and offset. An object in memory, or a file up to 4 MiB read whole, of the
        common shape is walked by :mod:`archivist.archive.part10`; any other is parsed by
        pydicom (:meth:`_pydicom_header`), which also says what is wrong with a broken one."""
        if not isinstance(source, bytes):
            try:
                with open(source, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    # A small file is parsed from memory: pydicom asks the file for its
                    # position at every element, one lseek() each (and a hand-over of the GIL
                    # when another thread waits for it); one read() replaces them all.
                    if size <= _PARSE_IN_MEMORY:
                        source = fh.read()
            except OSError as exc:
                raise InvalidObject(f"cannot parse the object ({type(exc).__name__})") from None
        fast = part10.read(source) if isinstance(source, bytes) else None
        ds: Dataset
        if fast is not None:
            ds, ts, pixel = fast
            size = len(cast(bytes, source))
        else:
            ds, ts, pixel, size = self._pydicom_header(source)
        self._decode_values(ds)
        _check_complete(source, size, ds, ts, pixel)
        return ds, ts, pixel

    def _pydicom_header(self, source: Source) -> tuple[Dataset, UID, PixelDataInfo | None, int]:
        """pydicom's pass over the object: the File Meta and data set are parsed, values over
        1 KiB are skipped by seeking (so Pixel Data is never loaded), and a walk that ends past
        the end of the file means a value was cut short (pydicom reads a short value without
        complaint, PS3.5 7.1). The data set returned stops before the pixel data, like
        ``stop_before_pixels``; the pixel data element comes with it, and the object's size."""
        ceiling = self.settings.max_object_size
        try:
            # A deflated data set is inflated a step at a time and refused past its limit
            # (part10.read_stored); pydicom alone would inflate all of it in memory at once.
            if isinstance(source, bytes):
                size = len(source)
                src: Any = io.BytesIO(source)
                ds = part10.read_stored(src, defer_size=1024, ceiling=ceiling)
                end = src.tell()
            else:
                with open(source, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    ds = part10.read_stored(fh, defer_size=1024, ceiling=ceiling)
                    end = fh.tell()
        except part10.InflateRefused as exc:
            refused = InvalidObject(str(exc))
            # What the File Meta says the object is, for responses that name it (STOW-RS
            # would otherwise parse the object again to find out, inflating all of it).
            read = (("SOPClassUID", clean_uid(exc.meta.get("MediaStorageSOPClassUID"))),
                    ("SOPInstanceUID", clean_uid(exc.meta.get("MediaStorageSOPInstanceUID"))))
            refused.uids = {k: v for k, v in read if v}  # type: ignore[attr-defined]
            log.warning("refused a deflated object: %s", exc)
            raise refused from None
        except InvalidDicomError:
            raise InvalidObject("not a DICOM Part 10 file (no DICM prefix or File Meta)") from None
        except RecursionError:
            raise InvalidObject("sequences nested too deeply") from None
        except MemoryError:
            raise InvalidObject("an element declares a length too large to read") from None
        except Exception as exc:  # noqa: BLE001 - any parser failure is the object's fault
            raise InvalidObject(f"cannot parse the object ({type(exc).__name__})") from None
        meta = getattr(ds, "file_meta", None)
        ts_raw = clean_uid(meta.get("TransferSyntaxUID")) if meta is not None else ""
        if not ts_raw:
            raise InvalidObject("File Meta Information has no Transfer Syntax UID")
        ts = UID(ts_raw)
        if not ts.is_transfer_syntax:
            # Nothing could say how its values (and its pixels) are encoded, nor serve it.
            raise InvalidObject(f"Transfer Syntax UID {ts_raw[:64]} is not a transfer syntax "
                                "this archive knows")
        if not ts.is_deflated:
            # Sequences are parsed, not skipped, and a cut one just ends early: what every
            # top-level element declares must fit in the file as well.
            reason = cut_short(ds, end, size, source)
            if reason is not None:
                raise InvalidObject(f"truncated: {reason}")
        pixel = _pixel_element(ds, ts.is_deflated)
        if pixel is not None:
            for after in [t for t in ds._dict if t >= pixel.tag]:
                del ds._dict[after]
        return ds, ts, pixel, size

    @staticmethod
    def _decode_values(ds: Dataset) -> None:
        """Decode every raw element of `ds` in place (pydicom defers), so errors surface here.

        Raises
        ------
        InvalidObject
            An element cannot be decoded (named in the message).
        """
        current: int | None = None
        try:
            # What ``ds[tag]`` does for each element, without its three look-ups of the element
            # and of the character set per element: text and number values through decode.py
            # (pydicom's values, repeated bytes remembered); sequences, private and
            # ambiguous-VR elements and deferred values take pydicom's own way, but for the
            # deferred values left unread (_left_unread).
            elements = ds._dict
            if _CHARSET_TAG in elements:
                current = _CHARSET_TAG
                _ = ds[_CHARSET_TAG].value
            encoding = ds.original_character_set or ds._character_set
            for current in list(elements):
                raw = elements[current]
                if not isinstance(raw, RawDataElement):
                    continue
                vr = vr_of(raw)
                if vr is not None:
                    value = raw.value
                    if value is not None and (len(value) & 1 or (
                            vr in _NUL_PADDING_INVALID and b"\0" in value) or (
                            vr == "UI" and b" " in value)):
                        # An odd length, a NUL in text other than a UID's padding, a UID
                        # padded with a space (PS3.5 6.2, 7.1.1): decoding drops them, so the
                        # element is left raw for validation to see them; decoded here only
                        # to surface errors.
                        decode(raw, encoding, vr)
                        continue
                    try:
                        elements[current] = decode(raw, encoding, vr)
                        continue
                    except Exception:  # noqa: BLE001, S110 - pydicom's way below says why
                        pass
                if raw.value is None and raw.length != 0:  # deferred (over 1 KiB)
                    if not _left_unread(ds, current, raw):
                        _ = ds[current].value
                    continue
                if raw.VR == VR_.SQ or current.is_private:
                    _ = ds[current].value
                    continue
                elem = convert_raw_data_element(raw, encoding=encoding, ds=ds)
                if elem.VR == VR_.SQ or elem.VR in AMBIGUOUS_VR:
                    _ = ds[current].value  # an implicit VR looked up as SQ or ambiguous
                    continue
                elements[current] = elem
        except RecursionError:
            raise InvalidObject("sequences nested too deeply") from None
        except Exception as exc:  # noqa: BLE001
            where = f"element {Tag(current)}" if current is not None else "the dataset"
            raise InvalidObject(f"cannot decode {where}: {_reason(exc)}") from None

    def store_file(
        self,
        path: Path,
        origin: Origin,
        *,
        expected_sop_class: str | None = None,
        expected_sop_instance: str | None = None,
        expected_study: str | None = None,
        consume: bool = False,
    ) -> IngestResult:
        """Store one Part 10 file through the pipeline.

        Parameters
        ----------
        path
            The file (File Meta + dataset, as received, byte for byte).
        origin
            Who sent it.
        expected_sop_class, expected_sop_instance
            The Affected SOP Class/Instance UID of a C-STORE command; the dataset must agree.
        expected_study
            The Study Instance UID the request named (STOW-RS); another study is refused
            (:class:`~archivist.errors.StudyMismatch`).
        consume
            The file is a temporary copy that may be moved into the store.

        Raises
        ------
        InvalidObject, SOPClassMismatch, DuplicateRejected, ValidationRejected
            The object is refused; nothing was stored.
        UIDConflict
            Its Series Instance UID is stored under another study (or, with the duplicate
            policy ``replace``, its SOP Instance UID under another series or study); refused,
            nothing was stored.
        StorageFull, StorageError, IndexError_
            The archive could not store it; nothing was stored.
        """
        return self._store(path, origin, expected_sop_class, expected_sop_instance,
                           expected_study, consume)

    def store_bytes(
        self,
        data: bytes,
        origin: Origin,
        *,
        expected_sop_class: str | None = None,
        expected_sop_instance: str | None = None,
        expected_study: str | None = None,
    ) -> IngestResult:
        """Store one Part 10 object held in memory, as :meth:`store_file` does a file: it is
        parsed from memory and written once, to its place in the store."""
        return self._store(bytes(data), origin, expected_sop_class, expected_sop_instance,
                           expected_study, False)

    def _store(self, source: Source, origin: Origin, expected_sop_class: str | None,
               expected_sop_instance: str | None, expected_study: str | None,
               consume: bool) -> IngestResult:
        ds, ts, pixel = self._read_header(source)
        sop_class = _uid_in(ds, 0x00080016)
        sop_uid = _uid_in(ds, 0x00080018)
        study_uid = _uid_in(ds, 0x0020000D)
        series_uid = _uid_in(ds, 0x0020000E)
        try:
            return self._store_parsed(source, origin, ds, ts, pixel, sop_class, sop_uid,
                                      study_uid, series_uid, expected_sop_class,
                                      expected_sop_instance, expected_study, consume)
        except ArchivistError as exc:
            # What was read of the object, for responses that name it (STOW-RS).
            read = (("SOPClassUID", sop_class), ("SOPInstanceUID", sop_uid),
                    ("StudyInstanceUID", study_uid))
            exc.uids = {k: v for k, v in read if v}  # type: ignore[attr-defined]
            raise

    def _store_parsed(self, source: Source, origin: Origin, ds: Dataset, ts: UID,
                      pixel: PixelDataInfo | None, sop_class: str, sop_uid: str,
                      study_uid: str, series_uid: str, expected_sop_class: str | None,
                      expected_sop_instance: str | None, expected_study: str | None,
                      consume: bool) -> IngestResult:
        for name, value in (("SOP Class UID", sop_class), ("SOP Instance UID", sop_uid),
                            ("Study Instance UID", study_uid),
                            ("Series Instance UID", series_uid)):
            if not value:
                raise InvalidObject(f"{name} is missing")
            if not is_valid_uid(value):
                raise InvalidObject(f"{name} is not a valid UID")
        if sop_class == _DICOMDIR_CLASS:
            raise InvalidObject("a DICOMDIR is a media directory, not an object to archive")
        if expected_sop_class is not None and clean_uid(expected_sop_class) != sop_class:
            raise SOPClassMismatch("SOP Class UID differs from the C-STORE request")
        meta = getattr(ds, "file_meta", None)
        media_class = clean_uid(meta.get("MediaStorageSOPClassUID")) if meta is not None else ""
        if expected_sop_class is None and media_class and media_class != sop_class:
            # A Part 10 object sent as it is (STOW-RS, import): its File Meta names the class
            # of its data set (PS3.10 7.1), as a C-STORE request does; one naming another is
            # refused as such a request is (0xA900), not kept with two classes in it.
            raise SOPClassMismatch("SOP Class UID differs from the File Meta's Media Storage "
                                   "SOP Class UID")
        if expected_study is not None and clean_uid(expected_study) != study_uid:
            raise StudyMismatch("Study Instance UID differs from the URL's")
        warnings: list[str] = []
        if expected_sop_instance is not None and clean_uid(expected_sop_instance) != sop_uid:
            # Common in the field (a File Meta copied from elsewhere); the data set's own UID is
            # what the object is indexed under, as Orthanc and DCMTK do.
            warnings.append("SOP Instance UID differs from the C-STORE request")
            log.warning("sop=%s: Affected SOP Instance UID of the request differs", sop_uid)

        validation: ValidationRecord | None = None
        if self.validator is not None and self.settings.validation_policy != "off":
            # The archive's own inventories copy what is stored, invalid values included:
            # their findings are kept, never a reason to refuse them.
            validation = self._validate(ds, pixel, sop_uid,
                                        reject=origin.kind != "inventory")

        policy = self.settings.duplicate_policy
        result_ids: dict[str, Any] = {
            "sop_instance_uid": sop_uid, "sop_class_uid": sop_class,
            "study_instance_uid": study_uid, "series_instance_uid": series_uid}
        rows = extract(ds)
        rows.codes = extract_codes(ds)
        # A duplicate is found by the index write itself (its blob is then deleted): a lookup
        # before would cost every store a query to spare the rare duplicate a write.
        if isinstance(source, bytes):
            put = self.blobs.put_bytes(source, defer_sync=True)
        else:
            put = self.blobs.put_file(source, consume=consume, defer_sync=True)
        request = AddRequest(
            rows, BlobInfo(put.key, put.size, put.sha256, str(ts)),
            sop_instance_uid=sop_uid, sop_class_uid=sop_class,
            study_instance_uid=study_uid, series_instance_uid=series_uid,
            source_aet=origin.aet, source_address=origin.address, policy=policy,
            validation=validation,
        )
        try:
            outcome = self._group.commit(request)
        except BaseException:
            self.blobs.delete(put.key)
            raise
        if outcome.status == "exists":
            self.blobs.delete(put.key)
            if policy == "reject":
                raise DuplicateRejected("SOP Instance UID is already stored")
            return IngestResult(StoreStatus.ALREADY_STORED, size=put.size, warnings=warnings,
                                validation=validation, **result_ids)
        if outcome.note:
            warnings.append(outcome.note)
            log.warning("sop=%s study=%s: %s", sop_uid, study_uid, outcome.note)
        if outcome.status == "replaced":
            if outcome.old_storage_key:
                self.removals.remove(self.blobs, [outcome.old_storage_key])
            status = StoreStatus.REPLACED
        else:
            status = StoreStatus.STORED
        # DEBUG: one line per object costs a busy ingest ~4 % of its time; the acceptor's
        # line at the end of an association counts what it stored.
        log.debug("stored sop=%s size=%d from=%s/%s seq=%d", sop_uid, put.size, origin.kind,
                  origin.aet or "-", outcome.change_seq)
        return IngestResult(status, size=put.size, change_seq=outcome.change_seq,
                            warnings=warnings, validation=validation, **result_ids)

    def _validate(self, ds: Dataset, pixel: PixelDataInfo | None,
                  sop_uid: str, *, reject: bool = True) -> ValidationRecord | None:
        """Run the validator and apply the policy (None: the validator itself failed).

        Raises
        ------
        ValidationRejected
            The policy is ``reject`` and the object has error findings; the message names the
            first error's rule id (it becomes the C-STORE Error Comment and STOW's reason).
        """
        assert self.validator is not None
        try:
            findings = list(self.validator(ds, pixel))
        except Exception as exc:  # noqa: BLE001 - a validator bug must not block ingest
            log.warning("sop=%s: validator failed: %s", sop_uid, type(exc).__name__)
            return None
        rows = [_finding_row(f) for f in findings]
        errors = [f for f in rows if f.severity == "error"]
        warned = sum(1 for f in rows if f.severity == "warning")
        if errors and reject and self.settings.validation_policy == "reject":
            first = errors[0]
            more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
            log.warning("sop=%s: rejected by validation: %s (%d errors)", sop_uid, first.rule_id,
                        len(errors))
            raise ValidationRejected(f"{first.rule_id}: {first.message}{more}",
                                     [f.rule_id for f in errors])
        return ValidationRecord(len(errors), warned, tuple(rows[:MAX_FINDINGS_PER_INSTANCE]))


def _finding_row(finding: Any) -> FindingRow:
    """A validator's finding as the index keeps it (text capped)."""

    def text(name: str, cap: int = _MAX_FINDING_TEXT) -> str:
        value = getattr(finding, name, "")
        value = getattr(value, "value", value)  # an enum (Severity) gives its value
        return str(value or "")[:cap]

    return FindingRow(text("severity", 8), text("rule_id", 64), text("path"), text("module", 128),
                      text("iod", 128), text("message"), text("reference", 64))


__all__ = ["IndexError_", "Ingest", "IngestResult", "Origin", "StorageError", "StoreStatus",
           "Validator", "temp_prefix"]
