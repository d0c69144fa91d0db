"""The allow-list as a security boundary (found by QA, websec).

``--allow '*@*'`` admits every caller from every host: on a network address it is no allow-list
at all, and used to pass the check that refuses to listen there without one. A rule that names
an AE title but no host (``MOD@*``, or a bare ``MOD``) restricts DIMSE callers by AE title; HTTP
names no AE title, so such a rule must not open HTTP to every host.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from archivist.config import load_settings
from archivist.errors import ConfigError


@pytest.mark.parametrize("allow", [["*@*"], ["*"], ["MOD@127.0.0.1", "*@*"]])
def test_allow_everyone_on_a_network_address_needs_insecure(allow) -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        load_settings(env={}, overrides={"host": "0.0.0.0", "allow": allow})
    assert load_settings(env={}, overrides={"host": "0.0.0.0", "allow": allow, "insecure": True})
    assert load_settings(env={}, overrides={"host": "127.0.0.1", "allow": allow})


def test_serve_refuses_allow_everyone_on_a_network_address(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "serve", "--data", str(tmp_path / "d"),
         "--host", "0.0.0.0", "--allow", "*@*", "--dicom-port", "0", "--http-port", "0"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--insecure" in done.stderr


def test_an_aet_only_rule_does_not_open_http_to_every_host() -> None:
    s = load_settings(env={}, overrides={"host": "0.0.0.0", "allow": ["MOD@*"]})
    assert s.is_allowed("MOD", "192.0.2.7")  # DIMSE: the AE title is what it restricts
    assert not s.host_allowed("192.0.2.7")  # HTTP names no AE title
    assert s.host_allowed("127.0.0.1")
    s = load_settings(env={}, overrides={"host": "0.0.0.0", "allow": ["MOD@*", "WS@192.0.2.7"]})
    assert s.host_allowed("192.0.2.7") and not s.host_allowed("192.0.2.8")
    s = load_settings(env={}, overrides={"host": "0.0.0.0", "allow": ["*@*"], "insecure": True})
    assert s.host_allowed("192.0.2.8")


def test_http_hosts_setting() -> None:
    s = load_settings(env={"ARCHIVIST_HTTP_HOSTS": "PACS.example, viewer.local."})
    assert s.http_hosts == ("pacs.example", "viewer.local")
    for bad in ("http://pacs.example", "pacs.example:8080", "a b", ""):
        with pytest.raises(ConfigError):
            load_settings(env={}, overrides={"http_hosts": [bad]})
