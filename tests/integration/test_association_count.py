"""The association count that ``max_associations`` is checked against across worker processes:
an association is in the shared total before its A-ASSOCIATE-AC reaches the peer, so a peer
that opens its next association at once (to any worker) is counted against the limit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from archivist.archive.archive import Archive
from archivist.config import load_settings
from archivist.dimse.acceptor import AssociationCount
from archivist.dimse.server import DimseServer
from archivist.testing.rawpdu import rejection
from archivist.testing.server import free_port

AET = "ARCHIVIST"


class _HoldAfterAccept(logging.Handler):
    """Holds the acceptor's loop at its "association accepted" log line (written once the AC is
    on its way) until the test lets it go: whatever the acceptor does after that line has not
    happened yet when the peer looks."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.go = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("association accepted"):
            self.go.wait(30)


@pytest.fixture
def held_log() -> Iterator[_HoldAfterAccept]:
    logger = logging.getLogger("archivist.dimse.acceptor")
    handler, level = _HoldAfterAccept(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        handler.go.set()
        logger.removeHandler(handler)
        logger.setLevel(level)


class TestSharedCount:
    def test_an_association_is_counted_when_its_peer_has_the_ac(
            self, tmp_path: Path, held_log: _HoldAfterAccept) -> None:
        settings = load_settings(env={}, overrides={
            "data_dir": tmp_path / "data", "dicom_port": free_port(), "max_associations": 1})
        archive = Archive.open(settings)
        cells = [0, 0]  # this worker's cell and another (idle) worker's, as serve shares them
        server = DimseServer(archive, count=AssociationCount(cells, 0))
        server.start()
        ae = AE(ae_title="COUNTED")
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.network_timeout = 30
        first = None
        try:
            assert server.wait_listening()
            first = ae.associate("127.0.0.1", server.port, ae_title=AET)
            assert first.is_established
            # The peer has its AC while the acceptor is held: the total another worker would
            # check a second association against already holds this one.
            assert sum(cells) == 1
            held_log.go.set()
            assert rejection(server.port, calling="COUNTED", timeout=30) == (2, 3, 2)
            first.release()
            assert first.is_released
        finally:
            held_log.go.set()
            if first is not None and first.is_established:
                first.abort()
            server.stop()
            archive.close()
