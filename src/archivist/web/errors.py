"""The one place where archive errors become HTTP statuses with a readable JSON body."""

from __future__ import annotations

from starlette.responses import JSONResponse

from archivist.errors import (
    ArchivistError,
    DuplicateRejected,
    IndexError_,
    IngestError,
    NotFound,
    QueryError,
    SOPClassMismatch,
    StorageError,
    StorageFull,
    StudyMismatch,
    ValidationRejected,
)


class HTTPProblem(Exception):
    """An HTTP error with a message a person can read."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def problem_response(status: int, message: str,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": status, "error": message}, status_code=status,
                        headers=headers)


def status_of(exc: BaseException) -> int:
    """The HTTP status an archive error maps to."""
    if isinstance(exc, HTTPProblem):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, QueryError):
        return 400
    if isinstance(exc, StorageFull):
        return 507
    if isinstance(exc, (StorageError, IndexError_)):
        return 503
    if isinstance(exc, DuplicateRejected):
        return 409
    if isinstance(exc, IngestError):
        return 400
    return 500


def to_response(exc: BaseException) -> JSONResponse:
    if isinstance(exc, HTTPProblem):
        return problem_response(exc.status, exc.message, exc.headers)
    if isinstance(exc, ArchivistError):
        return problem_response(status_of(exc), str(exc))
    return problem_response(500, f"internal error ({type(exc).__name__})")


# Failure Reason (0008,1197) values for STOW-RS (PS3.18 Table I.2-2 / PS3.4 Annex B statuses).
FAILURE_PROCESSING = 0x0110
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_SOP_CLASS_MISMATCH = 0xA900
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_STUDY_MISMATCH = 0xC409  # the instance is not of the study named in the request URL


def failure_reason(exc: BaseException) -> int:
    """The STOW-RS Failure Reason for an ingest error."""
    if isinstance(exc, (StorageFull, StorageError, IndexError_)):
        return FAILURE_OUT_OF_RESOURCES
    if isinstance(exc, SOPClassMismatch):
        return FAILURE_SOP_CLASS_MISMATCH
    if isinstance(exc, StudyMismatch):
        return FAILURE_STUDY_MISMATCH
    if isinstance(exc, (ValidationRejected, DuplicateRejected, IngestError)):
        return FAILURE_CANNOT_UNDERSTAND
    return FAILURE_PROCESSING
