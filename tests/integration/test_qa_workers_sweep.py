"""QA (workers): a worker killed (SIGKILL, the OOM killer) while it receives a STOW-RS request
leaves the part file it was writing in the data directory's ``tmp`` folder. The startup sweep
runs only when no process uses the data directory, so with several workers the file stayed
until the whole archive was restarted; the worker started again now removes the part files of
worker processes that are gone, and the exchange with it resumes."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(300)

BOUNDARY = "qa-workers-sweep"


def _holder(server_pid: int, path: Path) -> int | None:
    """The worker process (a child of the supervisor) that has `path` open."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != server_pid:
                continue
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == str(path):
                    return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def _wait_for_sockets(data: Path, workers: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all((data / "run" / f"worker-{n}.sock").exists() for n in range(workers)):
            time.sleep(1.5)
            return
        time.sleep(0.1)
    raise AssertionError("the workers' part exchange sockets never appeared")


def _stow(srv: ServerProcess, parts: list[bytes]) -> dict:  # type: ignore[type-arg]
    body = b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p
                    + b"\r\n" for p in parts) + f"--{BOUNDARY}--\r\n".encode()
    req = urllib.request.Request(
        f"{srv.url}/dicomweb/studies", data=body, method="POST",
        headers={"Content-Type":
                 f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_part_files_of_a_killed_worker_are_removed_when_it_starts_again(
        make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    srv = make_server("--workers", "2", data=data)
    _wait_for_sockets(data, 2)
    assert srv.proc is not None
    big = tmp_path / "big.dcm"
    make_instance(big, study_uid=new_uid(), rows=1000, columns=1000, frames=2)  # 2 MB
    payload = big.read_bytes()
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tmp = data / "tmp"
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=30) as conn:
        conn.sendall(
            f"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/related; "
            f'type="application/dicom"; boundary={BOUNDARY}\r\n'
            f"Content-Length: {len(head) + len(payload) + 100}\r\n\r\n".encode())
        conn.sendall(head + payload[: 3 * len(payload) // 4])  # spilled to a part file
        deadline = time.monotonic() + 30
        holder = None
        while holder is None and time.monotonic() < deadline:
            files = [p for p in tmp.iterdir() if p.name.startswith("stow-")]
            if files:
                holder = _holder(srv.proc.pid, files[0])
            time.sleep(0.05)
        assert holder is not None, "no worker is writing a part file"
        os.kill(holder, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                srv.log().count("listening dicom=") < 3
                or any(p.name.startswith("stow-") for p in tmp.iterdir())):
            time.sleep(0.2)
    assert srv.log().count("listening dicom=") >= 3  # the worker was started again
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("stow-")) == []
    # The exchange resumes: a request afterwards is stored whole, and the killed one left
    # nothing in the index.
    _wait_for_sockets(data, 2)
    study = new_uid()
    parts = []
    for i in range(8):
        path = tmp_path / f"{i}.dcm"
        make_instance(path, study_uid=study, instance_number=i + 1)
        parts.append(path.read_bytes())
    body = _stow(srv, parts)
    assert len(body["00081199"]["Value"]) == 8 and "00081198" not in body
    with urllib.request.urlopen(f"{srv.url}/api/stats", timeout=30) as r:
        assert json.loads(r.read())["counts"]["instance"] == 8
