"""`archivist inventory diff` against a live repository calls it with the `aet` setting (as
`migrate` does) unless --aet is given; it always called as ARCHIVIST."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pynetdicom import AE

from archivist.testing.server import free_port

VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture(scope="module")
def picky_peer() -> Iterator[int]:
    """A peer that accepts associations from the calling AE title SITEPACS only."""
    ae = AE(ae_title="LEGACY")
    ae.require_calling_aet = ["SITEPACS"]
    ae.add_supported_context(VERIFICATION)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    yield port
    server.shutdown()


def _diff(port: int, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVIST_")}
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", "inventory", "diff",
                           f"LEGACY@127.0.0.1:{port}", "nothing.json", *extra],
                          capture_output=True, text=True, env={**clean, **env}, timeout=120,
                          check=False)


@pytest.mark.parametrize(("env", "extra", "calling"), [
    ({}, (), "ARCHIVIST"),
    ({"ARCHIVIST_AET": "MYPACS"}, (), "MYPACS"),
    ({"ARCHIVIST_AET": "MYPACS"}, ("--aet", "OTHER"), "OTHER"),
])
def test_calling_aet_follows_the_setting(picky_peer: int, env: dict[str, str],
                                         extra: tuple[str, ...], calling: str) -> None:
    run = _diff(picky_peer, *extra, env=env)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert f"calling AE title {calling}" in run.stderr, run.stderr
