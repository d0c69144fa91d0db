"""Bulk population of an Archivist data directory for the ``--scale`` rows.

Storing 100,000 or 1,000,000 instances through C-STORE (or ``archivist import`` of files
generated first) is slow: generating the files alone is about 1 ms an instance, and each
``storescu`` association adds its own costs. This path still goes through Archivist's own
ingest: several processes each open the archive (:meth:`Archive.open`, as ``archivist import``
does) and store the tiny instances of :func:`bench.corpus.tiny_study_instances` from several
threads with :meth:`Ingest.store_bytes` (header parse, validation, blob write with fsync, the
group-committed index write, exactly as for a received object). Nothing is written into the index
behind the archive's back, and the server may run beside it (it usually does).

The bytes are those of the ``scale-N`` files, so Archivist and a target populated from the files
hold the same objects. ``python -m bench.populate --help`` runs it by hand.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.corpus import tiny_study_datasets, tiny_study_instances

#: Size of a tiny instance file (recorded as the instance size in ``--mode index``).
_TINY_FILE_BYTES = 1630


@dataclass
class PopulateRun:
    stored: int
    failed: int
    seconds: float


def _split(first: int, count: int, parts: int) -> list[tuple[int, int]]:
    """`count` consecutive numbers from `first` as up to `parts` contiguous (first, count)."""
    parts = max(1, min(parts, count))
    size, extra = divmod(count, parts)
    out, g = [], first
    for i in range(parts):
        n = size + (1 if i < extra else 0)
        if n:
            out.append((g, n))
        g += n
    return out


def populate(data_dir: Path, first_g: int, studies: int, per_study: int, *,
             processes: int = 2, threads: int = 4, kind: str = "scale",
             mode: str = "index", log: Callable[[str], None] = print) -> PopulateRun:
    """Store tiny studies ``first_g .. first_g + studies - 1`` (`per_study` instances each) into
    the archive at `data_dir` from `processes` worker processes of `threads` threads each."""
    t0 = time.perf_counter()
    procs = []
    for g, n in _split(first_g, studies, processes):
        cmd = [sys.executable, "-m", "bench.populate", "--data", str(data_dir), "--first-g",
               str(g), "--studies", str(n), "--per-study", str(per_study), "--threads",
               str(threads), "--kind", kind, "--mode", mode]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env={**os.environ, "PYTHONPATH": _root()}))
    stored = failed = 0
    errors = []
    for p in procs:
        out, err = p.communicate()
        last = (out.strip().splitlines() or [""])[-1].split()
        if p.returncode != 0 or len(last) != 3 or last[0] != "done":
            errors.append(f"exit {p.returncode}: {err[-400:]}")
            continue
        stored += int(last[1])
        failed += int(last[2])
    seconds = time.perf_counter() - t0
    if errors:
        raise RuntimeError("bulk population failed: " + " | ".join(errors))
    log(f"populated {stored} instances ({failed} refused) in {seconds:.0f} s, "
        f"{stored / seconds:.0f} inst/s, mode {mode}, {processes} processes"
        + (f" x {threads} threads" if mode == "ingest" else ""))
    return PopulateRun(stored, failed, seconds)


def _root() -> str:
    here = str(Path(__file__).resolve().parents[1])
    extra = os.environ.get("PYTHONPATH")
    return f"{here}{os.pathsep}{extra}" if extra else here


def _index_worker(data_dir: Path, first_g: int, studies: int, per_study: int,
                  kind: str, batch: int = 500) -> tuple[int, int]:
    """One process, ``--mode index``: the rows of each instance's data set (as generated,
    without pixel data: what a header read gives) are worked out by the ingest's own
    :func:`extract` / :func:`extract_codes` and recorded by :meth:`Index.add_instances` in groups
    of `batch` (one transaction each), as the ingest's group commit does. No blob is written and
    nothing is validated: the rows name storage keys that do not exist, so the instances can be
    found (C-FIND, QIDO) but not retrieved. Generating and parsing the files would cost
    about as much again (measured: about 4 ms an instance instead of 1-2)."""
    import hashlib
    import logging

    from archivist.archive.archive import Archive
    from archivist.archive.coded import extract_codes
    from archivist.config import Settings
    from archivist.index.extract import extract
    from archivist.index.repository import AddRequest, BlobInfo

    logging.getLogger("archivist").setLevel(logging.WARNING)
    archive = Archive.open(Settings(data_dir=data_dir))
    index = archive.index
    stored = failed = 0
    pending: list[AddRequest] = []

    def flush() -> None:
        nonlocal stored, failed
        for outcome in index.add_instances(pending):
            if getattr(outcome, "status", None) == "added":
                stored += 1
            else:
                failed += 1
        pending.clear()

    try:
        for g in range(first_g, first_g + studies):
            for _, ds in tiny_study_datasets(g, kind, per_study, pixels=False):
                rows = extract(ds)
                rows.codes = extract_codes(ds)
                sop = str(ds.SOPInstanceUID)
                key = hashlib.sha256(sop.encode()).hexdigest()
                pending.append(AddRequest(
                    rows, BlobInfo(f"bench-{key[:40]}", _TINY_FILE_BYTES, key,
                                   str(ds.file_meta.TransferSyntaxUID)),
                    sop_instance_uid=sop, sop_class_uid=str(ds.SOPClassUID),
                    study_instance_uid=str(ds.StudyInstanceUID),
                    series_instance_uid=str(ds.SeriesInstanceUID),
                    source_aet="BENCH", source_address=None, policy="keep"))
                if len(pending) >= batch:
                    flush()
        flush()
    finally:
        archive.close()
    return stored, failed


def _worker(data_dir: Path, first_g: int, studies: int, per_study: int, threads: int,
            kind: str) -> tuple[int, int]:
    """One process, ``--mode ingest``: open the archive as `archivist import` does and store
    the studies through :meth:`Ingest.store_bytes` from `threads` threads."""
    import logging

    from archivist.archive.archive import Archive
    from archivist.archive.ingest import Origin
    from archivist.config import Settings
    from archivist.errors import ArchivistError

    logging.getLogger("archivist").setLevel(logging.WARNING)
    archive = Archive.open(Settings(data_dir=data_dir))
    origin = Origin("import")
    lock = threading.Lock()
    counts = [0, 0]

    def one_study(g: int) -> None:
        for _, data in tiny_study_instances(g, kind, per_study):
            try:
                archive.ingest.store_bytes(data, origin)
                ok = 0
            except ArchivistError as exc:
                print(f"refused g={g}: {exc}", file=sys.stderr)
                ok = 1
            with lock:
                counts[ok] += 1

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one_study, range(first_g, first_g + studies)))
    finally:
        archive.close()
    return counts[0], counts[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.populate", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, type=Path, help="the archive's data directory")
    p.add_argument("--first-g", type=int, required=True, help="number of the first study")
    p.add_argument("--studies", type=int, required=True)
    p.add_argument("--per-study", type=int, default=10)
    p.add_argument("--kind", default="scale", help="corpus set the UIDs belong to")
    p.add_argument("--mode", choices=("index", "ingest"), default="index",
                   help="index: rows through Index.add_instances in groups of 500, no blobs "
                        "(query rows only); ingest: Ingest.store_bytes, blobs and validation "
                        "included (slower)")
    p.add_argument("--threads", type=int, default=4, help="threads per process (ingest mode)")
    p.add_argument("--processes", type=int, default=0,
                   help="worker processes (default: run in this process)")
    args = p.parse_args(argv)
    if args.processes:
        populate(args.data, args.first_g, args.studies, args.per_study,
                 processes=args.processes, threads=args.threads, kind=args.kind,
                 mode=args.mode)
        return 0
    if args.mode == "index":
        stored, failed = _index_worker(args.data, args.first_g, args.studies, args.per_study,
                                       args.kind)
    else:
        stored, failed = _worker(args.data, args.first_g, args.studies, args.per_study,
                                 args.threads, args.kind)
    print(f"done {stored} {failed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
