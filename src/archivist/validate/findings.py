"""What a validation produces: :class:`Finding` and :class:`Report`.

A finding is one non-conformance (or remark) with a stable ``rule_id`` (the catalogue is in
``docs/validation.md``), a location in the dataset written the way ``dciodvfy -new`` writes it
(``/AnatomicRegionSequence(0008,2218)[1]/CodeValue(0008,0100)``), the module and IOD it was
checked against, a message a person understands and the part of the standard it comes from.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class Severity(str, enum.Enum):
    """How bad a finding is, ordered ``ERROR`` > ``WARNING`` > ``INFO``.

    ``ERROR`` is a violation of a "shall" in the standard (dciodvfy's "Error"); ``WARNING`` is
    something legal but dubious or not checkable (dciodvfy's "Warning"); ``INFO`` is a remark.
    """

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """2 for errors, 1 for warnings, 0 for infos (for sorting and thresholds)."""
        return {"error": 2, "warning": 1, "info": 0}[self.value]


@dataclass(frozen=True, slots=True)
class Finding:
    """One result of a validation rule.

    Attributes
    ----------
    severity : Severity
        Error, warning or info.
    rule_id : str
        Stable identifier of the rule, e.g. ``iod.type1-missing`` (see docs/validation.md).
    path : str
        Location of the attribute, ``/Keyword(gggg,eeee)[item]/...``; ``""`` for the whole
        object or file.
    module : str
        PS3.3 module name (``General Series``) or ``""`` when the rule is not module-bound.
    iod : str
        PS3.3 IOD name (``CT Image``) or ``""`` when unknown.
    message : str
        Explanation for a person.
    reference : str
        Where the requirement is written, e.g. ``PS3.3 C.7.3.1``.
    """

    severity: Severity
    rule_id: str
    path: str
    module: str
    iod: str
    message: str
    reference: str

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-serialisable mapping with the same field names."""
        return {
            "severity": self.severity.value,
            "rule_id": self.rule_id,
            "path": self.path,
            "module": self.module,
            "iod": self.iod,
            "message": self.message,
            "reference": self.reference,
        }


def count_by_severity(findings: Iterable[Finding]) -> dict[str, int]:
    """Count findings per severity value (``{"error": n, "warning": n, "info": n}``)."""
    counts = {s.value: 0 for s in Severity}
    for finding in findings:
        counts[finding.severity.value] += 1
    return counts


@dataclass(slots=True)
class Report:
    """The validation of one file (PS3.10 file or bare dataset).

    Attributes
    ----------
    path : str
        The file validated.
    findings : list of Finding
        Every finding, in the order the layers produced them.
    sop_class_uid, sop_instance_uid, transfer_syntax_uid : str
        Identification read from the file ("" when absent).
    iod : str
        IOD name the object was validated against ("" when the SOP Class is unknown).
    entity : dict
        Patient, study and series attributes, used by :func:`check_consistency`.
    elapsed_ms : float
        Time spent reading and validating.
    """

    path: str
    findings: list[Finding] = field(default_factory=list)
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    transfer_syntax_uid: str = ""
    iod: str = ""
    entity: dict[str, str] = field(default_factory=dict)
    elapsed_ms: float = 0.0

    @property
    def errors(self) -> list[Finding]:
        """The findings of severity error."""
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        """The findings of severity warning."""
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed), like dciodvfy's exit status 0."""
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def counts(self) -> dict[str, int]:
        """Number of findings per severity."""
        return count_by_severity(self.findings)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable mapping."""
        return {
            "path": self.path,
            "ok": self.ok,
            "sop_class_uid": self.sop_class_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "iod": self.iod,
            "counts": self.counts(),
            "elapsed_ms": round(self.elapsed_ms, 3),
            "findings": [f.to_dict() for f in self.findings],
        }


class Collector:
    """Accumulates findings for one object, with the IOD name filled in and duplicates dropped.

    The same attribute can belong to several modules of an IOD (Image Type is in the General
    Image and the CT Image modules); a rule reports a given path once.
    """

    __slots__ = ("_seen", "findings", "iod")

    def __init__(self, iod: str = "") -> None:
        self.findings: list[Finding] = []
        self.iod = iod
        self._seen: set[tuple[str, str, str]] = set()

    def add(
        self,
        severity: Severity,
        rule_id: str,
        path: str,
        module: str,
        message: str,
        reference: str,
    ) -> None:
        """Record a finding unless the same rule already reported the same path and message."""
        key = (rule_id, path, message if not path else "")
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(Finding(severity, rule_id, path, module, self.iod, message, reference))
