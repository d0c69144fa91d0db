"""Compare our validator with dciodvfy (dicom3tools) on the same files.

Both tools' errors are reduced to (category, path) pairs, with paths written the way
``dciodvfy -new`` writes them (hex digits upper-cased, value numbers dropped). The categories
compared are the ones the agreement aim covers: a missing or empty Type 1/2 (and 1C/2C)
attribute, a bad VR and a bad VM; value syntax and enumerated values are tallied too.

Run as a script to print the agreement table of docs/validation.md::

    uv run --frozen --no-sync python tests/validate/dciodvfy_compare.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

DCIODVFY = shutil.which("dciodvfy")

# dciodvfy message -> category.
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("Missing attribute for Type", "missing"),
    ("Empty attribute (no value) for Type", "empty"),
    ("Bad attribute Value Multiplicity", "vm"),
    ("Invalid Value Representation", "vr"),
    ("Value invalid for this VR", "value"),
    ("Unrecognized enumerated value", "enum"),
)
# Our rule id -> category.
_RULES: dict[str, str] = {
    "iod.type1-missing": "missing",
    "iod.type2-missing": "missing",
    "iod.type1c-missing": "missing",
    "iod.type2c-missing": "missing",
    "iod.type1-empty": "empty",
    "iod.type1c-empty": "empty",
    "dict.vm": "vm",
    "dict.vr-mismatch": "vr",
    "dict.value-invalid": "value",
    "iod.enumerated-value": "enum",
}
AIM = ("missing", "empty", "vm", "vr")
_LOCATION = re.compile(r"</([^>]*)>")


def normalise(path: str) -> str:
    """Upper-case hex digits and drop a trailing value number (``[1]`` after an element)."""
    path = re.sub(r"\(([0-9a-fA-F]{4}),([0-9a-fA-F]{4})\)", lambda m: f"({m[1]},{m[2]})".upper(),
                  path)
    return re.sub(r"\[\d+\]$", "", path.rstrip("/"))


def dciodvfy_errors(path: str) -> set[tuple[str, str]]:
    """Run ``dciodvfy -new`` and return its errors as (category, path) pairs."""
    assert DCIODVFY
    proc = subprocess.run(
        [DCIODVFY, "-new", path],
        check=False, capture_output=True, text=True, errors="replace", timeout=60,
    )
    found: set[tuple[str, str]] = set()
    for line in (proc.stdout + proc.stderr).splitlines():
        if not line.startswith("Error"):
            continue
        match = _LOCATION.search(line)
        for text, category in _PATTERNS:
            if text in line and match:
                if category == "missing" and ("Type 1C" in line or "Type 2C" in line):
                    category = "missing-c"
                found.add((category, normalise("/" + match[1])))
                break
    return found


def our_errors(path: str) -> set[tuple[str, str]]:
    """Run our validator and return its errors as (category, path) pairs."""
    from archivist.validate import validate_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = validate_file(path)
    found = set()
    for f in report.errors:
        category = _RULES.get(f.rule_id)
        if category:
            found.add((category, normalise(f.path)))
    return found


_COMPATIBLE = {
    "missing": {"missing", "empty"},
    "missing-c": {"missing", "empty"},
    "empty": {"missing", "empty"},
}


@dataclass
class FileComparison:
    """The two tools' errors on one file; ``missed`` are dciodvfy errors we do not report."""

    path: str
    theirs: set[tuple[str, str]]
    ours: set[tuple[str, str]]
    missed: set[tuple[str, str]] = field(default_factory=set)
    extra: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        ours_by_path: dict[str, set[str]] = {}
        for category, path in self.ours:
            ours_by_path.setdefault(path, set()).add(category)
        theirs_by_path: dict[str, set[str]] = {}
        for category, path in self.theirs:
            theirs_by_path.setdefault(path, set()).add(category)
            allowed = _COMPATIBLE.get(category, {category})
            if not ours_by_path.get(path, set()) & allowed:
                self.missed.add((category, path))
        for category, path in self.ours:
            allowed = {"missing", "missing-c", "empty"} if category in _COMPATIBLE else {category}
            if not theirs_by_path.get(path, set()) & allowed:
                self.extra.add((category, path))

    @property
    def missed_aim(self) -> set[tuple[str, str]]:
        """Missed errors in the categories of the agreement aim (Type 1/2, VR, VM)."""
        return {(c, p) for c, p in self.missed if c in AIM}


def compare(paths: Iterable[str]) -> list[FileComparison]:
    """Run both tools over *paths* (two at a time) and pair their findings."""
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=2) as pool:
        theirs = list(pool.map(dciodvfy_errors, paths))
    return [FileComparison(p, t, our_errors(p)) for p, t in zip(paths, theirs, strict=True)]


def corpus_files() -> list[str]:
    """pydicom's bundled test files that are regular files."""
    from pydicom.data import get_testdata_files

    return sorted(p for p in get_testdata_files() if os.path.isfile(p))


def broken_files(folder: Path) -> list[str]:
    """Write the deliberately broken cases into *folder* and return their paths."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from validation_cases import CASES, write

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in CASES:
            out.append(str(write(case.build(), folder / f"{case.name}.dcm")))
    return out


def table(rows: list[FileComparison]) -> dict[str, Counter[str]]:
    """Per category: dciodvfy's errors, how many we report too, our errors, ours only."""
    stats: dict[str, Counter[str]] = {}
    for row in rows:
        for category, path in row.theirs:
            c = stats.setdefault(category, Counter())
            c["dciodvfy"] += 1
            if (category, path) not in row.missed:
                c["both"] += 1
        for category, path in row.ours:
            c = stats.setdefault(category, Counter())
            c["ours"] += 1
            if (category, path) in row.extra:
                c["ours_only"] += 1
    return stats


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for label, files in (("pydicom test files", corpus_files()),
                             ("generated broken files", broken_files(Path(tmp)))):
            rows = compare(files)
            print(f"\n{label}: {len(files)} files")
            print("| category | dciodvfy errors | also reported by us | our errors | ours only |")
            print("|---|---|---|---|---|")
            for category, c in sorted(table(rows).items()):
                print(f"| {category} | {c['dciodvfy']} | {c['both']} | {c['ours']} "
                      f"| {c['ours_only']} |")
            for row in rows:
                for miss in sorted(row.missed):
                    print(f"MISSED {Path(row.path).name} {miss}")
            if "-v" in sys.argv:
                for row in rows:
                    for extra in sorted(row.extra):
                        print(f"EXTRA {Path(row.path).name} {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
