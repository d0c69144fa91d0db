"""``python -m bench``: every row against every target in one run, results as JSON + Markdown.

Order: repetitions are the outer loop and targets the inner one, so that the load other work puts
on a shared machine falls on every target alike. Each repetition starts each target on a fresh data
directory and ingests the CT then the tiny corpus; in the first repetition, the query/retrieve
targets then answer the C-FIND, C-MOVE/C-GET and DICOMweb rows on what they just stored. The
STOW-RS row's samples are spread over the repetitions (one each in the full run, all three in the
first with ``--quick``): after the other DICOMweb rows in the first, after the ingest rows in the
others. Further repetitions (ingest, and their STOW-RS samples) are skipped when they would
overrun ``--budget``. The large instance, ``--scale`` and ``--profile`` phases come after, each on
fresh data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import clients
from bench.corpus import (
    STOW_SAMPLES,
    Corpus,
    CorpusSpec,
    load_or_generate,
    moved_uids,
    population,
    scale_studies,
    series_uid,
    sop_uid,
    stow_sample,
    study_meta,
    study_queries,
)
from bench.populate import populate
from bench.procs import TreeSampler, load_average
from bench.results import FAILED, NOT_AVAILABLE, WRONG, Record, Results
from bench.targets import ALL_TARGETS, REPO, ArchivistTarget, PeerStorescp, Target, dcmtk

MB = 1_000_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Plan:
    """How much of everything to do (full or --quick)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.spec = CorpusSpec.quick() if quick else CorpusSpec()
        self.reps = 1 if quick else 3
        self.find_per_kind = 10 if quick else 50
        self.find_broad = 2 if quick else 5
        self.echo_n = 5 if quick else 20
        self.web_warm = 5 if quick else 10
        self.retrieve_reps = 1 if quick else 3
        self.stow_batch = 25
        #: STOW-RS samples (each 300 new instances), spread over the repetitions; the row
        #: gives their median.
        self.stow_samples = 3


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = Plan(args.quick)
        if args.reps:
            self.plan.reps = args.reps
        if args.stow_samples:
            self.plan.stow_samples = args.stow_samples
        self.results = Results()
        stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
        self.stamp = stamp
        self.work = Path(args.workdir) / f"run-{stamp}"
        self.corpus: Corpus | None = None
        self.targets: list[Target] = []
        self.peer: PeerStorescp | None = None
        self.stock_peer: PeerStorescp | None = None
        self.extras_s = 0.0

    # -- set-up ---------------------------------------------------------------------------------

    def setup(self) -> None:
        load = load_average()
        self.results.meta.update({
            "started": self.stamp,
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "machine": f"{platform.node()} {os.cpu_count()} cores, "
                       f"{_mem_gib():.0f} GiB RAM, {platform.platform()}",
            "load_start": load,
            "note": self.args.note or "",
        })
        for name in self.args.targets.split(","):
            target = ALL_TARGETS[name.strip()]()
            why = target.available()
            if why:
                log(f"skipping {target.name}: {why}")
                self.results.meta.setdefault("skipped", {})[target.name] = why
                continue
            self.targets.append(target)
        sets = ["ct", "tiny", "stow"] + (["big"] if "big" in self.groups() else [])
        # The scale files are needed only by targets populated with storescu.
        scale_files = self.args.scale if any(
            t.query_retrieve and (not t.name.startswith("archivist")
                                  or self.args.scale_via_storescu)
            for t in self.targets) else 0
        self.corpus = load_or_generate(Path(self.args.cache), self.plan.spec, sets=sets,
                                       scale=scale_files, log=log)
        spec = self.plan.spec
        self.results.meta["corpus"] = {
            "ct": f"{spec.ct_studies} studies x {spec.ct_series} series x {spec.ct_per_series} "
                  f"(512x512 16-bit), {self.corpus.sets['ct'].bytes / MB:.0f} MB",
            "tiny": f"{spec.tiny_studies} studies x {spec.tiny_per_study} (16x16), "
                    f"{self.corpus.sets['tiny'].bytes / MB:.1f} MB",
            "big": f"{spec.big_mb} MB multi-frame" if "big" in self.groups() else "not run",
            "scale": self.args.scale,
            "cache": str(self.corpus.root),
        }
        self.work.mkdir(parents=True, exist_ok=True)
        self.peer = PeerStorescp(self.work / "peer-received")
        self.peer.start()
        self.stock_peer = PeerStorescp(self.work / "stock-received", nodelay=False)
        self.stock_peer.start()

    def groups(self) -> list[str]:
        wanted = ["ingest", "find", "dicomweb", "retrieve", "big"]
        if self.args.only:
            wanted = [g for g in self.args.only.split(",")]
        return [g for g in wanted if g not in (self.args.skip or "").split(",")]

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> Path:
        t0 = time.monotonic()
        self.setup()
        try:
            groups = self.groups()
            if any(g in groups for g in ("ingest", "find", "dicomweb", "retrieve")):
                done, rep_seconds = 0, 0.0
                for rep in range(self.plan.reps):
                    if rep > 0 and self.over_budget(t0, rep_seconds, groups):
                        log(f"time budget: stopping after {rep} repetition(s)")
                        break
                    rep_start, self.extras_s = time.monotonic(), 0.0
                    for target in self.targets:
                        self.repetition(target, rep, groups)
                    # What an ingest-only repetition costs (the first also ran the other rows).
                    rep_seconds = time.monotonic() - rep_start - self.extras_s
                    done += 1
                self.results.meta["ingest_repetitions"] = done
            if "big" in groups:
                for target in self.targets:
                    self.guard(target, "big", "big_instance", lambda t=target: self.big(t))
            if self.args.scale:
                for target in self.targets:
                    if target.query_retrieve:
                        self.guard(target, "scale", f"scale_{self.args.scale}",
                                   lambda t=target: self.scale(t))
            if self.args.profile:
                self.profile()
        finally:
            if self.peer:
                self.peer.stop()
            if self.stock_peer:
                self.stock_peer.stop()
            for target in self.targets:
                target.stop()
            self.results.meta["load_end"] = load_average()
            self.results.meta["duration_s"] = round(time.monotonic() - t0)
            self.results.meta["versions"] = {t.name: t.version() or "?" for t in self.targets}
            self.results.meta["git"] = ArchivistTarget().version()
            builds = {t.name: t.builds for t in self.targets if isinstance(t, ArchivistTarget)}
            self.results.meta["archivist_builds"] = builds
            distinct = {(b["src_tree"], b["src_changes"]) for bs in builds.values() for b in bs}
            if len(distinct) > 1:
                self.results.meta["warning"] = (
                    "the Archivist code under src/ changed during the run (other engineers "
                    f"work in the shared tree): {len(distinct)} different builds, see "
                    "archivist_builds")
            out = Path(self.args.out)
            json_path, md_path = self.results.write(out, self.stamp)
            log(f"results: {json_path} and {md_path}")
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        return md_path

    def over_budget(self, t0: float, rep_seconds: float, groups: list[str]) -> bool:
        """Would one more ingest repetition (as long as the last one) overrun ``--budget``?
        The large-instance phase is reserved for at its estimated length."""
        # Measured: 500 MB took 2-7 s a target plus about 3 s of start and stop.
        reserve = (self.plan.spec.big_mb / 50 + 10) * len(self.targets) if "big" in groups else 0
        return time.monotonic() - t0 + rep_seconds + reserve > self.args.budget

    def guard(self, target: Target, group: str, row: str, fn: Callable[[], None]) -> None:
        """Run one phase; a failure becomes a ``failed`` record, and the target is stopped."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one failing target must not end the run
            log(f"{target.name} {row}: FAILED {exc!r}")
            traceback.print_exc()
            tail = target.log_tail(8)
            self.results.add(Record(group, row, target.name, "", "", status=FAILED,
                                    detail={"error": repr(exc)[:300], "log": tail[-300:]}))
            target.stop()

    def start_fresh(self, target: Target, label: str) -> None:
        assert self.peer is not None
        target.prepare(self.work / f"{target.name}-{label}", self.peer.port)
        target.stock_peer_port = self.stock_peer.port if self.stock_peer else 0
        target.start()

    def repetition(self, target: Target, rep: int, groups: list[str]) -> None:
        # The query, DICOMweb and retrieve rows run in the first repetition, so that a time
        # budget that cuts later repetitions never loses them.
        first = rep == 0

        def body() -> None:
            self.start_fresh(target, f"rep{rep}")
            try:
                self.ingest(target, "ct_ingest", "ct", expected_total=self.ct_n)
                self.ingest(target, "tiny_ingest", "tiny",
                            expected_total=self.ct_n + self.tiny_n)
                if not first and "dicomweb" in groups and target.dicomweb_root:
                    self.stow_row(target, target.dicomweb_root, self.stow_samples_in(rep))
                if first and target.query_retrieve:
                    extras_start = time.monotonic()
                    if "find" in groups:
                        self.find_rows(target, "find", self.plan.find_per_kind)
                    if "retrieve" in groups:
                        self.retrieve_rows(target)
                        self.stock_move_row(target)
                    if "dicomweb" in groups and target.dicomweb_root:
                        self.dicomweb_rows(target)
                    self.extras_s += time.monotonic() - extras_start
                if first:
                    # Last: it adds studies the query rows above do not expect. What it should
                    # leave is what the target holds now (the first repetition's STOW-RS
                    # sample included) and its own objects.
                    extras_start = time.monotonic()
                    self.stock_ingest_row(target, expected_total=target.stored_count())
                    self.extras_s += time.monotonic() - extras_start
            finally:
                target.stop()
                target.cleanup()

        self.guard(target, "ingest", f"rep{rep}", body)

    def stow_samples_in(self, rep: int) -> range:
        """The STOW-RS samples repetition `rep` takes: spread over the repetitions planned (the
        targets take turns in each, so the load of other work on a shared machine falls on
        every target alike, as for the ingest rows); all of them when one is planned. A
        repetition the time budget skips takes its samples with it."""
        n = self.plan.stow_samples
        per = -(-n // max(1, self.plan.reps))
        return range(min(rep * per, n), min((rep + 1) * per, n))

    @property
    def ct_n(self) -> int:
        assert self.corpus
        return len(self.corpus.sets["ct"].files)

    @property
    def tiny_n(self) -> int:
        assert self.corpus
        return len(self.corpus.sets["tiny"].files)

    # -- rows -----------------------------------------------------------------------------------

    def record(self, group: str, row: str, target: Target, unit: str, better: str) -> Record:
        existing = self.results.find(group, row, target.name)
        return existing or self.results.add(Record(group, row, target.name, unit, better))

    def ingest(self, target: Target, row: str, set_name: str, expected_total: int) -> None:
        assert self.corpus
        self.store_sample(target, row, self.corpus.paths(set_name),
                          self.corpus.sets[set_name].bytes, expected_total)

    def store_sample(self, target: Target, row: str, files: list[Path], size: int,
                     expected_total: int, n: int = 4, nodelay: bool = True) -> None:
        """One sample of an ingest row: `files` (`size` bytes) by `n` storescu at once."""
        log(f"{target.name}: {row} of {len(files)} files")
        with TreeSampler(target.pid) as sampler:
            run = clients.storescu_parallel(files, target.dicom_port, target.aet, n=n,
                                            log_dir=self.work, nodelay=nodelay)
        usage = sampler.usage
        assert usage is not None
        stored = target.stored_count()
        rate = len(files) / run.seconds
        rec = self.record("ingest", row, target, "inst/s", "higher")
        rec.values.append(round(rate, 1))
        d = rec.detail
        d.setdefault("MB/s", []).append(round(size / MB / run.seconds, 1))
        d.setdefault("seconds", []).append(round(run.seconds, 2))
        d.setdefault("server_cpu_s", []).append(usage.cpu_s)
        d.setdefault("peak_rss_MB", []).append(round(usage.peak_rss_bytes / MB, 1))
        d.setdefault("peak_pss_MB", []).append(round(usage.peak_pss_bytes / MB, 1))
        d.setdefault("stored/expected", []).append(f"{stored}/{expected_total}")
        if stored != expected_total or any(run.returncodes):
            rec.status = WRONG
            d["storescu_exit"] = run.returncodes
            if run.errors:
                d["errors"] = run.errors[:300]
        log(f"{target.name}: {row} {rate:.0f} inst/s, cpu {usage.cpu_s:.1f} s, "
            f"peak RSS {usage.peak_rss_bytes / MB:.0f} MB (PSS {usage.peak_pss_bytes / MB:.0f}), "
            f"stored {stored}/{expected_total}")

    def find_rows(self, target: Target, group: str, per_kind: int, scale: int = 0) -> None:
        studies = population(self.plan.spec, scale)
        rec = self.record(group, "c_echo_association", target, "ms", "lower")
        for _ in range(self.plan.echo_n):
            rec.values.append(round(clients.echo_ms(target.dicom_port, target.aet), 2))
        queries = study_queries(studies, per_kind, self.plan.find_broad)
        for kind, qs in queries.items():
            rec = self.record(group, kind, target, "ms", "lower")
            mismatches = 0
            matches = []
            for q in qs:
                ms, n, _ = clients.cfind(target.dicom_port, target.aet, q.keys)
                rec.values.append(round(ms, 2))
                matches.append(n)
                if n != q.expected:
                    mismatches += 1
            rec.detail["mean_matches"] = round(sum(matches) / len(matches), 1)
            rec.detail["count_mismatches"] = mismatches
            if mismatches:
                rec.status = WRONG
                bad = [(q.keys, q.expected, n) for q, n in zip(qs, matches) if n != q.expected]
                rec.detail["first_mismatch"] = str(bad[0])
            s = rec.summary
            log(f"{target.name}: {kind} median {s.median if s else 0:.1f} ms, "
                f"{mismatches} mismatches")

    def retrieve_rows(self, target: Target) -> None:
        assert self.peer is not None and self.corpus is not None
        uid = study_meta(0, "ct").study_uid
        n = self.plan.spec.ct_series * self.plan.spec.ct_per_series
        size = self.corpus.sets["ct"].bytes * n / self.ct_n
        for kind in ("c_move", "c_get"):
            for _ in range(self.plan.retrieve_reps):
                self.retrieve_sample(target, kind, kind, self.peer, uid, n, size)
        shutil.rmtree(self.work / "get-received", ignore_errors=True)
        self.peer.clear()

    def retrieve_sample(self, target: Target, row: str, kind: str, peer: PeerStorescp,
                        uid: str, n: int, size: float) -> None:
        """One sample of a retrieve row: a C-MOVE of study `uid` (`n` instances, `size`
        bytes) to `peer`, or a C-GET of it."""
        rec = self.record("retrieve", row, target, "inst/s", "higher")
        dest = self.work / "get-received"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        peer.clear()
        with TreeSampler(target.pid) as sampler:
            run = clients.retrieve(kind, target.dicom_port, target.aet, uid, dest,
                                   move_destination=peer.aet)
        got = peer.received() if kind == "c_move" else sum(
            1 for p in dest.iterdir() if p.is_file())
        rec.values.append(round(n / run.seconds, 1))
        d = rec.detail
        d.setdefault("seconds", []).append(round(run.seconds, 3))
        d.setdefault("MB/s", []).append(round(size / MB / run.seconds, 1))
        d.setdefault("server_cpu_s", []).append(sampler.usage.cpu_s if sampler.usage else None)
        d.setdefault("received/expected", []).append(f"{got}/{n}")
        if got != n or run.returncodes[0] != 0:
            rec.status = WRONG
            d["errors"] = run.errors[:300] or f"exit {run.returncodes[0]}"
            d["server_log_tail"] = target.log_tail(6)[-600:]
        log(f"{target.name}: {row} {rec.values[-1]} inst/s, received {got}/{n}")

    # -- DCMTK as Debian runs it (no TCP_NODELAY) ---------------------------------------------
    #
    # The rows above run every DCMTK tool with TCP_NODELAY=1, as the issue asks: without it a
    # sender whose peer delays its ACKs waits ~40 ms per message (Nagle). These two rows show
    # what a site gets with the tools as installed: one storescu sending tiny objects, and a
    # C-MOVE to a storescp, neither with TCP_NODELAY. One sample each.

    STOCK_N = 200

    def stock_files(self) -> list[Path]:
        """STOCK_N tiny objects under UIDs no other row stores (the last STOW-RS root)."""
        folder = self.work / "stock-tiny"
        if not folder.exists():
            folder.mkdir()
            for i, path in enumerate(self.corpus.paths("tiny")[:self.STOCK_N]):  # type: ignore[union-attr]
                (folder / f"{i:04d}.dcm").write_bytes(
                    moved_uids(path.read_bytes(), "tiny", STOW_SAMPLES - 1))
        return sorted(folder.iterdir())

    def stock_ingest_row(self, target: Target, expected_total: int) -> None:
        files = self.stock_files()
        self.store_sample(target, "tiny_ingest_stock_storescu", files,
                          sum(p.stat().st_size for p in files), expected_total + len(files),
                          n=1, nodelay=False)

    def stock_move_row(self, target: Target) -> None:
        if self.stock_peer is None:
            return
        assert self.corpus is not None
        n = self.plan.spec.ct_series * self.plan.spec.ct_per_series
        self.retrieve_sample(target, "c_move_stock_storescp", "c_move", self.stock_peer,
                             study_meta(0, "ct").study_uid, n,
                             self.corpus.sets["ct"].bytes * n / self.ct_n)
        self.stock_peer.clear()

    def dicomweb_rows(self, target: Target) -> None:
        assert self.corpus is not None and target.dicomweb_root is not None
        root = target.dicomweb_root
        study = study_meta(0, "ct").study_uid
        series = series_uid(study, 1)
        metadata_accept = "application/dicom+json"
        checks = {
            "series_metadata": (f"{root}/studies/{study}/series/{series}/metadata",
                                metadata_accept),
            "study_metadata": (f"{root}/studies/{study}/metadata", metadata_accept),
        }
        for name, (path, accept) in checks.items():
            # Cold: first request after the server (re)started; the page cache is not dropped.
            target.restart()
            http = clients.Http(target.http_port)
            first = http.get(path, accept)
            cold = self.record("dicomweb", f"{name}_cold", target, "ms", "lower")
            warm = self.record("dicomweb", f"{name}_warm", target, "ms", "lower")
            if first.status != 200:
                for rec in (cold, warm):
                    rec.status = NOT_AVAILABLE
                    rec.detail["http_status"] = first.status
                log(f"{target.name}: {name} not available (HTTP {first.status})")
                http.close()
                continue
            cold.values.append(round(first.ms, 2))
            items = _json_len(first.body)
            cold.detail.update({"instances": items, "json_MB": round(len(first.body) / MB, 2)})
            for _ in range(self.plan.web_warm):
                r = http.get(path, accept)
                warm.values.append(round(r.ms, 2))
            warm.detail["instances"] = items
            http.close()
            log(f"{target.name}: {name} cold {first.ms:.0f} ms, warm median "
                f"{warm.summary.median if warm.summary else 0:.0f} ms, {items} instances")
        http = clients.Http(target.http_port)
        try:
            self.qido_row(target, http, root)
            self.frame_row(target, http, root, study, series)
            self.whole_study_row(target, http, root, study)
        finally:
            http.close()
        self.stow_row(target, root, self.stow_samples_in(0))

    def _unavailable(self, rec: Record, status: int, body: bytes) -> None:
        rec.status = NOT_AVAILABLE
        rec.detail["http_status"] = status
        rec.detail["body"] = body[:120].decode("utf-8", "replace")
        log(f"{rec.target}: {rec.row} not available (HTTP {status})")

    def qido_row(self, target: Target, http: clients.Http, root: str) -> None:
        rec = self.record("dicomweb", "qido_study_list_limit101", target, "ms", "lower")
        path = (f"{root}/studies?limit=101&offset=0&fuzzymatching=false"
                f"&includefield=00081030%2C00080060")
        expected = min(101, len(population(self.plan.spec)))
        for _ in range(self.plan.web_warm * 2):
            r = http.get(path, "application/dicom+json")
            if r.status != 200:
                return self._unavailable(rec, r.status, r.body)
            rec.values.append(round(r.ms, 2))
            n = _json_len(r.body)
            if n != expected:
                rec.status = WRONG
                rec.detail["results/expected"] = f"{n}/{expected}"
        rec.detail.setdefault("results", expected)

    def frame_row(self, target: Target, http: clients.Http, root: str, study: str,
                  series: str) -> None:
        rec = self.record("dicomweb", "one_frame", target, "ms", "lower")
        accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
        for i in range(1, self.plan.web_warm * 2 + 1):
            sop = sop_uid(study, 1, i)
            r = http.get(f"{root}/studies/{study}/series/{series}/instances/{sop}/frames/1",
                         accept)
            if r.status != 200:
                return self._unavailable(rec, r.status, r.body)
            rec.values.append(round(r.ms, 2))
            rec.detail["body_bytes"] = len(r.body)

    def whole_study_row(self, target: Target, http: clients.Http, root: str,
                        study: str) -> None:
        rec = self.record("dicomweb", "whole_study", target, "MB/s", "higher")
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        n = self.plan.spec.ct_series * self.plan.spec.ct_per_series
        for _ in range(self.plan.retrieve_reps):
            r = http.get(f"{root}/studies/{study}", accept)
            if r.status != 200:
                return self._unavailable(rec, r.status, r.body)
            rec.values.append(round(len(r.body) / MB / (r.ms / 1000), 1))
            parts = clients.count_parts(r.body, r.content_type)
            rec.detail.setdefault("seconds", []).append(round(r.ms / 1000, 3))
            rec.detail["MB"] = round(len(r.body) / MB, 1)
            rec.detail["parts/expected"] = f"{parts}/{n}"
            if parts != n:
                rec.status = WRONG

    def stow_row(self, target: Target, root: str, samples: range) -> None:
        """300 CT instances in requests of 25, once per sample of `samples` (see
        :meth:`stow_samples_in`): each sample sends the ``stow`` study under UIDs of its own
        (:func:`stow_sample`), so each stores instances the target does not hold yet. The row's
        value is the median of the samples' rates."""
        assert self.corpus is not None
        rec = self.record("dicomweb", "stow_rs_batch25", target, "inst/s", "higher")
        files = self.corpus.paths("stow")
        batch = self.plan.stow_batch
        d = rec.detail
        for sample in samples:
            before = target.stored_count()
            bodies = [clients.multipart_dicom(files[i:i + batch],
                                              functools.partial(stow_sample, sample=sample))
                      for i in range(0, len(files), batch)]
            with TreeSampler(target.pid) as sampler:
                elapsed, failed = clients.stow_requests(target.http_port, root, bodies)
            if failed is not None:
                return self._unavailable(rec, failed.status, failed.body)
            del bodies
            stored = target.stored_count() - before
            usage = sampler.usage
            rec.values.append(round(len(files) / elapsed, 1))
            d["requests"] = len(files) // batch + (1 if len(files) % batch else 0)
            d.setdefault("MB/s", []).append(
                round(self.corpus.sets["stow"].bytes / MB / elapsed, 1))
            d.setdefault("seconds", []).append(round(elapsed, 3))
            d.setdefault("server_cpu_s", []).append(usage.cpu_s if usage else None)
            d.setdefault("server_cpu_ms_per_instance", []).append(
                round(usage.cpu_s * 1000 / len(files), 2) if usage else None)
            d.setdefault("peak_rss_MB", []).append(
                round(usage.peak_rss_bytes / MB, 1) if usage else None)
            d.setdefault("stored/expected", []).append(f"{stored}/{len(files)}")
            if stored != len(files):
                rec.status = WRONG
            d.setdefault("sample", []).append(sample + 1)
            log(f"{target.name}: STOW-RS sample {sample + 1}/{self.plan.stow_samples} "
                f"{rec.values[-1]} inst/s, server CPU "
                f"{usage.cpu_s if usage else 0:.2f} s, stored {stored}/{len(files)}")

    def big(self, target: Target) -> None:
        assert self.corpus is not None
        self.start_fresh(target, "big")
        try:
            files = self.corpus.paths("big")
            size = self.corpus.sets["big"].bytes
            rec = self.record("big", "big_instance_rss_growth", target, "MB", "lower")
            rate = self.record("big", "big_instance_seconds", target, "s", "lower")
            log(f"{target.name}: one {size / MB:.0f} MB instance")
            with TreeSampler(target.pid, interval=0.02) as sampler:
                run = clients.storescu_parallel(files, target.dicom_port, target.aet, n=1,
                                                log_dir=self.work)
            usage = sampler.usage
            assert usage is not None
            stored = target.stored_count()
            rec.values.append(round(usage.rss_growth_bytes / MB, 1))
            rate.values.append(round(run.seconds, 2))
            rec.detail.update({"instance_MB": round(size / MB), "start_rss_MB":
                               round(usage.start_rss_bytes / MB, 1),
                               "peak_rss_MB": round(usage.peak_rss_bytes / MB, 1),
                               "peak_pss_MB": round(usage.peak_pss_bytes / MB, 1),
                               "VmHWM_MB": round(usage.hwm_bytes / MB, 1),
                               "stored/expected": f"{stored}/1"})
            if stored != 1 or any(run.returncodes):
                rec.status = rate.status = WRONG
                rec.detail["errors"] = run.errors[:300] or f"exit {run.returncodes}"
            log(f"{target.name}: big instance in {run.seconds:.1f} s, RSS growth "
                f"{usage.rss_growth_bytes / MB:.0f} MB, stored {stored}")
        finally:
            target.stop()
            target.cleanup()

    def scale(self, target: Target) -> None:
        """Populate a large index (the scale set, plus CT and tiny), then the C-FIND rows."""
        assert self.corpus is not None
        n = self.args.scale
        label = f"scale{n}"
        self.start_fresh(target, label)
        try:
            t0 = time.perf_counter()
            if target.name.startswith("archivist") and not self.args.scale_via_storescu:
                # Fast population while the server runs: `archivist import` of the CT and tiny
                # folders (the ingest pipeline), then the scale set by bench/populate.py (the
                # index's own extraction and group-committed add_instances, no blobs).
                data = target.workdir / "data"  # type: ignore[operator]
                for set_name in ("ct", "tiny"):
                    _import(data, [self.corpus.root / set_name])
                spec = self.plan.spec
                run = populate(data, spec.scale_first_g, scale_studies(n, spec),
                               spec.tiny_per_study, processes=self.args.populate_processes,
                               mode=self.args.populate_mode, log=log)
                method = (f"archivist import (ct, tiny) + bench.populate --mode "
                          f"{self.args.populate_mode} ({run.stored / run.seconds:.0f} inst/s)")
            else:
                clients.storescu_parallel(self.corpus.paths("ct"), target.dicom_port,
                                          target.aet, log_dir=self.work)
                clients.storescu_parallel(self.corpus.paths("tiny"), target.dicom_port,
                                          target.aet, log_dir=self.work)
                fs = self.corpus.sets[f"scale-{n}"]
                clients.storescu_dirs([self.corpus.root / s for s in fs.shards],
                                      target.dicom_port, target.aet)
                method = "4 storescu"
            populated = target.stored_count()
            expected = (self.ct_n + self.tiny_n
                        + scale_studies(n, self.plan.spec) * self.plan.spec.tiny_per_study)
            log(f"{target.name}: populated {populated}/{expected} instances in "
                f"{time.perf_counter() - t0:.0f} s by {method}")
            self.find_rows(target, "scale", self.plan.find_per_kind, scale=n)
            for r in self.results.records:
                if r.group == "scale" and r.target == target.name:
                    r.detail.update({"populated/expected": f"{populated}/{expected}",
                                     "populate_s": round(time.perf_counter() - t0),
                                     "method": method})
        finally:
            target.stop()
            target.cleanup()

    def profile(self) -> None:
        """py-spy on archivist serve while the CT and tiny corpora are stored (see profile.py)."""
        from bench.profile import profile_ingest

        assert self.corpus is not None
        for target in self.targets:
            if not target.name.startswith("archivist"):
                continue
            self.start_fresh(target, "profile")
            try:
                out = Path(self.args.out) / f"{self.stamp}-profile"
                for set_name in ("ct", "tiny"):
                    label = f"{target.name}-{set_name}"
                    summary = profile_ingest(target, self.corpus.paths(set_name), out, label,
                                             self.work)
                    self.results.meta.setdefault("profile", {})[label] = summary
            finally:
                target.stop()
                target.cleanup()


