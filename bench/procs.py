"""Process-tree accounting from /proc: CPU seconds, resident memory, load average.

A server is measured as the tree of processes rooted at the PID the harness started (Archivist may
run worker processes; Orthanc and storescp are one process). CPU seconds are utime + stime of every
live process of the tree plus the cutime + cstime of the root (children it already reaped). RSS is
sampled by a background thread (:class:`TreeSampler`) because it is only ever a current value; the
peak is the highest sum over the tree seen at any sample. ``VmHWM`` (each process's own high-water
mark, kept by the kernel) is reported beside it, and so is the peak PSS of the tree: RSS counts a
page shared by several processes (the modules a supervisor loaded before forking its workers)
once in each of them, PSS splits it between them, so the PSS sum is what the tree really holds.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from archivist.testing.procs import status_kb
from archivist.testing.procs import tree as tree_pids

_CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def parse_stat(text: str) -> dict[str, int | str]:
    """The fields of a ``/proc/PID/stat`` line the harness uses (pid, comm, ppid, times, rss)."""
    end = text.rfind(")")
    rest = text[end + 2:].split()
    # rest[0] is field 3 (state); utime is field 14 -> rest[11].
    return {
        "pid": int(text[: text.find("(")].strip()),
        "comm": text[text.find("(") + 1: end],
        "ppid": int(rest[1]),
        "utime": int(rest[11]),
        "stime": int(rest[12]),
        "cutime": int(rest[13]),
        "cstime": int(rest[14]),
        "rss_pages": int(rest[21]),
    }


def cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by the tree rooted at `root`."""
    total = 0
    for pid in tree_pids(root):
        try:
            st = parse_stat((PROC / str(pid) / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        total += int(st["utime"]) + int(st["stime"])
        if pid == root:
            total += int(st["cutime"]) + int(st["cstime"])
    return total / _CLK_TCK


def rss_bytes(root: int) -> int:
    """Sum of the resident set of every process of the tree, now."""
    return sum(status_kb(pid, "VmRSS") for pid in tree_pids(root)) * 1024


def pss_bytes(root: int) -> int:
    """Sum of the proportional set size (``Pss`` of ``smaps_rollup``) of the tree, now: a page
    shared by n processes counts 1/n in each, so shared pages count once in the sum."""
    total = 0
    for pid in tree_pids(root):
        try:
            for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            continue
    return total * 1024


def hwm_bytes(root: int) -> int:
    """Largest ``VmHWM`` (peak resident set) of any single process of the tree."""
    return max((status_kb(pid, "VmHWM") for pid in tree_pids(root)), default=0) * 1024


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = os.getloadavg()
    return (round(one, 2), round(five, 2), round(fifteen, 2))


@dataclass
class Usage:
    """What a server's tree used during one measured interval."""

    cpu_s: float
    peak_rss_bytes: int
    start_rss_bytes: int
    hwm_bytes: int
    peak_pss_bytes: int = 0

    @property
    def rss_growth_bytes(self) -> int:
        return max(0, self.peak_rss_bytes - self.start_rss_bytes)


class TreeSampler:
    """Samples the RSS of a process tree every `interval` seconds while in a ``with`` block."""

    #: PSS is read every this many samples (the kernel walks the page tables for it).
    PSS_EVERY = 5

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root = root
        self.interval = interval
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak = 0
        self.start_rss = 0
        self.start_cpu = 0.0
        self.usage: Usage | None = None

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.root))
            if n % self.PSS_EVERY == 0:
                self.peak_pss = max(self.peak_pss, pss_bytes(self.root))
            n += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:  # noqa: PYI034
        self.start_cpu = cpu_seconds(self.root)
        self.start_rss = rss_bytes(self.root)
        self.peak = self.start_rss
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.root))
        self.peak_pss = max(self.peak_pss, pss_bytes(self.root))
        self.usage = Usage(
            cpu_s=round(cpu_seconds(self.root) - self.start_cpu, 3),
            peak_rss_bytes=self.peak,
            start_rss_bytes=self.start_rss,
            hwm_bytes=hwm_bytes(self.root),
            peak_pss_bytes=self.peak_pss,
        )

