"""Measure what validation on ingest costs: DCMTK storescu sends a CT corpus to a real
``archivist serve`` with ``validation_policy`` off and warn (runs interleaved), median of N.

    uv run --frozen python tools/bench_validation_ingest.py [--count 300] [--runs 3]
        [--size 512] [--incomplete] [--in-process] [--work DIR]
    uv run --frozen python tools/bench_validation_ingest.py --headers [GLOB ...] [--count 300]
        [--runs 7]

The corpus: generated CT images, 16 bits, SIZE x SIZE, one study, one series. By default they
carry every attribute the CT Image IOD requires (as a modality's would: no findings); with
``--incomplete`` the Image Plane attributes and others are left out, so each object gets about a
dozen error findings to write (a worst case for the findings table).

Wall time through the network is at the mercy of the disk (every object is fsync'd twice) and
of whatever else the machine runs, so the server's CPU time is reported too. ``--in-process``
calls ``Ingest.store_file`` directly (no network, no server) and reports the CPU time of the
ingesting thread per object, the steadiest figure on a shared machine.

``--headers`` measures the validator alone, as ingest calls it: each file of the globs (default:
the tiny MR and the 512x512 CT of the bench corpus) is read with ``stop_before_pixels``, then
``validate_on_ingest`` runs once on each fresh header; the CPU time of the validating thread per
header is reported, median of the runs. Headers are read anew for every run, since pydicom keeps
the values it converts.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pydicom

from archivist.archive.validation import PixelDataInfo
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

COMPLETE_CT = {
    "PatientPosition": "HFS", "PositionReferenceIndicator": "", "SliceThickness": "1.0",
    "ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "PixelSpacing": [0.5, 0.5], "KVP": "120",
    "RescaleIntercept": "-1024", "RescaleSlope": "1", "AcquisitionNumber": 1,
}


def make_corpus(folder: Path, count: int, size: int, complete: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = new_uid(), new_uid(), new_uid()
    pixels = bytes(range(256)) * (size * size * 2 // 256)
    for i in range(count):
        path = folder / f"ct{i:04d}.dcm"
        extra = dict(COMPLETE_CT, FrameOfReferenceUID=frame,
                     ImagePositionPatient=[0, 0, float(i)]) if complete else {}
        make_instance(path, study_uid=study, series_uid=series, instance_number=i + 1,
                      extra=extra, rows=4, columns=4)
        ds = pydicom.dcmread(path)
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels
        ds.save_as(path, enforce_file_format=True)


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every process in the server's process group (Linux /proc)."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def one_run(corpus: Path, work: Path, policy: str, storescu: str) -> tuple[float, float]:
    data = work / f"data-{policy}"
    shutil.rmtree(data, ignore_errors=True)
    srv = ServerProcess(data, env={"ARCHIVIST_VALIDATION_POLICY": policy,
                                   "ARCHIVIST_LOG_LEVEL": "WARNING"}).start()
    try:
        # Warm up (first association, validator tables, terminology) with one object.
        files = sorted(map(str, corpus.iterdir()))
        subprocess.run([storescu, "-aec", "ARCHIVIST", "127.0.0.1", str(srv.dicom_port),
                        files[0]], check=True, capture_output=True)
        assert srv.proc is not None
        cpu = group_cpu_seconds(srv.proc.pid)
        start = time.perf_counter()
        subprocess.run([storescu, "-aec", "ARCHIVIST", "127.0.0.1", str(srv.dicom_port),
                        *files[1:]], check=True, capture_output=True)
        elapsed = time.perf_counter() - start
        return elapsed, group_cpu_seconds(srv.proc.pid) - cpu
    finally:
        srv.stop()
        shutil.rmtree(data, ignore_errors=True)


def one_run_in_process(corpus: Path, work: Path, policy: str) -> tuple[float, float]:
    """Wall and thread CPU seconds for ``Ingest.store_file`` over the corpus (first one excluded)."""
    from archivist.archive.archive import Archive
    from archivist.archive.ingest import Origin
    from archivist.config import load_settings

    data = work / f"inproc-{policy}"
    shutil.rmtree(data, ignore_errors=True)
    archive = Archive.open(load_settings(env={}, overrides={"data_dir": data,
                                                            "validation_policy": policy}))
    try:
        files = sorted(corpus.iterdir())
        archive.ingest.store_file(files[0], Origin("import"))  # warm up
        cpu, start = time.thread_time(), time.perf_counter()
        for path in files[1:]:
            archive.ingest.store_file(path, Origin("import"))
        return time.perf_counter() - start, time.thread_time() - cpu
    finally:
        archive.close()
        shutil.rmtree(data, ignore_errors=True)


BENCH_CORPUS = "/var/tmp/archivist-bench/corpus-4d0c93e06a73"
HEADER_GLOBS = {
    "tiny MR": f"{BENCH_CORPUS}/tiny/shard*/*/*.dcm",
    "512x512 CT": f"{BENCH_CORPUS}/ct/*/*/*.dcm",
}


def bench_headers(globs: dict[str, str], count: int, runs: int) -> None:
    """Print the validation CPU time per header (ms), median of `runs`, for each glob.

    Two forms of the header: as ``dcmread(stop_before_pixels=True)`` leaves it (values raw), and
    with every value decoded, as ``Ingest`` hands it to the validator.
    """
    import glob
    import warnings

    from archivist.archive.validation import validate_on_ingest

    for name, pattern in globs.items():
        files = sorted(glob.glob(pattern))[:count]
        if not files:
            print(f"{name}: no files match {pattern}")
            continue
        pixel = [_pixel_info(f) for f in files]
        for form in ("raw", "decoded"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                validate_on_ingest(pydicom.dcmread(files[0], stop_before_pixels=True), None)
                per_header: list[float] = []
                findings = 0
                for _ in range(runs):
                    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
                    if form == "decoded":
                        for ds in headers:
                            for elem in ds:
                                _ = elem.value
                    start = time.thread_time()
                    for ds, info in zip(headers, pixel, strict=True):
                        findings += len(validate_on_ingest(ds, info))
                    per_header.append((time.thread_time() - start) / len(headers) * 1000)
            print(f"{name} ({form}): {len(files)} headers, validation "
                  f"{statistics.median(per_header):.3f} ms/header (median of {runs}; "
                  f"{min(per_header):.3f}-{max(per_header):.3f}), "
                  f"{findings / runs / len(files):.1f} findings/header", flush=True)


def _pixel_info(path: str) -> PixelDataInfo | None:
    """The pixel data element as ingest notes it: tag and length, value not read."""
    ds = pydicom.dcmread(path, defer_size=1024)
    for tag in (0x7FE00008, 0x7FE00009, 0x7FE00010):
        raw = ds._dict.get(tag)  # the raw element, its value unread
        if raw is not None:
            return PixelDataInfo(tag, int(getattr(raw, "length", 0) or 0))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--incomplete", action="store_true")
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--headers", nargs="*", metavar="GLOB", default=None,
                        help="measure validate_on_ingest alone on these files' headers "
                        "(default: the bench corpus's tiny MR and 512x512 CT)")
    args = parser.parse_args()
    if args.headers is not None:
        globs = {g: g for g in args.headers} if args.headers else HEADER_GLOBS
        bench_headers(globs, args.count, args.runs)
        return
    storescu = shutil.which("storescu", path="/usr/bin:/usr/local/bin") or "storescu"
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-validation-"))
    corpus = work / f"corpus-{args.count}-{args.size}-{'inc' if args.incomplete else 'full'}"
    if not corpus.exists():
        make_corpus(corpus, args.count, args.size, not args.incomplete)
    times: dict[str, list[float]] = {"off": [], "warn": []}
    cpus: dict[str, list[float]] = {"off": [], "warn": []}
    for run in range(args.runs):
        for policy in ("off", "warn"):
            if args.in_process:
                elapsed, cpu = one_run_in_process(corpus, work, policy)
            else:
                elapsed, cpu = one_run(corpus, work, policy, storescu)
            times[policy].append(elapsed)
            cpus[policy].append(cpu)
            rate = (args.count - 1) / elapsed
            print(f"run {run + 1} {policy:<4} {elapsed:7.2f} s wall  {rate:6.1f} objects/s  "
                  f"{'thread' if args.in_process else 'server'} CPU {cpu:6.2f} s", flush=True)
    what = (f"{args.count - 1} objects of {args.size}x{args.size}x16 bits, "
            f"{'incomplete' if args.incomplete else 'complete'} CT")
    cpu_name = "ingest thread CPU (in process)" if args.in_process else "server CPU"
    for name, series in (("wall time", times), (cpu_name, cpus)):
        off, warn = statistics.median(series["off"]), statistics.median(series["warn"])
        n = args.count - 1
        print(f"median {name}: off {off:.2f} s ({off / n * 1000:.1f} ms/object), warn {warn:.2f} s "
              f"({warn / n * 1000:.1f} ms/object): validation costs "
              f"{(warn - off) / off * 100:+.1f} % ({what})")


if __name__ == "__main__":
    main()
