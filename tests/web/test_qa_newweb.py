"""QA of the HTTP features of the last round (Basic authentication, HTTPS, ZIP download, change
log) on a real ``archivist serve`` with ``http_users``, as a security reviewer would try them:

- a request dressed as a CORS preflight (``OPTIONS`` + ``Access-Control-Request-Method``, no
  ``Origin``) went past the login, and ``/wado`` serves ``OPTIONS``: the object came back
  without a password;
- credentials holding a control character (``bob:s3cret\\0``) were taken for ``s3cret``
  (scrypt's HMAC pads keys with zeros); RFC 7617 2 forbids them;
- one address sending wrong passwords on many connections queued every other client's first
  log-in behind its checks (seconds each): now one check at a time per address, a few
  waiting, then 429; the same new credentials on many requests at once make one check;
- ``/api/changes?since=`` past SQLite's integers answered 500; past the newest change it
  answered ``last`` = since (Orthanc answers the newest), so a client kept skipping changes;
- ``HEAD`` of a ZIP read the whole study (and held the connection meanwhile);
- an encrypted private key made ``serve`` ask for a passphrase on the terminal; an expired
  certificate started without a word;
- a hash with costs no check can meet (N not a power of two, GiBs of memory) was accepted
  and refused every password; a name given twice kept the last; an unknown name was checked
  against a default-cost decoy, quicker than a user's costlier hash (names could be told).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from archivist.config import load_settings
from archivist.core.passwords import hash_password, verify_password
from archivist.errors import ConfigError
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess
from archivist.web.auth import BasicAuth

PASSWORD = "s3cret"
STUDY = new_uid()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    tmp = tmp_path_factory.mktemp("newweb")
    users = ",".join(f"{name}={hash_password(PASSWORD)}" for name in ("bob", "carol"))
    srv = ServerProcess(tmp / "data", extra_args=["--workers", "1"],
                        env={"ARCHIVIST_HTTP_USERS": users,
                             "ARCHIVIST_VIEWER_DIR": str(tmp / "no-viewer")})
    srv.start()
    # Four instances of 8 MiB in one series, stored with STOW-RS.
    series, sops, parts = new_uid(), [], []
    for n in range(4):
        path = tmp / f"i{n}.dcm"
        ds = make_instance(path, study_uid=STUDY, series_uid=series, instance_number=n + 1,
                           rows=2048, columns=4096)
        sops.append(ds.SOPInstanceUID)
        parts.append(b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + path.read_bytes()
                     + b"\r\n")
    resp = requests.post(f"{srv.url}/dicomweb/studies", data=b"".join(parts) + b"--XX--\r\n",
                         headers={"Content-Type":
                                  'multipart/related; type="application/dicom"; boundary=XX',
                                  **_basic("bob", PASSWORD)}, timeout=60)
    assert resp.status_code == 200, resp.text
    yield srv, {"series": series, "sops": sops}
    srv.stop()


def test_a_request_dressed_as_a_preflight_gets_nothing(server: tuple[ServerProcess, dict]) -> None:
    srv, study = server
    wado = (f"{srv.url}/wado?requestType=WADO&studyUID={STUDY}&seriesUID={study['series']}"
            f"&objectUID={study['sops'][0]}&contentType=application/dicom")
    dressed = requests.options(wado, headers={"Access-Control-Request-Method": "GET"},
                               timeout=20)
    assert dressed.status_code == 401, dressed.status_code
    assert b"DICM" not in dressed.content
    # A real preflight (browsers send Origin) is still answered, without content.
    real = requests.options(wado, headers={"Access-Control-Request-Method": "GET",
                                           "Origin": "http://viewer.example"}, timeout=20)
    assert real.status_code == 204 and real.content == b""
    assert real.headers["access-control-allow-origin"]
    # On a route that would answer the OPTIONS itself, only a preflight's answer goes back.
    other = requests.options(f"{srv.url}/api/changes", timeout=20, headers={
        "Access-Control-Request-Method": "GET", "Origin": "http://viewer.example"})
    assert other.status_code in (401, 403) and b"changes" not in other.content
    # With the password the object comes, as before.
    assert requests.get(wado, headers=_basic("bob", PASSWORD), timeout=20).status_code == 200


def test_credentials_with_control_characters_are_refused(
        server: tuple[ServerProcess, dict]) -> None:
    srv, _ = server
    url = f"{srv.url}/api/stats"
    assert requests.get(url, headers=_basic("bob", PASSWORD), timeout=20).status_code == 200
    for bad in (PASSWORD + "\0", PASSWORD + "\0\0", PASSWORD + "\t"):
        assert requests.get(url, headers=_basic("bob", bad), timeout=20).status_code == 401
    done = subprocess.run([sys.executable, "-m", "archivist.cli.main", "hash-password"],
                          input="pass\tword\n", capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2 and "control character" in done.stderr


def test_guesses_from_one_address_do_not_queue_the_others(
        server: tuple[ServerProcess, dict]) -> None:
    srv, _ = server
    url = f"{srv.url}/api/stats"
    answers: list[requests.Response] = []

    def guess(n: int) -> None:
        answers.append(requests.get(url, headers=_basic("bob", f"guess{n}"), timeout=60))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {401, 429} and 429 in statuses, statuses
    assert all(a.headers.get("retry-after") for a in answers if a.status_code == 429)

    # A page just given the password sends it on many requests at once: one check for all.
    ok: list[int] = []

    def fetch() -> None:
        ok.append(requests.get(url, headers=_basic("carol", PASSWORD), timeout=60).status_code)

    threads = [threading.Thread(target=fetch) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ok == [200] * 16, ok


def test_changes_since_past_the_largest_integer_is_a_400(
        server: tuple[ServerProcess, dict]) -> None:
    srv, _ = server
    auth = _basic("bob", PASSWORD)
    for since in ("99999999999999999999999", str(1 << 63)):
        resp = requests.get(f"{srv.url}/api/changes", params={"since": since}, headers=auth,
                            timeout=20)
        assert resp.status_code == 400, (since, resp.status_code)
    newest = requests.get(f"{srv.url}/api/stats", headers=auth, timeout=20).json()["last_change"]
    assert newest >= 4
    # A cursor past the end (kept from before a restore): ``last`` is the end, as Orthanc's.
    for since in (str((1 << 63) - 1), str(newest + 1000)):
        past = requests.get(f"{srv.url}/api/changes", params={"since": since}, headers=auth,
                            timeout=20)
        assert past.status_code == 200 and past.json()["changes"] == []
        assert past.json()["last"] == newest and past.json()["done"] is True


def _read_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/<pid>/io")
def test_zip_head_reads_nothing(
        server: tuple[ServerProcess, dict]) -> None:
    srv, _ = server
    assert srv.proc is not None
    pid = srv.proc.pid  # --workers 1: the process that serves
    url = f"{srv.url}/api/studies/{STUDY}/archive"
    auth = _basic("bob", PASSWORD)
    with requests.Session() as session:  # a kept-alive connection, as a library client has
        before = _read_bytes(pid)
        head = session.head(url, headers=auth, timeout=20)
        assert head.status_code == 200 and head.headers["content-type"] == "application/zip"
        assert session.get(f"{srv.url}/api/stats", headers=auth, timeout=20).status_code == 200
        assert _read_bytes(pid) - before < 8 * 1024 * 1024  # the study holds 32 MiB


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_encrypted_key_and_expired_certificate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from archivist.cli.serve import _tls_problem

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60)

    openssl("genrsa", "-aes256", "-passout", "pass:secret", "-out", "enc.pem", "2048")
    openssl("req", "-x509", "-key", "enc.pem", "-passin", "pass:secret", "-out", "enc.crt",
            "-days", "5", "-subj", "/CN=localhost")
    problem = _tls_problem(str(tmp_path / "enc.crt"), str(tmp_path / "enc.pem"))
    assert problem is not None and "encrypted" in problem

    # A certificate that expired in 2024 (signed with `openssl ca`, which takes dates).
    (tmp_path / "index.txt").write_text("")
    (tmp_path / "serial").write_text("01\n")
    (tmp_path / "ca.cnf").write_text(
        "[ca]\ndefault_ca=d\n[d]\ndir=.\ndatabase=index.txt\nserial=serial\n"
        "new_certs_dir=.\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n")
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "old.key", "-out",
            "old.csr", "-subj", "/CN=localhost")
    openssl("ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", "old.key", "-in",
            "old.csr", "-out", "old.crt", "-startdate", "20240101000000Z", "-enddate",
            "20240201000000Z")
    capsys.readouterr()
    assert _tls_problem(str(tmp_path / "old.crt"), str(tmp_path / "old.key")) is None
    assert "expired on Feb  1 00:00:00 2024 GMT" in capsys.readouterr().err


def test_settings_refuse_hashes_no_password_can_match_and_names_given_twice() -> None:
    good = hash_password("x")
    unusable = [good.replace("scrypt$16384$8$1$", "scrypt$1048576$32$1$"),  # 4 GiB of memory
                good.replace("scrypt$16384$8$1$", "scrypt$1000$8$1$")]       # N not 2^k
    for stored in unusable:
        with pytest.raises(ConfigError, match="scrypt costs"):
            load_settings(None, env={"ARCHIVIST_HTTP_USERS": f"alice={stored}"})
    with pytest.raises(ConfigError, match="given twice"):
        load_settings(None, env={"ARCHIVIST_HTTP_USERS": f"alice={good},alice={good}"})


def test_an_unknown_name_costs_what_the_costliest_user_costs() -> None:
    costly = hash_password("x", like="scrypt$32768$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA")
    assert costly.startswith("scrypt$32768$8$1$") and verify_password("x", costly)
    settings = load_settings(None, env={
        "ARCHIVIST_HTTP_USERS": f"alice={hash_password('y')},bob={costly}"})
    assert BasicAuth(None, settings)._decoy.startswith("scrypt$32768$8$1$")


def test_hash_password_reads_latin1_and_a_byte_order_mark() -> None:
    # Invalid UTF-8 on standard input made a traceback; decoded as the server decodes a client's.
    for raw in (b"Gr\xfc\xdfe\n", b"\xef\xbb\xbfGr\xc3\xbc\xc3\x9fe\r\n"):
        done = subprocess.run([sys.executable, "-m", "archivist.cli.main", "hash-password"],
                              input=raw, capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr[-500:]
        assert verify_password("Grüße", done.stdout.decode().strip())
