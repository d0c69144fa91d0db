"""Compare two inventories: what is missing, extra or different, per study, series and instance.

``A`` is the reference (for a migration: the source) and ``B`` the copy. A record is *missing*
when A has it and B does not, *extra* when only B has it, *different* when both have it and a
value both know disagrees: counts of related series and instances, modalities, SOP Class. Values
one side does not know (a plain C-FIND peer that does not return counts, an inventory at STUDY
level compared with one at INSTANCE level) are not compared; records are compared only as deep
as both inventories go. Instance sizes are compared where both sides know them (this
archive's index and its JSON exports; DICOM inventories and C-FIND do not carry sizes). A record
one inventory lists as Removed from Operational Use counts as not held there: missing, with
"removed from operational use" and its Reason for Removal (when the inventory gives one) as the
detail, at whichever level (study, series or instance) it was removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archivist.inventory.model import Inventory, SeriesRecord, StudyRecord

_DEPTH = {"STUDY": 1, "SERIES": 2, "INSTANCE": 3, "IMAGE": 3}


@dataclass(frozen=True)
class Difference:
    """One finding: ``kind`` is missing, extra or different; ``level`` STUDY/SERIES/INSTANCE."""

    kind: str
    level: str
    uid: str
    study_uid: str
    detail: str = ""
    #: For a record the other inventory lists as removed: its Reason for Removal Code
    #: Sequence item as ``VALUE SCHEME Meaning`` (empty when it gives none).
    reason: str = ""

    def line(self) -> str:
        where = f" (study {self.study_uid})" if self.level != "STUDY" else ""
        detail = f": {self.detail}" if self.detail else ""
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.kind:9} {self.level:8} {self.uid}{where}{detail}{reason}"


@dataclass
class DiffResult:
    """The differences, and how much was compared."""

    differences: list[Difference] = field(default_factory=list)
    compared: dict[str, int] = field(default_factory=dict)
    depth: str = "STUDY"

    @property
    def identical(self) -> bool:
        return not self.differences

    def count(self, kind: str, level: str | None = None) -> int:
        return sum(1 for d in self.differences
                   if d.kind == kind and (level is None or d.level == level))

    def summary(self) -> str:
        parts = [f"{n} {k}" for k, n in self.compared.items()]
        head = f"compared {', '.join(parts)} (down to {self.depth} level)"
        if self.identical:
            return f"{head}: identical"
        kinds = ", ".join(f"{self.count(k)} {k}" for k in ("missing", "extra", "different")
                          if self.count(k))
        return f"{head}: {kinds}"

    def to_json(self) -> dict[str, Any]:
        return {"identical": self.identical, "depth": self.depth, "compared": self.compared,
                "differences": [d.__dict__ for d in self.differences]}


def _missing(level: str, uid: str, study_uid: str, other: Inventory | None,
             detail: str) -> Difference:
    """A record the other inventory does not hold; when it lists the record as Removed from
    Operational Use, the detail says so, with the reason it gives."""
    if other is not None and uid in other.removed:
        return Difference("missing", level, uid, study_uid, "removed from operational use",
                          other.removal_reasons.get(uid, ""))
    return Difference("missing", level, uid, study_uid, detail)


def _known_mismatch(label: str, a: Any, b: Any) -> str | None:
    if a in (None, "") or b in (None, ""):
        return None
    return None if a == b else f"{label} {a} != {b}"


def _changed(label: str, a: str, b: str) -> str | None:
    """`label` differs, when both sides give it; the values are not quoted (patient data)."""
    return None if not a or not b or a == b else f"{label} differs"


def _pn(name: str) -> str:
    """A Person Name without the empty components and groups it may end with (``DOE^JOHN^^``
    is ``DOE^JOHN``, PS3.5 6.2.1.1)."""
    groups = [g.rstrip("^ ") for g in name.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _compare_study(a: StudyRecord, b: StudyRecord, depth: int, out: list[Difference],
                   b_inv: Inventory | None = None) -> None:
    details = [d for d in (
        _known_mismatch("series", a.number_of_series, b.number_of_series),
        _known_mismatch("instances", a.number_of_instances, b.number_of_instances),
        _known_mismatch("modalities", a.modalities, b.modalities),
        # Who and when (QA s22: a study whose Patient ID, name and date had changed at the
        # source was "identical"); values are not quoted, they may identify the patient.
        _changed("Patient ID", a.patient_id.strip(), b.patient_id.strip()),
        _changed("Patient's Name", _pn(a.patient_name), _pn(b.patient_name)),
        _changed("Study Date", a.study_date.strip(), b.study_date.strip()),
        _changed("Accession Number", a.accession_number.strip(), b.accession_number.strip()),
    ) if d]
    if details:
        out.append(Difference("different", "STUDY", a.study_instance_uid, a.study_instance_uid,
                              "; ".join(details)))
    if depth < 2:
        return
    for uid, sa in a.series.items():
        sb = b.series.get(uid)
        if sb is None:
            out.append(_missing("SERIES", uid, a.study_instance_uid, b_inv,
                                f"{len(sa.instances) or sa.number_of_instances or 0} instances"))
            continue
        _compare_series(a.study_instance_uid, sa, sb, depth, out, b_inv)
    for uid in b.series.keys() - a.series.keys():
        out.append(Difference("extra", "SERIES", uid, a.study_instance_uid))


def _compare_series(study_uid: str, a: SeriesRecord, b: SeriesRecord, depth: int,
                    out: list[Difference], b_inv: Inventory | None = None) -> None:
    details = [d for d in (
        _known_mismatch("modality", a.modality, b.modality),
        _known_mismatch("instances", a.number_of_instances, b.number_of_instances),
    ) if d]
    if details:
        out.append(Difference("different", "SERIES", a.series_instance_uid, study_uid,
                              "; ".join(details)))
    if depth < 3:
        return
    for uid, ia in a.instances.items():
        ib = b.instances.get(uid)
        if ib is None:
            out.append(_missing("INSTANCE", uid, study_uid, b_inv,
                                f"series {a.series_instance_uid}"))
            continue
        details = [d for d in (
            _known_mismatch("SOP Class", ia.sop_class_uid, ib.sop_class_uid),
            _known_mismatch("size", ia.size, ib.size),
        ) if d]
        if details:
            out.append(Difference("different", "INSTANCE", uid, study_uid, "; ".join(details)))
    for uid in b.instances.keys() - a.instances.keys():
        out.append(Difference("extra", "INSTANCE", uid, study_uid,
                              f"series {a.series_instance_uid}"))


def diff(a: Inventory, b: Inventory) -> DiffResult:
    """Differences between inventory `a` (reference) and `b`."""
    depth = min(_DEPTH.get(a.level, 1), _DEPTH.get(b.level, 1))
    result = DiffResult(depth={1: "STUDY", 2: "SERIES", 3: "INSTANCE"}[depth])
    out = result.differences
    for uid, sa in a.studies.items():
        sb = b.studies.get(uid)
        if sb is None:
            out.append(_missing("STUDY", uid, uid, b, f"{sa.number_of_instances or 0} instances"))
            continue
        _compare_study(sa, sb, depth, out, b)
    for uid in b.studies.keys() - a.studies.keys():
        out.append(Difference("extra", "STUDY", uid, uid))
    counts = a.counts()
    result.compared = {"studies": counts["studies"]}
    if depth >= 2:
        result.compared["series"] = counts["series"]
    if depth >= 3:
        result.compared["instances"] = counts["instances"]
    return result