def _import(data: Path, folders: list[Path]) -> None:
    out = subprocess.run([sys.executable, "-m", "archivist.cli.main", "import", "--data",
                          str(data), "--quiet", *map(str, folders)],
                         check=False, capture_output=True, text=True)
    if out.returncode not in (0,):
        raise RuntimeError(f"archivist import failed ({out.returncode}): {out.stderr[-500:]}")


def _json_len(body: bytes) -> int:
    import json

    try:
        value = json.loads(body)
    except ValueError:
        return -1
    return len(value) if isinstance(value, list) else -1


def _mem_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small corpus, one repetition (about 3 minutes)")
    p.add_argument("--targets", default="archivist,orthanc,storescp,pynetdicom",
                   help="comma-separated subset of: " + ",".join(ALL_TARGETS))
    p.add_argument("--only", help="comma-separated groups: ingest,find,dicomweb,retrieve,big")
    p.add_argument("--skip", help="comma-separated groups to leave out")
    p.add_argument("--reps", type=int, help="ingest repetitions (default 3, --quick 1)")
    p.add_argument("--stow-samples", type=int,
                   help="STOW-RS samples of 300 new instances each, the row's value their "
                        f"median (default 3, at most {STOW_SAMPLES})")
    p.add_argument("--budget", type=float,
                   help="seconds; further ingest repetitions are skipped when one more would "
                        "overrun it (default 1080 = 18 min, --quick 150)")
    p.add_argument("--scale", type=int, default=0,
                   help="also populate N tiny instances and repeat the C-FIND rows")
    p.add_argument("--scale-via-storescu", action="store_true",
                   help="populate Archivist with storescu too instead of `archivist import`")
    p.add_argument("--populate-mode", choices=("index", "ingest"), default="index",
                   help="how bench/populate.py fills Archivist for --scale: index (rows through "
                        "Index.add_instances, no blobs; default) or ingest (Ingest.store_bytes)")
    p.add_argument("--populate-processes", type=int, default=2,
                   help="worker processes of the --scale population (default 2)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy record on archivist serve during ingest")
    p.add_argument("--cache", default=os.environ.get("ARCHIVIST_BENCH_CACHE",
                                                     "/var/tmp/archivist-bench"),
                   help="where the generated corpus is kept between runs")
    p.add_argument("--workdir", default=os.environ.get("ARCHIVIST_BENCH_WORK",
                                                       "/tmp/archivist-bench"),
                   help="where targets keep their data during the run")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--note", help="free text stored with the results")
    args = p.parse_args(argv)
    if args.stow_samples is not None and not 1 <= args.stow_samples <= STOW_SAMPLES:
        p.error(f"--stow-samples: from 1 to {STOW_SAMPLES} (each sends the STOW "
                "study under UIDs of its own)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.budget is None:
        args.budget = 150.0 if args.quick else 1080.0
    for tool in ("storescu", "storescp", "movescu", "getscu"):
        try:
            dcmtk(tool)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    os.environ.setdefault("PYTHONPATH", "")
    md = Bench(args).run()
    print(md.read_text())
    return 0
