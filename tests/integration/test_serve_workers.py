"""``archivist serve`` with several worker processes sharing the DICOM and HTTP ports: limits
hold for the whole server, a dead worker is replaced, and nothing outlives the supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from archivist.testing import procs
from archivist.testing.datasets import make_instance
from archivist.testing.rawpdu import rejection
from archivist.testing.server import ServerProcess, free_port

pytestmark = pytest.mark.timeout(180)


def _ae() -> AE:
    ae = AE(ae_title="WORKERS")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    # Generous: an association may land on a worker that is still starting on a loaded machine.
    ae.acse_timeout = 60
    # No idle limit: pynetdicom aborts an association idle for network_timeout, and a held one
    # dropped by our own client (10 s used to be enough under load) frees a place, letting
    # in the association that must be refused.
    ae.network_timeout = None
    return ae


def _workers(srv: ServerProcess) -> list[int]:
    assert srv.proc is not None
    return [p for p in procs.tree(srv.proc.pid) if p != srv.proc.pid]


def _wait(predicate, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _outcome(assoc, srv: ServerProcess) -> str:  # type: ignore[no-untyped-def]
    """How an association attempt ended, with the server's log, for an assertion message."""
    state = [k for k in ("is_established", "is_rejected", "is_aborted") if getattr(assoc, k)]
    return f"{state or 'no outcome'}; server log:\n{srv.log()[-4000:]}"


def test_serve_runs_the_configured_workers(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server("--workers", "3")
    assert _wait(lambda: len(_workers(srv)) == 3)
    assert _wait(lambda: "3 worker processes" in srv.log())
    assert srv.stop() == 0
    assert "Traceback" not in srv.log()


def test_the_supervisor_holds_none_of_the_worker_stack(make_server) -> None:  # type: ignore[no-untyped-def]
    """The supervisor re-executes itself lean and the workers come from a zygote: neither the
    command-line parser's libraries (typer, pydantic) nor the archive's (numpy, SQLite) are
    loaded in it, while every worker has the archive's."""
    srv = make_server("--workers", "2")
    assert _wait(lambda: len(_workers(srv)) == 2)
    assert srv.proc is not None

    def mapped(pid: int) -> str:
        return Path(f"/proc/{pid}/maps").read_text()

    supervisor = mapped(srv.proc.pid)
    for library in ("_pydantic_core", "_multiarray_umath", "libsqlite3", "_sqlite3"):
        assert library not in supervisor, library
    for pid in _workers(srv):
        assert "_multiarray_umath" in mapped(pid) and "_sqlite3" in mapped(pid)
        # pydicom would import `requests` (and charset_normalizer's compiled modules) for its
        # test-file downloads: ~5 MB per worker that the archive never uses.
        assert "charset_normalizer" not in mapped(pid)
    assert "--supervise-fd" in Path(f"/proc/{srv.proc.pid}/cmdline").read_text()
    assert srv.stop() == 0


def test_a_worker_stack_that_cannot_load_stops_serve_with_the_reason(tmp_path: Path) -> None:
    """The zygote loads what the workers run; when that fails there are no workers, and the
    supervisor says so and exits 1 instead of exiting 0 with nobody serving."""
    shadow = tmp_path / "shadow" / "uvicorn"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("uvicorn broken on purpose")\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}
    done = subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "serve", "--data", str(tmp_path / "data"),
         "--dicom-port", str(free_port()), "--http-port", str(free_port()), "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "uvicorn broken on purpose" in done.stderr
    assert "no worker process could start" in done.stderr


