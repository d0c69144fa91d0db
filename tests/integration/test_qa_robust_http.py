"""Slow and idle HTTP clients against a real ``archivist serve``: they cannot lock others out.

A client that opens connections and never finishes a request head (slowloris), or sends nothing
at all, used to keep each connection for ever, and uvicorn's ``limit_concurrency`` counted those
idle connections: 512 of them on one worker answered every other client 503 for as long as they
stayed open. Now requests in flight are what is capped, and a connection must send its request
head within ``http_head_timeout`` seconds (408 with a JSON body, then closed). A request
that announced a body and stopped sending it held its place among the requests in flight for
ever; now ``http_body_timeout`` seconds without a byte end it the same way. And a request head
had no size limit (httptools keeps it all): one header of 80 MB was read into memory.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from archivist.cli.serve import MAX_REQUEST_HEAD
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(180)

#: The settings http_head_timeout and http_body_timeout (10 and 30 s by default), shortened so
#: that waiting for them does not make up most of the test's time.
REQUEST_HEAD_TIMEOUT = 3.0
BODY_IDLE_TIMEOUT = 4.0
TIMEOUTS = {"ARCHIVIST_HTTP_HEAD_TIMEOUT": str(REQUEST_HEAD_TIMEOUT),
            "ARCHIVIST_HTTP_BODY_TIMEOUT": str(BODY_IDLE_TIMEOUT)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests that do not need their own: each closes its connections, and
    the one that leaves a body half sent checks that nothing is left in the temporary folder."""
    srv = ServerProcess(tmp_path_factory.mktemp("robust-http") / "data", env=TIMEOUTS)
    srv.start()
    yield srv
    srv.stop()


PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # the blank line never comes


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _answer(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except OSError:
        pass
    return out


class TestSlowClients:
    def test_unfinished_heads_neither_lock_out_others_nor_stay_open(
            self, make_server) -> None:  # type: ignore[no-untyped-def]
        srv: ServerProcess = make_server("--workers", "1", env=TIMEOUTS)
        held: list[socket.socket] = []
        try:
            for _ in range(600):  # more than the 512 a worker runs at once
                s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=30)
                s.sendall(PARTIAL_HEAD)
                held.append(s)
            time.sleep(0.5)
            assert _status(f"{srv.url}/healthz") == 200, "idle connections locked others out"
            opened = time.monotonic()
            answers = [_answer(s) for s in held]
            waited = time.monotonic() - opened
        finally:
            for s in held:
                s.close()
        assert waited < REQUEST_HEAD_TIMEOUT + 15, f"connections held {waited:.0f} s"
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer[:100]
            assert json.loads(body)["error"]
        assert _status(f"{srv.url}/healthz") == 200

    def test_silent_connection_is_closed(self, server: ServerProcess) -> None:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=60) as s:
            t0 = time.monotonic()
            assert _answer(s) == b""
            assert time.monotonic() - t0 < REQUEST_HEAD_TIMEOUT + 10

    def test_a_request_in_time_is_served_and_keep_alive_still_works(
            self, server: ServerProcess) -> None:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=60) as s:
            for pause in (0.0, REQUEST_HEAD_TIMEOUT / 2):
                time.sleep(pause)
                for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n":  # slow, but in time
                    s.sendall(bytes([byte]))
                    time.sleep(REQUEST_HEAD_TIMEOUT / 100)
                reply = b""
                while b'"status"' not in reply:
                    chunk = s.recv(65536)
                    assert chunk, "closed"
                    reply += chunk
                assert reply.startswith(b"HTTP/1.1 200"), reply[:100]

    def test_a_body_slower_than_the_head_deadline_is_not_cut(
            self, server: ServerProcess) -> None:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=60) as s:
            body = b'{"level": "bogus"}'
            s.sendall(b"POST /api/inventories HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nConnection: close\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            step = (REQUEST_HEAD_TIMEOUT + 2) / len(body)
            for byte in body:
                s.sendall(bytes([byte]))
                time.sleep(step)
            reply = _answer(s)
        assert reply.startswith(b"HTTP/1.1 400"), reply[:200]  # the body was read and judged

    def test_a_stalled_body_is_ended_and_leaves_nothing(self, server: ServerProcess) -> None:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=120) as s:
            s.sendall(b"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\n"
                      b'Content-Type: multipart/related; type="application/dicom"; boundary=B\r\n'
                      b"Content-Length: 100000\r\n\r\n"
                      b"--B\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * 5000)
            t0 = time.monotonic()
            assert _status(f"{server.url}/healthz") == 200  # others are served meanwhile
            reply = _answer(s)
            waited = time.monotonic() - t0
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]
        assert BODY_IDLE_TIMEOUT - 1 < waited < BODY_IDLE_TIMEOUT + 15, waited
        assert not list((server.data_dir / "tmp").iterdir())

    def test_a_request_head_over_the_limit_is_431(self, server: ServerProcess) -> None:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                for _ in range(64):  # 4 MiB of one header, at most
                    s.sendall(b"a" * (MAX_REQUEST_HEAD // 4))
            except OSError:
                pass  # closed by the server
            reply = _answer(s)
        assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]
        # a large head within the limit is served
        big = "a" * (MAX_REQUEST_HEAD - 1024)
        request = urllib.request.Request(f"{server.url}/healthz", headers={"X-Big": big})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200
