"""Findings about coded items: what :mod:`archivist.terminology.check` reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Finding", "FindingKind", "Severity"]


class Severity(str, enum.Enum):
    """How bad a finding is."""

    ERROR = "error"  #: breaks a rule of PS3.3 Section 8.8 or PS3.16
    WARNING = "warning"  #: allowed but wrong or retired; receivers may misread it
    INFO = "info"  #: worth knowing (outside a baseline, extensible context group)


class FindingKind(str, enum.Enum):
    """What a finding is about; stable identifiers for tests, JSON and filters."""

    VALUE_MISSING = "structure.value-missing"
    VALUE_MULTIPLE = "structure.value-multiple"
    VALUE_LENGTH = "structure.value-length"
    VALUE_KIND = "structure.value-kind"
    DESIGNATOR_MISSING = "structure.designator-missing"
    MEANING_MISSING = "structure.meaning-missing"
    MEANING_LENGTH = "structure.meaning-length"
    DESIGNATOR_UNKNOWN = "designator.unknown"
    DESIGNATOR_RETIRED = "designator.retired"
    CODE_UNKNOWN = "code.unknown"
    MEANING_DIFFERS = "meaning.differs"
    CID_NOT_MEMBER = "cid.not-member"
    UNITS_NOT_UCUM = "units.not-ucum"
    UNITS_INVALID = "units.invalid-ucum"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or remark) about one coded item.

    Attributes
    ----------
    severity : Severity
    kind : FindingKind
    path : str
        Where the item is, as sequence keywords and item numbers from 0:
        ``ContentSequence[2].ConceptNameCodeSequence[0]``.
    message : str
        A sentence for people.
    code : tuple of (str, str) or None
        (designator, value) of the item as written, when it has them.
    suggestion : dict or None
        What to write instead, when known (``{"scheme": "SCT", "value": "10200004",
        "meaning": "Liver"}``).
    reference : str
        The part of the standard the rule comes from.
    """

    severity: Severity
    kind: FindingKind
    path: str
    message: str
    code: tuple[str, str] | None = None
    suggestion: dict[str, Any] | None = field(default=None)
    reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "severity": self.severity.value,
            "kind": self.kind.value,
            "path": self.path,
            "message": self.message,
            "code": list(self.code) if self.code else None,
            "suggestion": self.suggestion,
            "reference": self.reference,
        }

    def __str__(self) -> str:
        return f"{self.severity.value.upper():7} {self.path}: {self.message} [{self.kind.value}]"
