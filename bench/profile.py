"""Where Archivist's ingest time goes: ``py-spy record`` on the server while storescu sends.

py-spy (the ``bench`` dependency group) samples every thread of ``archivist serve`` (and any worker
process, ``--subprocesses``) 100 times a second into py-spy's "raw" collapsed-stack format, one
line per distinct stack: ``frame;frame;...;frame COUNT``, outermost first. Idle threads (blocked in
a system call) are left out, so the samples approximate CPU time. :func:`summarise` turns the
stacks into the tables of docs/performance.md (a second recording with ``--idle`` counts
waiting threads too): samples by category (the innermost frame that
belongs to a known layer decides), and the top functions by self and by inclusive samples.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import clients
from bench.targets import Target

#: (category, pattern on "function (file:line)"), tried from the innermost frame outwards.
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("fsync / file writes", re.compile(r"fsync|fdatasync|write_bytes|tempfile\.py")),
    ("SQLite + SQLAlchemy", re.compile(r"sqlalchemy/|sqlite3|alembic/")),
    ("pydicom (parse / encode)", re.compile(r"pydicom/")),
    ("pynetdicom PDU/DIMSE decode", re.compile(r"pynetdicom/(pdu|pdu_items|pdu_primitives|"
                                               r"dimse_messages|dimse_primitives|dsutils)")),
    ("pynetdicom reactor (dul/fsm/association loops)",
     re.compile(r"pynetdicom/(dul|fsm|association|acse|dimse|transport|events)")),
    ("pynetdicom other", re.compile(r"pynetdicom/")),
    ("archivist", re.compile(r"archivist/")),
    ("socket / selectors", re.compile(r"socket\.py|selectors\.py|ssl\.py")),
    ("threading / queue / sleep", re.compile(r"threading\.py|queue\.py|\bsleep\b")),
]

#: Frames on (nearly) every stack, left out of the inclusive table.
_GENERIC = re.compile(r"threading\.py|runpy\.py|^<module>|base_events\.py|events\.py:|"
                      r"futures/thread\.py")

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """Collapsed stacks -> [(frames outermost first, samples)]."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        out.append((stack.split(";"), n))
    return out


def _short(frame: str) -> str:
    """``func (path/to/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    parts = m.group("file").split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1:]
    elif "src" in parts:
        parts = parts[parts.index("src") + 1:]
    else:
        parts = parts[-2:]
    return f"{m.group('func')} ({'/'.join(parts)})"


def categorise(frames: list[str]) -> str:
    for frame in reversed(frames):
        if frame.startswith(("process ", "thread ")):
            continue
        for name, pattern in CATEGORIES:
            if pattern.search(frame):
                return name
    return "other"


def summarise(stacks: list[tuple[list[str], int]], top: int = 15) -> dict[str, Any]:
    total = sum(n for _, n in stacks)
    categories: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in stacks:
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        categories[categorise(frames)] += n
        own[_short(frames[-1])] += n
        for name in {_short(f) for f in frames if not _GENERIC.search(f)}:
            inclusive[name] += n

    def pct(c: Counter[str], k: int | None = None) -> list[tuple[str, int, float]]:
        return [(name, n, round(100 * n / total, 1) if total else 0.0)
                for name, n in c.most_common(k)]

    return {"samples": total, "categories": pct(categories), "self": pct(own, top),
            "inclusive": pct(inclusive, top)}


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("py-spy not installed: uv sync --group bench")
    return found


def profile_ingest(target: Target, files: list[Path], out: Path, label: str,
                   work: Path) -> dict[str, Any]:
    """Send `files` with 4 storescu while py-spy records `target` twice at once: on-CPU samples
    (``label``) and wall-clock samples including idle threads (``label-idle``: where the
    association threads wait). Raw stacks and Markdown summaries go under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    spies = []
    for suffix, extra in (("", []), ("-idle", ["--idle"])):
        raw = out / f"{label}{suffix}.txt"
        spy = subprocess.Popen([py_spy(), "record", "--pid", str(target.pid), "--rate", "100",
                                "--subprocesses", "--format", "raw", "--output", str(raw),
                                "--nonblocking", *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        spies.append((suffix, raw, spy))
    time.sleep(1.0)
    for _, _, spy in spies:
        if spy.poll() is not None:
            err = spy.stderr.read().decode() if spy.stderr else ""
            raise RuntimeError(f"py-spy failed: {err}")
    run = clients.storescu_parallel(files, target.dicom_port, target.aet, n=4, log_dir=work)
    summaries: dict[str, Any] = {}
    for suffix, raw, spy in spies:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        summary = summarise(parse_raw(raw.read_text()))
        summary["instances"] = len(files)
        summary["seconds"] = round(run.seconds, 2)
        summary["inst_per_s"] = round(len(files) / run.seconds, 1)
        (out / f"{label}{suffix}.md").write_text(to_markdown(summary, label + suffix))
        summaries[suffix.strip("-") or "cpu"] = summary
    return summaries


def to_markdown(summary: dict[str, Any], label: str) -> str:
    title = (f"### py-spy, {label} ingest: {summary.get('instances')} instances at "
             f"{summary.get('inst_per_s')} inst/s, {summary['samples']} samples")
    lines = [title, "",
             "| category (innermost known frame) | samples | % |", "| --- | --- | --- |"]
    lines += [f"| {n} | {c} | {p} |" for n, c, p in summary["categories"]]
    lines += ["", "| top functions, self | samples | % |", "| --- | --- | --- |"]
    lines += [f"| `{n}` | {c} | {p} |" for n, c, p in summary["self"]]
    lines += ["", "| top functions, inclusive | samples | % |", "| --- | --- | --- |"]
    lines += [f"| `{n}` | {c} | {p} |" for n, c, p in summary["inclusive"]]
    return "\n".join(lines) + "\n"
