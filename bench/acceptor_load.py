"""Issue 11's load targets against a default `archivist serve` (one worker per core):
200 idle associations (server CPU, C-ECHO on them, a new association), 1,000 silent
connections (a real association admitted, memory, ARTIM closing them).

    uv run --frozen python -m bench.acceptor_load uvloop     # or asyncio (event_loop setting)

It reuses the raw-PDU helpers of tests/integration/test_acceptor_load.py, whose loose bounds
run in CI; this prints the figures (docs/performance.md, session 7).
"""

from __future__ import annotations

import importlib.util
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from archivist.testing.procs import cpu_seconds, rss_kb, tree
from archivist.testing.server import ServerProcess

REPO = Path(__file__).resolve().parent.parent


def _helpers():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    spec = importlib.util.spec_from_file_location(
        "acceptor_load_helpers", REPO / "tests" / "integration" / "test_acceptor_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_rss_mb(pid: int) -> float:
    return sum(rss_kb(p) for p in tree(pid)) / 1024


def main(loop: str = "auto") -> None:
    load = _helpers()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))
    env = {"ARCHIVIST_EVENT_LOOP": loop}  # default limits, as `make serve` runs
    srv = ServerProcess(Path(tempfile.mkdtemp()) / "data", env=env).start()
    assert srv.proc is not None
    try:
        idle = [load.open_association(srv.dicom_port) for _ in range(200)]
        time.sleep(1)
        c0 = cpu_seconds(srv.proc.pid)
        time.sleep(10)
        share = (cpu_seconds(srv.proc.pid) - c0) / 10
        echoes = [load.raw_echo(idle[i], i + 1) * 1e3 for i in range(0, 200, 5)]
        new = [load.echo_association(srv.dicom_port) * 1e3 for _ in range(20)]
        raw = []  # the same with raw PDUs: the server's answer, without pynetdicom's polling
        for i in range(20):
            t0 = time.perf_counter()
            s = load.open_association(srv.dicom_port)
            load.raw_echo(s, 1)
            raw.append((time.perf_counter() - t0) * 1e3)
            s.close()
        print(f"{loop}: 200 idle: server tree CPU {share:.2%} of a core; C-ECHO on idle "
              f"associations median {statistics.median(echoes):.2f} ms, max {max(echoes):.2f}; "
              f"new association + C-ECHO + release (pynetdicom SCU) median "
              f"{statistics.median(new):.1f} ms, max {max(new):.1f}; new association + C-ECHO "
              f"answered (raw PDUs) median {statistics.median(raw):.2f} ms, max {max(raw):.2f}")
        for s in idle:
            s.close()
        time.sleep(2)
        before = tree_rss_mb(srv.proc.pid)
        silent = [socket.create_connection(("127.0.0.1", srv.dicom_port)) for _ in range(1000)]
        time.sleep(0.3)
        t0 = time.monotonic()
        s = load.open_association(srv.dicom_port)
        load.raw_echo(s, 1)
        s.close()
        admit = time.monotonic() - t0
        growth = tree_rss_mb(srv.proc.pid) - before
        t1 = time.monotonic()
        deadline, closed, last = t1 + 25, 0, t1
        for c in silent:
            c.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if c.recv(1) == b"":
                    closed, last = closed + 1, time.monotonic()
            except ConnectionResetError:
                closed, last = closed + 1, time.monotonic()
            except OSError:
                pass
        print(f"{loop}: 1000 silent connections: a real association + C-ECHO in "
              f"{admit * 1e3:.1f} ms; tree RSS growth {growth:.1f} MB; {closed}/1000 closed by "
              f"ARTIM, the last {last - t1 + 0.3:.1f} s after they opened")
        for c in silent:
            c.close()
    finally:
        srv.stop()


if __name__ == "__main__":
    main(*sys.argv[1:2])
