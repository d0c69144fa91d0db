"""``python -m bench.ab``: the query rows of the benchmark, interleaved over several servers.

A change to the query path moves latencies by 10-30 %, less than what a shared machine moves them
between two runs of ``python -m bench``. So this tool stores the corpus once per target kind
(``populate``), then starts several servers at once on copies of that data (blobs hard-linked,
the index copied) and sends each query to every server in turn, rotating the order, so that load
from other work falls on all of them alike: the old and the new code of Archivist side by side,
and Orthanc in the same run.

    python -m bench.ab populate                       # once: CT + tiny into both seeds
    git archive HEAD src | tar -x -C /tmp/before      # the code to compare against
    python -m bench.ab run before=archivist:/tmp/before/src after=archivist orthanc=orthanc

A variant is ``NAME=archivist[:SRC[:WORKERS]]`` (SRC: a ``src`` folder put first on
``PYTHONPATH``; empty: the working tree) or ``NAME=orthanc``. Results: median (p95) per row, and
every sample as JSON with ``--json``.

STOW-RS the same way (no ``populate`` needed: each variant starts on an empty data folder)::

    python -m bench.ab stow before=archivist:/tmp/before/src after=archivist --rounds 10

Each round sends the 300-instance STOW study in requests of 25 to every variant in turn (the
order rotated every round), under UIDs of its own each round (``corpus.stow_sample``), so every
round stores new instances. Per variant: the median rate, the median server CPU per instance
(the process tree's, from ``/proc``), and the median over the rounds of its rate and CPU
divided by the first variant's in the same round (the figures of one round were measured
seconds apart, under the same load).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import clients
from bench.corpus import (
    STOW_SAMPLES,
    CorpusSpec,
    load_or_generate,
    population,
    series_uid,
    sop_uid,
    stow_sample,
    study_meta,
    study_queries,
)
from bench.procs import TreeSampler, cpu_seconds
from bench.stats import median, percentile
from bench.targets import ArchivistTarget, OrthancTarget, Target, free_port

ROWS = ("echo", "patient_id_exact", "patient_name_wildcard", "study_date_range_1y",
        "all_studies", "qido", "one_frame")
QIDO = ("/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060")
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # "archivist" or "orthanc"
    src: str = ""
    #: ``ARCHIVIST_WORKERS``; empty: 1 for the query rows, serve's default for STOW-RS.
    workers: str = ""


def parse_variant(text: str) -> Variant:
    """``NAME=archivist[:SRC[:WORKERS]]`` or ``NAME=orthanc``.

    Raises
    ------
    ValueError
        For anything else.
    """
    name, sep, rest = text.partition("=")
    parts = rest.split(":")
    if not sep or not name or parts[0] not in ("archivist", "orthanc") or len(parts) > 3 \
            or (parts[0] == "orthanc" and len(parts) > 1):
        raise ValueError(f"not NAME=archivist[:SRC[:WORKERS]] or NAME=orthanc: {text!r}")
    return Variant(name, parts[0], *parts[1:])


def rotations(n_targets: int, n_jobs: int) -> list[list[int]]:
    """For each job, the order in which the targets get it: rotated by one every job, so that
    none is always first (the first request after a pause) or last."""
    base = list(range(n_targets))
    return [base[j % n_targets:] + base[:j % n_targets] for j in range(n_jobs)]


def clone(seed: Path, dest: Path) -> None:
    """A copy of a populated data folder: stored objects hard-linked (never written again), every
    other file (the index, caches) copied, so the copy's writes stay in the copy."""
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(["cp", "-al", str(seed), str(dest)], check=True)
    for path in dest.rglob("*"):
        if path.is_file() and not {"blobs", "storage"} & set(path.relative_to(dest).parts):
            data = path.read_bytes()
            path.unlink()
            path.write_bytes(data)


def _target(kind: str) -> Target:
    return ArchivistTarget() if kind == "archivist" else OrthancTarget()


