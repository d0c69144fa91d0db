"""STOW-RS of a plain (not deflated) object with one large value it does not index, against a
running server under an address-space limit (as test_qa_bombs_memory.py).

Ingest decoded the deferred values of an implicit VR object (whose raw VR is None) and private
UN values as read: a 128 MiB Encapsulated Document or private blob grew the server by its size
(200 MB: +204 MB). They are now left unread (tests/archive/test_qa_large_values.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from tests.archive.test_qa_large_values import _CREATOR, _save
from tests.integration.test_qa_bombs_memory import MIB, _limit, _peak_kb, _stow

from archivist.testing.server import ServerProcess

SIZE = 128 * MIB
#: Peak RSS growth allowed for storing one SIZE value (the old code: SIZE and more).
GROWTH_MB = 48


@pytest.fixture
def capped(make_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    srv = make_server("--workers", "1")
    _limit(srv)
    return srv


@pytest.mark.parametrize("case", ["implicit-encapsulated-document", "explicit-private-UN"])
def test_stow_of_a_large_value_costs_no_memory(capped: ServerProcess, tmp_path: Path,
                                               case: str) -> None:
    if case == "implicit-encapsulated-document":
        implicit, raw = True, {0x00420011: ("OB", bytes(SIZE))}
    else:
        implicit, raw = False, {**_CREATOR, 0x7FD11000: ("UN", bytes(SIZE))}
    path = tmp_path / "large.dcm"
    ds = _save(path, raw, implicit)
    del raw
    before = _peak_kb(capped)
    response = _stow(capped, path)
    grown = (_peak_kb(capped) - before) // 1024
    assert response.status_code == 200, response.text
    assert grown < GROWTH_MB, f"the server grew by {grown} MB storing a {SIZE >> 20} MiB value"
    found = requests.get(f"{capped.url}/dicomweb/instances",
                         params={"SOPInstanceUID": ds.SOPInstanceUID}, timeout=30)
    assert found.status_code == 200 and ds.SOPInstanceUID in found.text
