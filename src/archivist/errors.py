"""Exceptions raised by Archivist's layers.

Archive code raises these; each protocol adapter maps them to its wire status in exactly one place
(``dimse/status.py`` for DIMSE, ``web/errors.py`` for HTTP)::

    ArchivistError
    ├── ConfigError              settings that cannot be used (bad TOML, port out of range, ...)
    ├── IngestError              an object could not be stored
    │   ├── InvalidObject        not DICOM, truncated, missing Type 1 UIDs, malformed UIDs
    │   ├── SOPClassMismatch     dataset SOP Class differs from the one negotiated / commanded
    │   ├── DuplicateRejected    SOP Instance UID already stored and the policy is ``reject``
    │   ├── UIDConflict          a Series / SOP Instance UID already stored under another parent
    │   └── ValidationRejected   the validation policy is ``reject`` and the object has errors
    ├── StorageError             the blob store failed (I/O error, read-only file system)
    │   └── StorageFull          no space left (ENOSPC, quota)
    ├── IndexError_              the metadata index failed (locked too long, constraint broken)
    ├── QueryError               a query that cannot be answered (bad level, bad key, bad range)
    ├── NotFound                 an object, series, study or patient that is not in the archive
    └── UnknownDestination       a C-MOVE destination that is not configured
"""

from __future__ import annotations


class ArchivistError(Exception):
    """Root of every error Archivist raises on purpose."""


class ConfigError(ArchivistError):
    """Settings that cannot be used."""


class IngestError(ArchivistError):
    """An object could not be stored.

    ``uids`` holds what the archive read of the object before refusing it (SOPClassUID,
    SOPInstanceUID, StudyInstanceUID, as far as known), for responses that name it (STOW-RS).
    """

    uids: dict[str, str] = {}  # noqa: RUF012 - replaced per instance, never mutated


class StudyMismatch(IngestError):
    """The object is not of the study the request named (STOW-RS to ``/studies/{uid}``)."""


class InvalidObject(IngestError):
    """The object is not valid DICOM or lacks what the archive needs to index it."""


class SOPClassMismatch(IngestError):
    """The dataset's SOP Class or Instance UID differs from the DIMSE command's."""


class DuplicateRejected(IngestError):
    """The SOP Instance UID is already stored and the duplicate policy is ``reject``."""


class UIDConflict(IngestError):
    """The object's UIDs contradict the archive's hierarchy: its Series Instance UID is stored
    under another study, or (duplicate policy ``replace``) its SOP Instance UID is stored under
    another series or study. A UID names one entity (PS3.5 9); the object is refused rather
    than filed under a parent its header does not name."""


class ValidationRejected(IngestError):
    """The validation policy rejects objects with errors, and this one has some."""

    def __init__(self, message: str, rule_ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.rule_ids = rule_ids or []


class StorageError(ArchivistError):
    """The blob store failed."""


class StorageFull(StorageError):
    """No space is left where blobs are written."""


class IndexError_(ArchivistError):
    """The metadata index failed."""


class IndexLost(IndexError_):
    """The index file is missing or empty while the blob store holds objects: opening the
    archive would start an empty index beside them (see :func:`archivist.archive.archive.lost_index`)."""


class QueryError(ArchivistError):
    """A query that cannot be answered as asked."""


class NotFound(ArchivistError):
    """The requested entity is not in the archive."""


class UnknownDestination(ArchivistError):
    """A C-MOVE destination AE title that is not configured."""
