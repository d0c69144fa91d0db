"""Benchmark results: one record per (row, target), written as JSON and as a Markdown table.

A record holds the raw samples, their summary (median, p95, min, max) and details (CPU seconds,
peak RSS, counts checked, HTTP status). A row a target cannot answer is recorded with a status
(``not available`` with the HTTP status, ``failed`` with the error, ``n/a`` when the target does
not offer the service), never with a number.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import Summary, fmt, ratio

OK = "ok"
NOT_AVAILABLE = "not available"
FAILED = "failed"
WRONG = "wrong count"

#: Display order of the groups in the Markdown.
GROUPS = {
    "ingest": "C-STORE ingest, 4 parallel storescu (TCP_NODELAY=1)",
    "find": "C-FIND at STUDY level, new association per query (pynetdicom SCU)",
    "dicomweb": "DICOMweb",
    "retrieve": "C-MOVE / C-GET of one 300-instance CT study to a DCMTK peer",
    "big": "Ingest of one large multi-frame instance (one storescu)",
    "scale": "C-FIND at STUDY level on a large index (--scale)",
}


@dataclass
class Record:
    group: str
    row: str
    target: str
    unit: str
    #: "higher" (rates) or "lower" (latencies, memory) is better.
    better: str
    values: list[float] = field(default_factory=list)
    status: str = OK
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> Summary | None:
        return Summary.of(self.values) if self.values and self.status in (OK, WRONG) else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        s = self.summary
        out["summary"] = s.as_dict() if s else None
        return out


@dataclass
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)

    def add(self, record: Record) -> Record:
        self.records.append(record)
        return record

    def find(self, group: str, row: str, target: str) -> Record | None:
        for r in self.records:
            if (r.group, r.row, r.target) == (group, row, target):
                return r
        return None

    def targets(self) -> list[str]:
        seen: list[str] = []
        for r in self.records:
            if r.target not in seen:
                seen.append(r.target)
        return seen

    def to_json(self) -> str:
        return json.dumps({"meta": self.meta, "records": [r.as_dict() for r in self.records]},
                          indent=1)

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = (folder / f"{stem}.json", folder / f"{stem}.md")
        for path, text in zip(paths, (self.to_json(), self.to_markdown())):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        return paths

    # -- Markdown -------------------------------------------------------------------------------

    def to_markdown(self, candidate_prefix: str = "archivist") -> str:
        m = self.meta
        lines = [f"# Benchmark run {m.get('started', '')}", ""]
        for key in ("command", "machine", "git", "versions", "corpus", "load_start", "load_end",
                    "duration_s", "ingest_repetitions", "note", "warning"):
            if key in m:
                value = m[key]
                if isinstance(value, dict):
                    value = ", ".join(f"{k}: {v}" for k, v in value.items())
                lines.append(f"- **{key}**: {value}")
        for name, builds in m.get("archivist_builds", {}).items():
            runs = "; ".join(f"{b['time']} {b['head']} (src tree {b.get('src_tree', '?')}, "
                             f"uncommitted {b['src_changes']}) engine {b['dimse_engine']}"
                             for b in builds)
            lines.append(f"- **{name} builds started**: {runs}")
        lines += ["", _LEGEND, ""]
        targets = self.targets()
        candidates = [t for t in targets if t.startswith(candidate_prefix)]
        refs = [t for t in targets if t not in candidates]
        pairs = [(c, r) for c in candidates for r in refs]
        for group, title in GROUPS.items():
            rows = [r for r in self.records if r.group == group]
            if not rows:
                continue
            lines += [f"## {title}", ""]
            header = ["row", "unit", *targets, *[f"{c}/{r}" for c, r in pairs]]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + " --- |" * len(header))
            names: list[str] = []
            for r in rows:
                if r.row not in names:
                    names.append(r.row)
            for name in names:
                first = next(r for r in rows if r.row == name)
                cells = [name, f"{first.unit} ({first.better} is better)"]
                for t in targets:
                    cells.append(_cell(self.find(group, name, t)))
                for c, t in pairs:
                    mine = self.find(group, name, c)
                    theirs = self.find(group, name, t)
                    a = mine.summary.median if mine and mine.summary else None
                    b = theirs.summary.median if theirs and theirs.summary else None
                    q = ratio(a, b)
                    cells.append(f"{q:.2f}" if q is not None else "–")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
            details = [r for r in rows if r.detail]
            if details:
                lines += ["<details><summary>details</summary>", "",
                          "| row | target | status | detail |", "| --- | --- | --- | --- |"]
                for r in details:
                    d = ", ".join(f"{k}={_short(v)}" for k, v in r.detail.items())
                    lines.append(f"| {r.row} | {r.target} | {r.status} | {d} |")
                lines += ["", "</details>", ""]
        return "\n".join(lines) + "\n"


_LEGEND = ("Cells: median (p95) of the samples; rates are higher-is-better, times and memory "
           "lower-is-better. Ratios are the candidate's median over the reference's.")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, list) and len(value) > 6:
        return f"[{', '.join(map(_short, value[:6]))}, ...]"
    if isinstance(value, list):
        return f"[{', '.join(map(_short, value))}]"
    return str(value).replace("|", "/").replace("\n", " ")


def _cell(record: Record | None) -> str:
    if record is None:
        return "–"
    if record.status not in (OK, WRONG):
        extra = record.detail.get("http_status")
        return f"{record.status}" + (f" (HTTP {extra})" if extra else "")
    s = record.summary
    if s is None:
        return "–"
    text = fmt(s.median) if s.n == 1 else f"{fmt(s.median)} ({fmt(s.p95)})"
    if record.status == WRONG:
        text += " **wrong count**"
    return text