def populate(work: Path, spec: CorpusSpec, cache: Path) -> None:
    """Store the CT and tiny sets into one seed folder per target kind, with 4 storescu."""
    corpus = load_or_generate(cache, spec, sets=("ct", "tiny"))
    for kind in ("archivist", "orthanc"):
        target = _target(kind)
        target.prepare(work / f"seed-{kind}", free_port())
        target.start()
        try:
            for set_name in ("ct", "tiny"):
                run = clients.storescu_parallel(corpus.paths(set_name), target.dicom_port,
                                                target.aet, n=4, log_dir=work)
                print(f"{kind}: {set_name} in {run.seconds:.1f} s, "
                      f"{target.stored_count()} stored", flush=True)
        finally:
            target.stop()


def start(work: Path, v: Variant) -> Target:
    target = _target(v.kind)
    target.name = v.name
    target.workdir = work / v.name
    clone(work / f"seed-{v.kind}", target.workdir)
    target.dicom_port, target.http_port, target.peer_port = free_port(), free_port(), free_port()
    env = {"ARCHIVIST_WORKERS": v.workers or "1"} if v.kind == "archivist" else {}
    if v.src:
        env["PYTHONPATH"] = v.src
    target.extra_env = env  # type: ignore[misc]
    target.start()
    return target


def start_empty(work: Path, v: Variant) -> Target:
    """`v` started on an empty data folder (for the STOW-RS rounds)."""
    target = _target(v.kind)
    target.name = v.name
    target.prepare(work / f"stow-{v.name}", free_port())
    env = {"ARCHIVIST_WORKERS": v.workers} if v.kind == "archivist" and v.workers else {}
    if v.src:
        env["PYTHONPATH"] = v.src
    target.extra_env = env  # type: ignore[misc]
    target.start()
    return target


def stow_rounds(targets: Sequence[Target], files: Sequence[Path], rounds: int,
                batch: int = 25) -> dict[str, dict[str, list[float]]]:
    """`rounds` STOW-RS samples of `files` per target, interleaved (see the module's text):
    per target, each round's rate (inst/s) and server CPU per instance (ms)."""
    if not 0 < rounds < STOW_SAMPLES:
        raise ValueError(f"from 1 to {STOW_SAMPLES - 1} rounds")
    out: dict[str, dict[str, list[float]]] = {
        t.name: {"rate": [], "cpu_ms": [], "peak_rss_MB": []} for t in targets}
    for r, order in enumerate(rotations(len(targets), rounds)):
        bodies = [clients.multipart_dicom(list(files[i:i + batch]),
                                          lambda data, r=r: stow_sample(data, r + 1))
                  for i in range(0, len(files), batch)]
        for i in order:
            t = targets[i]
            before, cpu0 = t.stored_count(), cpu_seconds(t.pid)
            with TreeSampler(t.pid) as sampler:
                seconds, failed = clients.stow_requests(t.http_port, t.dicomweb_root or "",
                                                        bodies, ok=(200,))
            if failed is not None:
                raise RuntimeError(f"{t.name}: STOW-RS answered {failed.status}: "
                                   f"{failed.body[:200]!r}")
            cpu = cpu_seconds(t.pid) - cpu0
            stored = t.stored_count() - before
            if stored != len(files):
                raise RuntimeError(f"{t.name}: {stored} of {len(files)} instances stored")
            out[t.name]["rate"].append(len(files) / seconds)
            out[t.name]["cpu_ms"].append(cpu * 1000 / len(files))
            usage = sampler.usage
            out[t.name]["peak_rss_MB"].append(usage.peak_rss_bytes / 1e6 if usage else 0.0)
    return out


def stow_table(results: dict[str, dict[str, list[float]]]) -> str:
    names = list(results)
    base = results[names[0]]
    head = (f"| variant | inst/s | server CPU ms/inst | rate / {names[0]} | "
            f"CPU / {names[0]} |")
    head += " peak RSS of the tree, MB |"
    lines = [head, "| --- | --- | --- | --- | --- | --- |"]
    for name in names:
        r = results[name]
        rate = [a / b for a, b in zip(r["rate"], base["rate"])]
        cpu = [a / b for a, b in zip(r["cpu_ms"], base["cpu_ms"])]
        lines.append(f"| {name} | {median(r['rate']):.0f} ({min(r['rate']):.0f}-"
                     f"{max(r['rate']):.0f}) | {median(r['cpu_ms']):.2f} | {median(rate):.3f} | "
                     f"{median(cpu):.3f} | {max(r['peak_rss_MB']):.0f} |")
    return "\n".join(lines) + f"\n\n{len(base['rate'])} rounds; ranges are min-max."


