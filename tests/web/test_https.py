"""HTTPS (``http_tls_cert`` / ``http_tls_key``) on a real ``archivist serve`` with a certificate
made by openssl: DICOMweb over TLS with the certificate checked; bad files refused at start."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from archivist.testing.server import free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl needed")


def _serve(data: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "archivist.cli.main", "serve", "--data", str(data),
         "--dicom-port", str(free_port()), "--http-port", str(port), "--workers", "1", *args],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, port


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("tls")
    key, crt = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return crt, key


@pytest.fixture(scope="module")
def https_server(cert: tuple[Path, Path],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, str]]:
    crt, key = cert
    proc, port = _serve(tmp_path_factory.mktemp("https") / "data",
                        {"ARCHIVIST_HTTP_TLS_CERT": str(crt), "ARCHIVIST_HTTP_TLS_KEY": str(key)})
    context = ssl.create_default_context(cafile=str(crt))
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=5,
                                        context=context) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "no HTTPS server"
        time.sleep(0.3)
    yield port, crt, proc.pid
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    assert f"HTTP   https://127.0.0.1:{port}/" in out


def test_dicomweb_over_tls_with_the_certificate_checked(https_server) -> None:
    port, crt, _ = https_server
    resp = requests.get(f"https://127.0.0.1:{port}/dicomweb/studies", verify=str(crt),
                        timeout=20)
    assert resp.status_code in (200, 204)
    with pytest.raises(requests.exceptions.SSLError):  # a client that trusts nothing of ours
        requests.get(f"https://127.0.0.1:{port}/healthz", timeout=20)


def test_plain_http_gets_no_answer(https_server) -> None:
    port, _, _ = https_server
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.HTTPError)):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=20).raise_for_status()


@pytest.mark.parametrize("which", ["missing", "mismatch", "half"])
def test_bad_certificate_settings_stop_the_start(cert, tmp_path: Path, which: str) -> None:
    crt, key = cert
    if which == "missing":
        env = {"ARCHIVIST_HTTP_TLS_CERT": str(tmp_path / "none.pem"),
               "ARCHIVIST_HTTP_TLS_KEY": str(key)}
        expected = "no file"
    elif which == "mismatch":
        other = tmp_path / "other.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(other), "2048"], check=True,
                       capture_output=True)
        env = {"ARCHIVIST_HTTP_TLS_CERT": str(crt), "ARCHIVIST_HTTP_TLS_KEY": str(other)}
        expected = "not a PEM certificate and its private key"
    else:
        env = {"ARCHIVIST_HTTP_TLS_CERT": str(crt)}
        expected = "go together"
    proc, _ = _serve(tmp_path / "data", env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert expected in out
