"""DIMSE status codes by name, and the one place where archive errors become statuses.

PS3.4 Annex B.2.3 (Storage), C.4.1.1.4 (C-FIND), C.4.2.1.5 (C-MOVE), C.4.3.1.4 (C-GET), and
PS3.7 Annex C (general status codes).
"""

from __future__ import annotations

import enum

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from archivist import errors


class Status(enum.IntEnum):
    SUCCESS = 0x0000
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01  # optional keys not supported (C-FIND)
    CANCEL = 0xFE00
    OUT_OF_RESOURCES = 0xA700
    OUT_OF_RESOURCES_MATCHES = 0xA701  # C-MOVE/C-GET: unable to calculate number of matches
    OUT_OF_RESOURCES_SUBOPS = 0xA702   # C-MOVE/C-GET: unable to perform sub-operations
    MOVE_DESTINATION_UNKNOWN = 0xA801
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    UNABLE_TO_PROCESS = 0xC001  # C-FIND/C-MOVE/C-GET: unable to process
    DUPLICATE_REJECTED = 0xC002  # Storage "cannot understand" family: duplicate refused
    VALIDATION_REJECTED = 0xC003  # Storage "cannot understand" family: failed validation
    SUBOPS_WARNING = 0xB000
    NO_SUCH_SOP_CLASS = 0x0118  # DIMSE-N: no such SOP class (PS3.7 C.4)
    SOP_CLASS_NOT_SUPPORTED = 0x0122  # Refused: SOP Class not supported (PS3.7 C)


def _comment(text: str) -> str:
    # Error Comment (0000,0902) is LO: at most 64 characters, no backslash.
    return text.replace("\\", "/")[:64]


def status_dataset(status: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = _comment(comment)
    return ds


def refusal(exc: BaseException) -> Dataset:
    """The status data set of a refusal by a service's rules (an exception with ``status`` and
    ``attributes``, as MPPS and UPS raise): its status, Error Comment and, when it names them,
    the Attribute Identifier List."""
    status = status_dataset(int(getattr(exc, "status", 0x0110)), str(exc))
    attributes = tuple(getattr(exc, "attributes", ()) or ())
    if attributes:
        status.AttributeIdentifierList = [Tag(t) for t in attributes]
    return status


def store_failure(exc: BaseException) -> Dataset:
    """Map an error raised by ingest to a C-STORE response status (with an Error Comment)."""
    if isinstance(exc, errors.StorageFull):
        return status_dataset(Status.OUT_OF_RESOURCES, "Out of resources: no space left")
    if isinstance(exc, errors.SOPClassMismatch):
        return status_dataset(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc))
    if isinstance(exc, errors.DuplicateRejected):
        return status_dataset(Status.DUPLICATE_REJECTED, str(exc))
    if isinstance(exc, errors.ValidationRejected):
        return status_dataset(Status.VALIDATION_REJECTED, str(exc))
    if isinstance(exc, (errors.InvalidObject, errors.UIDConflict)):
        return status_dataset(Status.CANNOT_UNDERSTAND, str(exc))
    if isinstance(exc, (errors.StorageError, errors.IndexError_)):
        return status_dataset(Status.OUT_OF_RESOURCES, "Out of resources: storage failed")
    return status_dataset(Status.CANNOT_UNDERSTAND, "Cannot process the object")


def query_failure(exc: BaseException) -> tuple[int, str]:
    """Map an error raised by search to a C-FIND/C-MOVE/C-GET failure status."""
    if isinstance(exc, errors.QueryError):
        return Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, _comment(str(exc))
    if isinstance(exc, errors.IndexError_):
        return Status.OUT_OF_RESOURCES, "Out of resources: index unavailable"
    return Status.UNABLE_TO_PROCESS, "Unable to process"
