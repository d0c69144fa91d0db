"""Privacy defaults of `archivist serve`: what it creates is for its own user only, a log line
cannot be forged through a value a peer sends, and a JSON API body is read within its cap."""

from __future__ import annotations

import logging
import stat
import urllib.error
import urllib.request
from pathlib import Path

import requests

from archivist.cli.serve import OneLineFormatter
from archivist.testing.datasets import make_instance
from archivist.testing.server import ServerProcess


def test_files_are_private_in_a_data_directory_created_open(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    srv: ServerProcess = make_server(data=data)
    src = tmp_path / "one.dcm"
    make_instance(src)
    req = urllib.request.Request(
        f"{srv.url}/dicomweb/studies", method="POST",
        data=b"--b\r\nContent-Type: application/dicom\r\n\r\n" + src.read_bytes() + b"\r\n--b--\r\n",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200
    created = [p for p in data.rglob("*") if p.is_file() and not p.is_socket()]
    assert any(p.name == "index.sqlite" for p in created)
    assert any("blobs" in p.parts for p in created)
    for path in created:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.relative_to(data)} is {oct(mode)}"
    for path in (p for p in data.rglob("*") if p.is_dir()):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_a_value_with_line_breaks_stays_on_its_log_line() -> None:
    formatter = OneLineFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "uid %s", (
        "1.2.3\n2026-12-06 INFO archivist: forged\rline\x1b[31m",), None)
    text = formatter.format(record)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert text == "WARNING uid 1.2.3\\x0a2026-12-06 INFO archivist: forged\\x0dline\\x1b[31m"


def test_an_inventory_request_body_is_refused_past_its_cap(server: ServerProcess) -> None:
    sent = 0

    def body():  # type: ignore[no-untyped-def]
        nonlocal sent
        for _ in range(64):  # 64 MiB if read whole; no Content-Length: chunked
            sent += 1
            yield b" " * (1 << 20)

    try:
        r = requests.post(f"{server.url}/api/inventories", data=body(), timeout=60,
                          headers={"Content-Type": "application/json"})
        status = r.status_code
    except requests.ConnectionError:
        status = 413  # the server answered and closed before the whole body was sent
    assert status == 413
    assert sent < 64
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=30) as ok:
        assert ok.status == 200
