"""Figures of a server's whole process tree (``archivist serve`` runs worker processes), read
from ``/proc``: tests measure the tree, never just the supervising parent (the benchmark's
``bench.procs`` walks the tree with these too)."""

from __future__ import annotations

import os
from pathlib import Path


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def alive(pid: int) -> bool:
    """`pid` runs: it exists and is not a zombie (an exited process whose parent, or init for
    an orphan, has not reaped it yet). A process reaped while we look is not alive."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def status_kb(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure in KiB (``VmRSS``, ``VmHWM``); 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def rss_kb(pid: int) -> int:
    """Resident memory of the tree, KiB (the sum of each process's VmRSS)."""
    return sum(status_kb(p, "VmRSS") for p in tree(pid))


def peak_rss_kb(pid: int) -> int:
    """The sum of each process's peak resident memory (VmHWM), KiB: an upper bound of the
    tree's peak."""
    return sum(status_kb(p, "VmHWM") for p in tree(pid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the tree's live processes (and of the children they reaped)."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK")
