"""QA (life cycle): what the signals an administrator, a terminal or a service manager sends do
to a running archive with several workers.

- SIGHUP (a terminal that hangs up, ``logrotate``'s ``postrotate kill -HUP``) killed the
  supervisor at once (the default action), and with it every worker (they die with their
  parent): the archive was gone without a line in its log, in the middle of whatever it was
  storing. It is now logged and ignored.
- SIGTERM waited for every HTTP request to end: one client that stopped reading a WADO-RS
  retrieve, or a slow STOW-RS upload, kept the archive "stopping" for as long as it liked (its
  DIMSE side still taking new associations, its HTTP side answering nobody). Requests and
  associations now get a grace period, then the archive stops (a request cut short is
  answered 503 with Retry-After, not 500), and it starts again clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(180)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A two-worker archive holding one study of eight 1 MB CT images."""
    root = tmp_path_factory.mktemp("lifecycle-signals")
    srv = ServerProcess(root / "data", extra_args=["--workers", "2"])
    srv.start()
    study = new_uid()
    ae = AE(ae_title="LIFECYCLE")
    ae.add_requested_context(CT_IMAGE, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        ds = make_instance(root / "ct.dcm", study_uid=study, rows=1024, columns=1024)
        for i in range(8):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
            ds.InstanceNumber = i + 1
            assert int(assoc.send_c_store(ds).Status) == 0
    finally:
        assoc.release()
    try:
        yield srv, study
    finally:
        srv.stop(timeout=5)


def _echo(port: int) -> int:
    ae = AE(ae_title="ECHOER")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def test_sighup_is_logged_and_does_not_stop_the_archive(stored: tuple[ServerProcess, str]) -> None:
    srv, study = stored
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGHUP)  # the supervisor alone (kill -HUP)
    time.sleep(0.5)
    os.killpg(srv.proc.pid, signal.SIGHUP)  # the whole group, as a terminal that hangs up
    time.sleep(1.0)
    # Logged by the supervisor (polled: a loaded machine can take longer to get there).
    deadline = time.monotonic() + 30
    while "SIGHUP" not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.proc.poll() is None, f"SIGHUP stopped the archive:\n{srv.log()}"
    assert srv.healthy()
    assert _echo(srv.dicom_port) == 0
    log = srv.log()
    assert "SIGHUP" in log, log
    assert "ended with" not in log, log  # no worker died and was started again
    with urllib.request.urlopen(f"{srv.url}/dicomweb/studies/{study}/instances",
                                timeout=30) as r:
        assert len(json.loads(r.read())) == 8


def _slow_stow(port: int, parts: list[bytes], sent: list[int]) -> socket.socket:
    """A STOW-RS request whose parts arrive one every 0.3 s (a slow link), sent by a thread;
    `sent` counts the parts sent."""
    boundary = "slow-link"
    chunks = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part
              + b"\r\n" for part in parts] + [f"--{boundary}--\r\n".encode()]
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(
        f"POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/"
        f'related; type="application/dicom"; boundary={boundary}\r\n'
        f"Content-Length: {sum(map(len, chunks))}\r\n\r\n".encode())

    def send() -> None:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
                sent.append(1)
                time.sleep(0.3)
        except OSError:
            return

    threading.Thread(target=send, daemon=True).start()
    return sock


@pytest.mark.slow  # CI time (20 min); covered in a full run: pytest -m slow
def test_sigterm_stops_in_time_with_slow_and_stalled_http_clients(
        stored: tuple[ServerProcess, str], tmp_path: Path) -> None:
    srv, study = stored
    assert srv.proc is not None
    upload = new_uid()
    parts = []
    for i in range(50):
        make_instance(tmp_path / "part.dcm", study_uid=upload, instance_number=i + 1)
        parts.append((tmp_path / "part.dcm").read_bytes())
    sent: list[int] = []
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", srv.http_port))
    try:
        reader.sendall(
            f"GET /dicomweb/studies/{study} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            'Accept: multipart/related; type="application/dicom"; transfer-syntax=*\r\n'
            "\r\n".encode())
        assert reader.recv(100).startswith(b"HTTP/1.1 200")  # then it stops reading
        uploader = _slow_stow(srv.http_port, parts, sent)
        time.sleep(1.0)  # the response fills the socket's buffers: its writer waits
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        try:
            code = srv.proc.wait(40)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still stopping after 40 s:\n{srv.log()[-3000:]}")
        took = time.monotonic() - started
        with uploader:
            answer = b""
            with contextlib.suppress(OSError):
                while chunk := uploader.recv(65536):
                    answer += chunk
    finally:
        reader.close()
    assert code == 0, srv.log()
    assert took < 30, took
    assert len(sent) < len(parts)  # still uploading when the grace ran out
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer[:500]
    assert b"retry-after" in head.lower()
    assert json.loads(body)["error"].startswith("the archive is stopping")
    srv.proc = None
    # The next start is clean and has everything: what was acknowledged, and the parts of the
    # cut upload that were stored whole.
    again = ServerProcess(srv.data_dir, extra_args=["--workers", "2"])
    again.start()
    try:
        with urllib.request.urlopen(f"{again.url}/dicomweb/studies/{study}/instances",
                                    timeout=30) as r:
            assert len(json.loads(r.read())) == 8
        assert [p for p in (srv.data_dir / "tmp").iterdir()] == []
        assert "startup sweep" not in again.log()
    finally:
        assert again.stop() == 0