def test_max_associations_is_a_limit_for_the_whole_server(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server("--workers", "2", env={"ARCHIVIST_MAX_ASSOCIATIONS": "3"})
    ae = _ae()
    held = []
    for _ in range(3):
        a = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
        assert a.is_established
        held.append(a)
    # With two workers each would admit 3 if the count were per process: 6 in all.
    # On a raw socket (rawpdu says why): an A-ASSOCIATE-RJ, transient, by the service provider
    # (presentation), local limit exceeded.
    assert rejection(srv.dicom_port, calling="WORKERS") == (2, 3, 2), srv.log()[-4000:]
    extra = [ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST") for _ in range(3)]
    assert not any(a.is_established for a in extra), [_outcome(a, srv) for a in extra]
    held.pop().release()

    def admitted() -> bool:
        a = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
        if a.is_established:
            held.append(a)
            return True
        return False

    assert _wait(admitted)
    for a in held:
        a.release()


def test_a_dead_worker_is_replaced_and_stores_go_on(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv = make_server("--workers", "2")
    assert _wait(lambda: len(_workers(srv)) == 2)
    victim = _workers(srv)[0]
    os.kill(victim, signal.SIGKILL)
    assert _wait(lambda: victim not in _workers(srv) and len(_workers(srv)) == 2)
    assert _wait(srv.healthy)
    ae = _ae()
    for i in range(6):  # new associations land on either worker
        path = tmp_path / f"i{i}.dcm"
        make_instance(path)
        from pydicom import dcmread

        a = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
        assert a.is_established
        assert a.send_c_store(dcmread(path)).Status == 0
        a.release()
    assert "starting it again" in srv.log()
    assert srv.stop() == 0


def test_sigterm_while_a_dead_worker_waits_to_be_replaced_stops_the_server(  # type: ignore[no-untyped-def]
        make_server) -> None:
    srv = make_server("--workers", "2")
    assert _wait(lambda: len(_workers(srv)) == 2)
    victim = _workers(srv)[0]
    os.kill(victim, signal.SIGKILL)
    # The supervisor logs the death, then pauses (0.5 s or more) before it starts a new worker:
    # a SIGTERM in that pause must stop the server, not leave a new worker nobody stops.
    assert _wait(lambda: "starting it again" in srv.log())
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(60)
    assert srv.proc.returncode == 0, srv.log()
    srv.proc = None


def test_no_worker_outlives_a_killed_supervisor(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server("--workers", "2")
    assert _wait(lambda: len(_workers(srv)) == 2)
    workers = _workers(srv)
    assert srv.proc is not None
    os.kill(srv.proc.pid, signal.SIGKILL)  # the supervisor alone, not its process group
    srv.proc.wait(10)

    # Reading /proc races with init reaping the orphans: procs.alive reads each once.
    assert _wait(lambda: not any(procs.alive(p) for p in workers))
    # The ports are free again: a new server starts on them.
    again = ServerProcess(srv.data_dir, dicom_port=srv.dicom_port, http_port=srv.http_port)
    again.start()
    try:
        assert again.healthy()
    finally:
        again.stop()
    srv.proc = None


def _connections_per_worker(srv: ServerProcess) -> dict[int, int]:
    """How many accepted DICOM connections each worker process holds (from /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port == srv.dicom_port and fields[3] == "01":  # ESTABLISHED, server side
                inodes.add(fields[9])
    held: dict[int, int] = {}
    for pid in _workers(srv):
        n = 0
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    n += 1
        except OSError:
            continue
        held[pid] = n
    return held


def test_a_burst_of_connections_is_spread_over_the_workers(make_server) -> None:  # type: ignore[no-untyped-def]
    """Four senders connecting at the same moment (as 4 parallel storescu do) get two workers
    each, not one worker for all four while the other idles."""
    import socket

    srv = make_server("--workers", "2")
    # Both workers listening (health answers as soon as one of them is).
    assert _wait(lambda: "worker=1/2" in srv.log() and "worker=2/2" in srv.log())
    for _round in range(3):
        socks = [socket.create_connection(("127.0.0.1", srv.dicom_port)) for _ in range(4)]
        try:
            assert _wait(lambda: sum(_connections_per_worker(srv).values()) == 4, 30), \
                _connections_per_worker(srv)
            assert sorted(_connections_per_worker(srv).values()) == [2, 2], (_round, srv.log()[-3000:])
        finally:
            for s in socks:
                s.close()
        assert _wait(lambda: sum(_connections_per_worker(srv).values()) == 0, 30)


def test_one_worker_on_all_addresses_answers_http_over_ipv4_and_ipv6(make_server) -> None:  # type: ignore[no-untyped-def]
    """--host :: with one worker: HTTP takes IPv4 callers as DICOM does (uvicorn's own
    socket took IPv6 only, so the server never looked healthy on 127.0.0.1)."""
    import socket as socket_module
    import urllib.request

    try:
        probe = socket_module.socket(socket_module.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 on this machine")
    srv = make_server("--host", "::", "--insecure", "--workers", "1")  # healthy on 127.0.0.1
    with urllib.request.urlopen(f"http://[::1]:{srv.http_port}/healthz", timeout=30) as r:
        assert r.status == 200
    # The banner's address can be pasted: an IPv6 one in brackets (RFC 3986 3.2.2).
    assert f"HTTP   http://[::]:{srv.http_port}/" in srv.log()
    assert srv.stop() == 0
