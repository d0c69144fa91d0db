"""With an --allow list, HTTP answers only the hosts it names and this machine (403 to others,
/healthz to anybody): --allow guarded DIMSE only, and a server listening on a network address
served every study to any host over DICOMweb and let it delete over /api."""

from __future__ import annotations

import socket

import pytest
import requests


def _own_address() -> str:
    """A non-loopback address of this machine (the one it would reach the network from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            address = str(s.getsockname()[0])
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


def test_http_answers_only_the_allowed_hosts(make_server) -> None:  # type: ignore[no-untyped-def]
    own = _own_address()
    srv = make_server("--host", "0.0.0.0", "--allow", "MOD@127.0.0.1")
    local = requests.get(f"http://127.0.0.1:{srv.http_port}/dicomweb/studies", timeout=30)
    assert local.status_code in (200, 204)
    remote = requests.get(f"http://{own}:{srv.http_port}/dicomweb/studies", timeout=30)
    assert remote.status_code == 403
    assert "allow" in remote.json()["error"]
    gone = requests.delete(f"http://{own}:{srv.http_port}/api/studies/1.2.3?reason=test",
                           timeout=30)
    assert gone.status_code == 403
    assert requests.get(f"http://{own}:{srv.http_port}/healthz", timeout=30).status_code == 200


def test_an_allowed_host_is_answered(make_server) -> None:  # type: ignore[no-untyped-def]
    own = _own_address()
    srv = make_server("--host", "0.0.0.0", "--allow", f"MOD@{own}")
    remote = requests.get(f"http://{own}:{srv.http_port}/dicomweb/studies", timeout=30)
    assert remote.status_code in (200, 204)
