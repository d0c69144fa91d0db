"""STOW-RS with several workers: the worker that receives a request hands parts to the others
(web.dicomweb.siblings); every part is stored once, reported in order, and retrievable."""

from __future__ import annotations

import io
import json
import socket
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(300)

BOUNDARY = "siblings-test-boundary"


def _body(parts: list[bytes]) -> bytes:
    out = b""
    for p in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def _stow(srv: ServerProcess, parts: list[bytes]) -> tuple[int, dict]:  # type: ignore[type-arg]
    req = urllib.request.Request(
        f"{srv.url}/dicomweb/studies", data=_body(parts), method="POST",
        headers={"Content-Type":
                 f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                 "Accept": "application/dicom+json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait_for_sockets(data: Path, workers: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all((data / "run" / f"worker-{n}.sock").exists() for n in range(workers)):
            time.sleep(1.5)  # a sibling tried before it listened is left alone for 1 s
            return
        time.sleep(0.1)
    raise AssertionError("the workers' part exchange sockets never appeared")


def _instances(tmp: Path, study: str, count: int, **kw) -> list[tuple[str, bytes]]:  # type: ignore[no-untyped-def]
    out = []
    series = new_uid()
    for i in range(count):
        path = tmp / f"{i}-{kw.get('rows', 4)}.dcm"
        sop = new_uid()
        make_instance(path, study_uid=study, series_uid=series, sop_uid=sop,
                      instance_number=i + 1, **kw)
        out.append((sop, path.read_bytes()))
    return out


def test_parts_stored_by_every_worker_reported_in_order(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    srv = make_server("--workers", "2", data=data)
    _wait_for_sockets(data, 2)
    study = new_uid()
    small = _instances(tmp_path, study, 16)
    # Over 1 MiB: spilled to a part file, handed over by its name.
    big = _instances(tmp_path, study, 3, rows=800, columns=800, frames=2)
    parts = [b for _, b in small[:8]] + [b for _, b in big] + [b for _, b in small[8:]]
    sops = [s for s, _ in small[:8]] + [s for s, _ in big] + [s for s, _ in small[8:]]
    parts.insert(5, b"not a DICOM object at all")

    status, body = _stow(srv, parts)

    assert status == 202, body
    referenced = [item["00081155"]["Value"][0] for item in body["00081199"]["Value"]]
    assert referenced == sops  # every part once, in the request's order
    assert len(body["00081198"]["Value"]) == 1
    log = srv.log()
    assert "parts handed to other workers" in log, log[-3000:]
    assert "Traceback" not in log
    for sop, original in small + big:
        url = (f"{srv.url}/dicomweb/studies/{study}/series/"
               f"{pydicom.dcmread(io.BytesIO(original)).SeriesInstanceUID}"
               f"/instances/{sop}")
        req = urllib.request.Request(url, headers={
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert original in r.read()
    with urllib.request.urlopen(f"{srv.url}/api/stats", timeout=30) as r:
        assert json.loads(r.read())["counts"]["instance"] == len(small) + len(big)
    assert not list((data / "tmp").iterdir())  # no part file left behind


def _frame(obj: object) -> bytes:
    raw = json.dumps(obj).encode()
    return struct.pack(">I", len(raw)) + raw


def test_a_sibling_socket_takes_only_part_files_of_its_own_tmp_folder(  # type: ignore[no-untyped-def]
        make_server, tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = make_server("--workers", "2", data=data)
    _wait_for_sockets(data, 2)
    sock_path = data / "run" / "worker-1.sock"
    assert oct(sock_path.stat().st_mode & 0o777) == "0o600"
    outside = tmp_path / "elsewhere.dcm"
    make_instance(outside, study_uid=new_uid())
    inside_other = data / "tmp" / "not-a-part.dcm"
    inside_other.write_bytes(outside.read_bytes())
    for name in ("../../elsewhere.dcm", str(outside), "not-a-part.dcm", "stow-../x.part"):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock_path))
            s.sendall(_frame({"file": name, "study": None, "client": "x"}))
            assert s.recv(100) == b""  # dropped, nothing answered
    assert outside.exists() and inside_other.exists()
    with urllib.request.urlopen(f"{srv.url}/api/stats", timeout=30) as r:
        assert json.loads(r.read())["counts"]["instance"] == 0
    assert "dropped a sibling's connection" in srv.log()


def test_a_flood_of_bad_parts_is_answered_part_by_part_but_not_logged_line_by_line(  # type: ignore[no-untyped-def]
        server: ServerProcess) -> None:
    started = time.monotonic()
    status, body = _stow(server, [b"garbage %d" % i for i in range(1000)])
    seconds = time.monotonic() - started
    assert status == 409
    assert len(body["00081198"]["Value"]) == 1000
    log = server.log()
    assert "1000 refused" in log
    # At most 20 lines a second in each of the (at most 4) workers, in the seconds it took.
    lines = log.count("STOW-RS part refused")
    assert lines <= 20 * 4 * (int(seconds) + 2), (lines, seconds)
    assert lines < 1000, (lines, seconds)