def measure(targets: Sequence[Target], spec: CorpusSpec, rows: Sequence[str], per_kind: int,
            broad: int, web: int) -> dict[str, dict[str, list[float]]]:
    """Every row against every target, interleaved; answer counts checked."""
    queries = study_queries(population(spec), per_kind, broad)
    study = study_meta(0, "ct").study_uid
    series = series_uid(study, 1)
    https = {t.name: clients.Http(t.http_port) for t in targets}
    out: dict[str, dict[str, list[float]]] = {t.name: {} for t in targets}

    def one(t: Target, row: str, job: int) -> float:
        root = t.dicomweb_root
        if row == "echo":
            return clients.echo_ms(t.dicom_port, t.aet)
        if row == "qido":
            r = https[t.name].get(f"{root}{QIDO}", "application/dicom+json")
            if r.status != 200 or len(json.loads(r.body)) != min(101, len(population(spec))):
                raise RuntimeError(f"{t.name}: QIDO answered {r.status}")
            return r.ms
        if row == "one_frame":
            sop = sop_uid(study, 1, 1 + job % 20)
            r = https[t.name].get(f"{root}/studies/{study}/series/{series}/instances/{sop}"
                                  "/frames/1", FRAME_ACCEPT)
            if r.status != 200:
                raise RuntimeError(f"{t.name}: frame answered {r.status}")
            return r.ms
        q = queries[row][job]
        ms, n, _ = clients.cfind(t.dicom_port, t.aet, q.keys)
        if n != q.expected:
            raise RuntimeError(f"{t.name}: {row} {q.keys} gave {n} matches, not {q.expected}")
        return ms

    try:
        for row in rows:
            jobs = {"echo": 20, "qido": web, "one_frame": web}.get(row) or len(queries[row])
            for job, order in enumerate(rotations(len(targets), jobs)):
                for i in order:
                    t = targets[i]
                    out[t.name].setdefault(row, []).append(one(t, row, job))
    finally:
        for h in https.values():
            h.close()
    return out


def table(results: dict[str, dict[str, list[float]]], rows: Sequence[str]) -> str:
    names = list(results)
    lines = ["| row | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for row in rows:
        cells = [f"{median(results[n][row]):.2f} ({percentile(results[n][row], 95):.2f})"
                 for n in names]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["populate", "run", "stow"])
    p.add_argument("variants", nargs="*", help="NAME=archivist[:SRC[:WORKERS]] or NAME=orthanc")
    p.add_argument("--work", default="/var/tmp/archivist-bench/ab")
    p.add_argument("--cache", default="/var/tmp/archivist-bench")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--per-kind", type=int, default=30, help="C-FIND queries a kind")
    p.add_argument("--web", type=int, default=20, help="QIDO and frame requests")
    p.add_argument("--rounds", type=int, default=8, help="STOW-RS rounds (stow)")
    p.add_argument("--json", help="write every sample here")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    spec = CorpusSpec()
    if args.command == "populate":
        populate(work, spec, Path(args.cache))
        return 0
    variants = [parse_variant(v) for v in args.variants]
    if args.command == "stow":
        files = load_or_generate(Path(args.cache), spec, sets=("stow",)).paths("stow")
        targets_: list[Target] = []
        try:
            for v in variants:
                targets_.append(start_empty(work, v))
            time.sleep(2)
            stow = stow_rounds(targets_, files, args.rounds)
        finally:
            for t in targets_:
                t.stop()
                t.cleanup()
        log(stow_table(stow))
        if args.json:
            Path(args.json).write_text(json.dumps(stow))
        return 0
    rows = [r for r in args.rows.split(",") if r]
    targets: list[Target] = []
    try:
        for v in variants:
            targets.append(start(work, v))
        time.sleep(2)
        results = measure(targets, spec, rows, args.per_kind, 5, args.web)
    finally:
        for t in targets:
            t.stop()
            t.cleanup()
    log(table(results, rows))
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
