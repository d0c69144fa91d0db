"""Forwarding (auto-routing): every instance stored from now on is also sent to the configured
peers named by ``forward_to`` (a backup archive, an AI node), as dcm4chee's export rules and
Orthanc's "store then forward" scripts do.

A forwarder follows the index's change log (the same one ``GET /api/changes`` serves), so it sees
what every ingest path stored (C-STORE, STOW-RS, ``archivist import``, C-MOVE pulls) in every
process, in order, and needs nothing from the ingest itself. Where it has got to is kept in a
small file per destination under ``<data>/forward/`` (named by a digest of the AE title, never
by the title itself), written and fsync'd after each batch, or, with the index in PostgreSQL,
in the index (:mod:`archivist.index.followers`); a destination that was just added starts at
the end of the log (what was stored before is not sent). One process forwards to a destination
at a time (a lock on that file; on PostgreSQL an advisory lock, so one of all the nodes sharing
the index, another taking over from the same place when it goes), whichever takes it first.

Each batch (at most 200 instances) goes over one association, as ``archivist send`` sends
(:func:`archivist.dimse.send.send_instances`: as stored when accepted, else decompressed).
When the destination cannot be reached the batch is tried again after 1 s, doubling up to
60 s, and nothing after it is skipped. An instance the destination refuses (a failure status,
no presentation context for it, or it cannot be read here), or was being sent when the
association ended, is sent again in the next batches, three times in all, then logged as not
forwarded and left behind; those a batch never offered because its association had ended
(aborted, gone away, not answered in time) are sent again until they go. Only these are sent
again, not what the destination already stored; the list of them is kept with the cursor. An
instance deleted before its turn is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from archivist.core.levels import QueryLevel
from archivist.index.followers import RETRY_FIRST, CursorMoved, FollowerSlot

if TYPE_CHECKING:
    from archivist.archive.archive import Archive
    from archivist.config import Peer

log = logging.getLogger("archivist.dimse.forward")

BATCH = 200
ATTEMPTS = 3
_FORWARDED_KINDS = ("stored", "replaced")


class Forwarder:
    """Sends what is stored to one destination, from a thread of its own."""

    def __init__(self, archive: Archive, peer: Peer) -> None:
        self.archive = archive
        self.peer = peer
        self.slot = FollowerSlot(archive.index, "forward", peer.aet,
                                 Path(archive.settings.data_dir) / "forward")
        self.path = self.slot.path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Instances to send again (refused, or never offered because the association ended):
        #: SOP Instance UID -> [refusals so far, change sequence number]. Kept in the cursor
        #: file, so a restart forgets none.
        self._retry: dict[str, list[int]] = {}
        self._due: dict[str, float] = {}  # when a refused one is sent again (monotonic)

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
        raw = self.slot.load()
        if raw is None or raw.get("aet") != self.peer.aet or not isinstance(raw.get("seq"), int):
            return None
        self._retry, self._due = {}, {}
        retry = raw.get("retry")
        if isinstance(retry, dict):
            self._retry = {str(sop): [int(v[0]), int(v[1])] for sop, v in retry.items()
                           if isinstance(v, list) and len(v) == 2
                           and all(isinstance(x, int) for x in v)}
        return int(raw["seq"])

    def _write_cursor(self, seq: int) -> None:
        self.slot.save({"aet": self.peer.aet, "seq": seq, "retry": self._retry})

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        self.slot.follow(self._stop, self._start_cursor, self._batch,
                         f"forwarding to {self.peer.aet}", log)

    def _start_cursor(self) -> int:
        """Where the holder of the slot starts: the place saved, else the end of the log."""
        cursor = self._read_cursor()
        if cursor is None:
            cursor = self.archive.index.last_change()
            self._write_cursor(cursor)
            log.info("forwarding to %s starts after change %d (what is stored from now on)",
                     self.peer.aet, cursor)
            return cursor
        return self.slot.within_log(cursor, self._write_cursor,
                                    f"forwarding to {self.peer.aet}", log)

    def _batch(self, cursor: int) -> tuple[int, bool]:
        """Forward the instances due to be sent again and the next changes after `cursor`;
        returns the new cursor and whether there was anything to do. Raises when the
        destination could not be reached (the cursor and what is to be sent again are as
        before), or :class:`_Stalled` when it took nothing before the association ended."""
        from archivist.dimse.send import send_instances

        now = time.monotonic()
        due = sorted((sop for sop in self._retry if self._due.get(sop, 0.0) <= now),
                     key=lambda sop: self._retry[sop][1])
        changes = self.archive.index.changes_since(cursor, max(1, BATCH - len(due)))
        if not changes and not due:
            return cursor, False
        last = int(changes[-1]["seq"]) if changes else cursor
        # Refused ones first, then the new changes in the order stored (the change log's).
        wanted: dict[str, int] = {sop: self._retry[sop][1] for sop in due}
        for c in changes:
            if c["kind"] in _FORWARDED_KINDS and c["sop_instance_uid"]:
                wanted.setdefault(str(c["sop_instance_uid"]), int(c["seq"]))
        refs = []
        if wanted:
            query = self.archive.search.query_from_pairs(
                QueryLevel.IMAGE, [("SOPInstanceUID", "\\".join(wanted))])
            refs = list(self.archive.retrieve.instances(query))  # deleted since: not found
            order = {sop: n for n, sop in enumerate(wanted)}
            refs.sort(key=lambda ref: order.get(ref.sop_instance_uid, len(order)))
        found = {ref.sop_instance_uid for ref in refs}
        for sop in due:
            if sop not in found:  # deleted since: forgotten
                self._forget(sop)
        stalled = None
        if refs:
            result = send_instances(self.archive, self.peer.host, self.peer.port,
                                    self.peer.aet, refs)
            log.info("forwarded %d of %d instances to %s", result.sent, len(refs),
                     self.peer.aet)
            unsent = set(result.unsent)
            failed = dict(result.failed)
            for ref in refs:
                sop = ref.sop_instance_uid
                if sop not in failed:
                    self._forget(sop)  # stored there
                elif sop in unsent:  # never offered: not refused, sent again in the next batch
                    self._retry.setdefault(sop, [0, wanted[sop]])
                    self._due.pop(sop, None)
                else:
                    tries = self._retry.get(sop, [0, wanted[sop]])[0] + 1
                    if tries < ATTEMPTS:
                        self._retry[sop] = [tries, wanted[sop]]
                        self._due[sop] = now + RETRY_FIRST * 2 ** (tries - 1)
                    else:
                        self._forget(sop)
                        log.error("sop=%s not forwarded to %s after %d attempts: %s", sop,
                                  self.peer.aet, tries, failed[sop])
            if result.interrupted and not result.sent:
                stalled = result.interrupted
        self._write_cursor(last)
        if stalled:
            # Nothing went before the association ended: like an unreachable destination,
            # tried again with a growing delay.
            raise _Stalled(last, stalled)
        if not changes:
            self._stop.wait(RETRY_FIRST)  # only instances to send again: not in a tight loop
        return last, True

    def _forget(self, sop: str) -> None:
        self._retry.pop(sop, None)
        self._due.pop(sop, None)


class _Stalled(CursorMoved):
    """The destination took nothing before the association ended; what was to be sent again
    is recorded and the cursor moved to `cursor`."""


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
