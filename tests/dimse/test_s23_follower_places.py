"""Where forwarding and IAN have got to (QA s23):

- after a restore done as docs/operations.md says, the saved place (copied after the index's
  backup) was past the end of the restored change log, whose next changes took its numbers
  again: forwarding passed over them as sent, without a word. The place now goes back to the
  log's end, with a warning;
- upgrading a PostgreSQL archive to index revision 0008 (the places in the index) dropped what
  each node's data directory held still to send: a node without a place in the index now
  starts from its own file."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_forward import ENV, STORESCP, _store, _wait_for

from archivist.archive.archive import Archive
from archivist.config import load_settings
from archivist.index.followers import FollowerSlot
from archivist.testing import postgres
from archivist.testing.net import wait_listening
from archivist.testing.server import ServerProcess, free_port

log = logging.getLogger(__name__)


@pytest.mark.skipif(not os.path.exists(STORESCP), reason="DCMTK needed")
def test_forwarding_after_a_place_past_the_log(tmp_path: Path) -> None:
    port, out = free_port(), tmp_path / "received"
    out.mkdir()
    receiver = subprocess.Popen([STORESCP, "-aet", "BACKUP", "-od", str(out), str(port)],
                                env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"ARCHIVIST_PEERS": f"BACKUP=127.0.0.1:{port}", "ARCHIVIST_FORWARD_TO": "BACKUP"}
    try:
        wait_listening(port, receiver, what="storescp")
        srv = ServerProcess(tmp_path / "data", env=env).start()
        try:
            first = _store(srv, tmp_path / "first", 2)
            assert first <= _wait_for(out, first, timeout=60)
        finally:
            srv.stop()
        # The place as a backup copied after the index would have it: further on.
        (saved,) = (tmp_path / "data" / "forward").glob("*.json")
        state = json.loads(saved.read_text())
        state["seq"] += 50
        saved.write_text(json.dumps(state))
        srv = ServerProcess(tmp_path / "data", env=env).start()
        try:
            later = _store(srv, tmp_path / "later", 3)
            assert later <= _wait_for(out, later, timeout=60)
            assert "past the end of the change log" in srv.log()
        finally:
            srv.stop()
    finally:
        receiver.terminate()
        receiver.wait(10)


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.PostgresServer]:
    if not postgres.available():
        pytest.skip("PostgreSQL needed (apt-get install postgresql)")
    server = postgres.PostgresServer().start()
    yield server
    server.stop()


def test_a_node_keeps_its_own_place_when_the_index_has_none(pg: postgres.PostgresServer,
                                                             tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={"data_dir": tmp_path / "node",
                                                 "database_url": pg.new_database()})
    archive = Archive.open(settings)
    try:
        folder = tmp_path / "node" / "ian"
        slot = FollowerSlot(archive.index, "ian", "RIS", folder)
        # What this node kept before revision 0008: a study still to be announced.
        folder.mkdir(parents=True)
        kept = {"aet": "RIS", "seq": 0, "studies": {"1.2.3": [1.0, 2.0]}}
        slot.path.write_text(json.dumps(kept))
        assert slot.load() == kept
        # A notifier starting writes the end of the log unless a place is saved: this one.
        assert slot.create({"aet": "RIS", "seq": 99, "studies": {}})
        assert not slot.create({"aet": "RIS", "seq": 98, "studies": {}})  # one saved already
        slot.path.unlink()  # what the index holds now, not the file
        assert slot.load() == kept
        # Saved in the index from now on.
        slot.save({**kept, "seq": 5})
        assert slot.load() == {**kept, "seq": 5}
        assert slot.within_log(5, lambda seq: slot.save({**kept, "seq": seq}), "IAN to RIS",
                               log) == archive.index.last_change()
    finally:
        archive.close()
