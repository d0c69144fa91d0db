"""HTTP Basic authentication (``http_users``) on a real ``archivist serve``: 401 with a challenge
without valid credentials, every route served with them (dicomweb-client, STOW-RS), /healthz
and CORS preflights open; the hash made by ``archivist hash-password``."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from archivist.config import load_settings
from archivist.errors import ConfigError
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

PASSWORD = "correct horse battery staple é"
STUDY = new_uid()


def _hash(password: str) -> str:
    done = subprocess.run([sys.executable, "-m", "archivist.cli.main", "hash-password"],
                          input=password + "\n", capture_output=True, text=True, timeout=60,
                          check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("auth")
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_HTTP_USERS": f"alice={_hash(PASSWORD)}",
                                           "ARCHIVIST_VIEWER_DIR": str(tmp / "no-viewer")})
    srv.start()
    yield srv
    srv.stop()


def _get(url: str, headers: dict[str, str] | None = None,
         method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.parametrize("headers", [
    {},
    _basic("alice", "wrong"),
    _basic("mallory", PASSWORD),
    {"Authorization": "Basic !!!notbase64"},
    {"Authorization": "Bearer abc"},
])
def test_refused_without_valid_credentials(server: ServerProcess, headers: dict) -> None:
    for path in ("/dicomweb/studies", "/api/stats", "/archive/", "/"):
        status, got, body = _get(server.url + path, headers)
        assert status == 401, path
        assert got["www-authenticate"] == 'Basic realm="Archivist", charset="UTF-8"'
        assert "authentication required" in json.loads(body)["error"]


def test_healthz_and_preflight_need_none(server: ServerProcess) -> None:
    assert _get(server.url + "/healthz")[0] == 200
    status, headers, _ = _get(server.url + "/dicomweb/studies", {
        "Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"},
        method="OPTIONS")
    assert status in (200, 204)
    assert "access-control-allow-origin" in headers


def test_clients_with_credentials_are_served(server: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    make_instance(path, study_uid=STUDY, patient_name="AUTH^TEST")
    session = requests.Session()
    session.auth = ("alice", PASSWORD)
    client = DICOMwebClient(server.url + "/dicomweb", session=session)
    client.store_instances([dcmread(path)])
    found = client.search_for_studies(search_filters={"StudyInstanceUID": STUDY})
    assert [s["0020000D"]["Value"][0] for s in found] == [STUDY]
    # Again (remembered credentials), and the archive's own API.
    status, _, body = _get(server.url + "/api/stats", _basic("alice", PASSWORD))
    assert status == 200 and json.loads(body)["counts"]["instance"] >= 1
    unauthenticated = DICOMwebClient(server.url + "/dicomweb")
    with pytest.raises(requests.HTTPError) as err:
        unauthenticated.search_for_studies()
    assert err.value.response.status_code == 401


def test_settings_refuse_what_is_not_a_hash() -> None:
    with pytest.raises(ConfigError, match="hash-password"):
        load_settings(None, env={"ARCHIVIST_HTTP_USERS": "alice=plaintext"})
    with pytest.raises(ConfigError, match="without ':'"):
        load_settings(None, env={"ARCHIVIST_HTTP_USERS": f"a:b={_hash('x')}"})
