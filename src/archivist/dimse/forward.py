"""Forwarding (auto-routing): every instance stored from now on is also sent to the configured
peers named by ``forward_to`` (a backup archive, an AI node), as dcm4chee's export rules and
Orthanc's "store then forward" scripts do.

A forwarder follows the index's change log (the same one ``GET /api/changes`` serves), so it sees
what every ingest path stored (C-STORE, STOW-RS, ``archivist import``, C-MOVE pulls) in every
process, in order, and needs nothing from the ingest itself. Where it has got to is kept in a
small file per destination under ``<data>/forward/`` (named by a digest of the AE title, never
by the title itself), written and fsync'd after each batch; a destination that was just added
starts at the end of the log (what was stored before is not sent). One process forwards to a
destination at a time (a lock on that file), whichever worker of ``serve`` takes it first.

Each batch (at most 200 instances) goes over one association, as ``archivist send`` sends
(:func:`archivist.dimse.send.send_instances`: as stored when accepted, else decompressed).
When the destination cannot be reached the batch is tried again after 1 s, doubling up to
60 s, and nothing after it is skipped. An instance the destination refuses is tried in three
batches, then logged as not forwarded and left behind; an instance deleted before its turn is
skipped.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from archivist.core.levels import QueryLevel

if TYPE_CHECKING:
    from archivist.archive.archive import Archive
    from archivist.config import Peer

log = logging.getLogger("archivist.dimse.forward")

BATCH = 200
POLL_SECONDS = 1.0
RETRY_FIRST, RETRY_MAX = 1.0, 60.0
ATTEMPTS = 3
_FORWARDED_KINDS = ("stored", "replaced")


class Forwarder:
    """Sends what is stored to one destination, from a thread of its own."""

    def __init__(self, archive: Archive, peer: Peer) -> None:
        self.archive = archive
        self.peer = peer
        folder = Path(archive.settings.data_dir) / "forward"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{zlib.crc32(peer.aet.encode()):08x}.json"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._attempts: dict[str, int] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"forward-{self.peer.aet}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the cursor --------------------------------------------------------------------------

    def _read_cursor(self) -> int | None:
        try:
            raw = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError, OSError):
            return None
        if raw.get("aet") != self.peer.aet or not isinstance(raw.get("seq"), int):
            return None
        return int(raw["seq"])

    def _write_cursor(self, seq: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps({"aet": self.peer.aet, "seq": seq}))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        lock_path = self.path.with_suffix(".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while not self._stop.is_set():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:  # another worker forwards to this destination
                    self._stop.wait(5.0)
            else:
                return
            cursor = self._read_cursor()
            if cursor is None:
                cursor = self.archive.index.last_change()
                self._write_cursor(cursor)
                log.info("forwarding to %s starts after change %d (what is stored from now on)",
                         self.peer.aet, cursor)
            pause = RETRY_FIRST
            while not self._stop.is_set():
                try:
                    cursor, busy = self._batch(cursor)
                    pause = RETRY_FIRST
                except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out
                    (log.warning if pause == RETRY_FIRST else log.debug)(
                        "forwarding to %s: %s; next try in %.0f s", self.peer.aet,
                        str(exc) or type(exc).__name__, pause)
                    self._stop.wait(pause)
                    pause = min(RETRY_MAX, pause * 2)
                    continue
                if not busy:
                    self._stop.wait(POLL_SECONDS)
        finally:
            os.close(fd)

    def _batch(self, cursor: int) -> tuple[int, bool]:
        """Forward the next batch after `cursor`; returns the new cursor and whether there was
        anything to do. Raises when the destination could not be reached (cursor unchanged)."""
        from archivist.dimse.send import send_instances

        changes = self.archive.index.changes_since(cursor, BATCH)
        if not changes:
            return cursor, False
        last = int(changes[-1]["seq"])
        wanted = list(dict.fromkeys(
            str(c["sop_instance_uid"]) for c in changes
            if c["kind"] in _FORWARDED_KINDS and c["sop_instance_uid"]))
        refs = []
        if wanted:
            query = self.archive.search.query_from_pairs(
                QueryLevel.IMAGE, [("SOPInstanceUID", "\\".join(wanted))])
            refs = list(self.archive.retrieve.instances(query))  # deleted since: not found
        if refs:
            result = send_instances(self.archive, self.peer.host, self.peer.port,
                                    self.peer.aet, refs)
            refused = dict(result.failed)
            log.info("forwarded %d of %d instances to %s", result.sent, len(refs),
                     self.peer.aet)
            again = []
            for sop, reason in refused.items():
                tries = self._attempts.get(sop, 0) + 1
                if tries < ATTEMPTS:
                    self._attempts[sop] = tries
                    again.append(sop)
                else:
                    self._attempts.pop(sop, None)
                    log.error("sop=%s not forwarded to %s after %d attempts: %s", sop,
                              self.peer.aet, tries, reason)
            if again:
                # Stop before the first refused instance's change, to try it (and what follows
                # it) in the next batch.
                first = min(int(c["seq"]) for c in changes
                            if str(c["sop_instance_uid"]) in set(again))
                last = max(cursor, first - 1)
                if last == cursor:
                    self._stop.wait(RETRY_FIRST)
        self._write_cursor(last)
        return last, True


def start_forwarders(archive: Archive) -> list[Forwarder]:
    """A running :class:`Forwarder` for each AE title of ``forward_to``."""
    started = []
    for aet in archive.settings.forward_to:
        peer = archive.settings.peer(aet)
        if peer is None:  # config._check refuses this; kept for a settings object built by hand
            log.error("forward_to names %s, which is not a configured peer", aet)
            continue
        forwarder = Forwarder(archive, peer)
        forwarder.start()
        started.append(forwarder)
    return started
