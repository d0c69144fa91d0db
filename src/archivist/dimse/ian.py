"""Instance Availability Notification SCU (PS3.4 Annex R): a RIS or a workflow manager is told
which instances of a study the archive holds, once the study has been received, as dcm4chee's
"IAN on timeout" tells it.

When a study has had no new instance for ``ian_delay`` seconds (whatever stored it: C-STORE,
STOW-RS, ``archivist import``, C-MOVE pulls), the archive sends each peer named by ``ian_to``
an N-CREATE on the Instance Availability Notification SOP Class (PS3.4 R.3.2.1) listing every
instance of the study it holds then, with the attributes of PS3.4 Table R.3.2-1 and no others
(R.3.2.1.2 forbids optional ones: no patient data):

- Study Instance UID;
- Referenced Performed Procedure Step Sequence: the MPPS instances the archive holds for the
  study (:mod:`archivist.archive.mpps`; Performed Workitem Code Sequence empty), else empty;
- Referenced Series Sequence: Series Instance UID and a Referenced SOP Sequence of Referenced
  SOP Class / Instance UID, Instance Availability ``ONLINE`` and Retrieve AE Title (ours).

A study that receives more instances after its notification is notified again once quiet,
listing all of its instances. Deletions are not notified.

Like forwarding (:mod:`archivist.dimse.forward`), a notifier follows the index's change log, so
it sees every ingest path in every process. Where it has got to, and the studies waiting for
their quiet time or a retry, are kept in a small file per destination under ``<data>/ian/``
(named by a digest of the AE title), written and fsync'd after each pass: a restart loses no
study; with the index in PostgreSQL they are kept in the index instead
(:mod:`archivist.index.followers`). A destination that was just added starts at the end of the
log. One process notifies a destination at a time (a lock on that file; on PostgreSQL an
advisory lock: one of all the nodes sharing the index, so each study is notified once, not once
per node). The notifications due go over one association;
while the destination cannot be reached (or the association ends before an answer) they are
tried again after 1 s, doubling up to 60 s, and nothing is dropped. A notification the
destination refuses (a failure status, or no presentation context) is sent again 1 s and 2 s
later, three times in all, then logged as not delivered and dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from archivist.archive.mpps import MPPS_SOP_CLASS, ProcedureSteps
from archivist.core.levels import QueryLevel
from archivist.core.pynetdicom_race import install as install_scu_guard
from archivist.core.scu_socket import no_delay
from archivist.core.tls import client_context
from archivist.index.followers import RETRY_FIRST, FollowerSlot

if TYPE_CHECKING:
    from archivist.archive.archive import Archive
    from archivist.config import Peer

log = logging.getLogger("archivist.dimse.ian")

#: The Instance Availability Notification SOP Class (PS3.4 R.3.3).
IAN_SOP_CLASS = "1.2.840.10008.5.1.4.33"
ONLINE = "ONLINE"  # Instance Availability (PS3.3 C.4.23.1.1): retrievable at once from us
BATCH = 1000  # changes read at a time
STUDIES_PER_ASSOCIATION = 100
ATTEMPTS = 3
MAX_PROCEDURE_STEPS = 100
_NOTIFIED_KINDS = ("stored", "replaced")


class Notifier:
    """Sends the Instance Availability Notifications of one destination, from a thread."""

    def __init__(self, archive: Archive, peer: Peer) -> None:
        self.archive = archive
        self.peer = peer
        self.slot = FollowerSlot(archive.index, "ian", peer.aet,
                                 Path(archive.settings.data_dir) / "ian")
        self.path = self.slot.path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Studies to notify: Study Instance UID -> [time of its last change (s since the
        #: epoch), refusals so far]. Kept in the cursor file.
        self._studies: dict[str, list[float]] = {}
        self._due: dict[str, float] = {}  # when a refused one is sent again (monotonic)

    def start(self) -> None:
        self._create_cursor()
        self._thread = threading.Thread(target=self._run, name=f"ian-{self.peer.aet}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the cursor --------------------------------------------------------------------------

    def _create_cursor(self) -> None:
        """A destination just added starts at the end of the change log: written before the
        server takes anything, so a study stored at once is not missed (whichever worker or
        node writes it first: one written already is not replaced)."""
        if self.slot.create(self._state(self.archive.index.last_change())):
            log.info("notifying %s of the studies stored from now on", self.peer.aet)

    def _read_cursor(self) -> int | None:
        raw = self.slot.load()
        if raw is None or raw.get("aet") != self.peer.aet or not isinstance(raw.get("seq"), int):
            return None
        self._studies, self._due = {}, {}
        studies = raw.get("studies")
        if isinstance(studies, dict):
            self._studies = {str(uid): [float(v[0]), float(v[1])] for uid, v in studies.items()
                             if isinstance(v, list) and len(v) == 2
                             and all(isinstance(x, (int, float)) for x in v)}
        return int(raw["seq"])

    def _state(self, seq: int) -> dict[str, Any]:
        return {"aet": self.peer.aet, "seq": seq, "studies": self._studies}

    def _write_cursor(self, seq: int) -> None:
        self.slot.save(self._state(seq))

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        self.slot.follow(self._stop, self._start_cursor, self._pass, f"IAN to {self.peer.aet}",
                         log)

    def _start_cursor(self) -> int:
        """Where the holder of the slot starts: the place saved, else (unreadable) the end of
        the log."""
        cursor = self._read_cursor()
        if cursor is None:
            cursor = self.archive.index.last_change()
            self._write_cursor(cursor)
            return cursor
        # Moved back, the place is saved with the studies still waiting.
        return self.slot.within_log(cursor, self._write_cursor, f"IAN to {self.peer.aet}",
                                    log)

    def _pass(self, cursor: int) -> tuple[int, bool]:
        cursor = self._follow(cursor)
        self._notify_due(cursor)
        return cursor, False  # a pass every POLL_SECONDS: studies become due with time

    def _follow(self, cursor: int) -> int:
        """Note the studies stored in since `cursor`; returns the new cursor (saved)."""
        moved = False
        while not self._stop.is_set():
            changes = self.archive.index.changes_since(cursor, BATCH)
            if not changes:
                break
            now = time.time()
            for c in changes:
                study = c.get("study_instance_uid")
                if c["kind"] in _NOTIFIED_KINDS and study:
                    at = min(now, _seconds(c.get("at"), now))
                    last = self._studies.get(str(study), [0.0, 0.0])[0]
                    self._studies[str(study)] = [max(at, last), 0.0]  # new: tries start again
                    self._due.pop(str(study), None)
            cursor = int(changes[-1]["seq"])
            moved = True
            if len(changes) < BATCH:
                break
        if moved:
            self._write_cursor(cursor)
        return cursor

    def _notify_due(self, cursor: int) -> None:
        """Send the notifications of the studies quiet for ``ian_delay``; raises when the
        destination could not be reached or the association ended (they stay due)."""
        now, clock = time.time(), time.monotonic()
        delay = self.archive.settings.ian_delay
        due = sorted((uid for uid, (at, _) in self._studies.items()
                      if now - at >= delay and self._due.get(uid, 0.0) <= clock),
                     key=lambda uid: self._studies[uid][0])[:STUDIES_PER_ASSOCIATION]
        if not due:
            return
        try:
            self._send(due)
        finally:
            self._write_cursor(cursor)

    def _send(self, due: list[str]) -> None:
        from pynetdicom import AE
        from pynetdicom.status import code_to_category

        settings = self.archive.settings
        peer = self.peer
        install_scu_guard()  # pynetdicom's lost-response race
        ae = AE(ae_title=settings.aet)
        ae.acse_timeout = settings.acse_timeout
        ae.dimse_timeout = settings.dimse_timeout
        ae.network_timeout = settings.network_timeout
        ae.add_requested_context(IAN_SOP_CLASS)
        tls = client_context(settings, peer.aet)  # a peer of dicom_tls_peers: TLS
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet,
                             tls_args=(tls, peer.host) if tls is not None else None)
        no_delay(assoc)  # event data sets go out without waiting for a delayed ACK
        if not assoc.is_established:
            if assoc.rejected_contexts and not assoc.accepted_contexts:
                # It answered, without the IAN SOP Class (pynetdicom then aborts): a refusal
                # of each, not a peer that cannot be reached.
                for study in due:
                    self._refused(study, "Instance Availability Notification not accepted")
                return
            raise ConnectionError(f"association with {peer.aet} at {peer.host}:{peer.port} "
                                  "not accepted")
        try:
            accepted = any(cx.abstract_syntax == IAN_SOP_CLASS
                           for cx in assoc.accepted_contexts)
            for study in due:
                if self._stop.is_set():
                    return
                notification = self.notification(study)
                if notification is None:  # deleted since
                    log.info("IAN for study %s not sent to %s: no instances left", study,
                             peer.aet)
                    self._forget(study)
                    continue
                if not accepted:
                    self._refused(study, "Instance Availability Notification not accepted")
                    continue
                status, _ = assoc.send_n_create(notification, IAN_SOP_CLASS, generate_uid())
                if not status or "Status" not in status:
                    # Aborted or not answered: a try of this study (one the peer always
                    # aborts on is dropped after the third, as a refusal, instead of holding
                    # back every later study); the others wait for the next association.
                    self._refused(study, "no answer (the association ended)")
                    return
                code = int(status.Status) & 0xFFFF
                series = notification.ReferencedSeriesSequence
                if code_to_category(code) in ("Success", "Warning"):
                    log.info("IAN for study %s (%d series, %d instances) sent to %s: 0x%04X",
                             study, len(series), sum(len(s.ReferencedSOPSequence)
                                                     for s in series), peer.aet, code)
                    self._forget(study)
                else:
                    self._refused(study, f"status 0x{code:04X}")
        finally:
            if assoc.is_established:
                assoc.release()

    def _refused(self, study: str, why: str) -> None:
        entry = self._studies[study]
        tries = int(entry[1]) + 1
        if tries >= ATTEMPTS:
            self._forget(study)
            log.error("IAN for study %s not delivered to %s after %d attempts: %s", study,
                      self.peer.aet, tries, why)
            return
        entry[1] = float(tries)
        self._due[study] = time.monotonic() + RETRY_FIRST * 2 ** (tries - 1)
        log.warning("IAN for study %s refused by %s (%s); try %d of %d", study, self.peer.aet,
                    why, tries, ATTEMPTS)

    def _forget(self, study: str) -> None:
        self._studies.pop(study, None)
        self._due.pop(study, None)

    # -- the notification ----------------------------------------------------------------------

    def notification(self, study: str) -> Dataset | None:
        """The N-CREATE Attribute List for `study` as held now (PS3.4 Table R.3.2-1), or None
        when none of its instances is held."""
        query = self.archive.search.query_from_pairs(QueryLevel.STUDY,
                                                     [("StudyInstanceUID", study)])
        series: dict[str, list[Dataset]] = {}
        for ref in self.archive.retrieve.instances(query):
            item = Dataset()
            item.ReferencedSOPClassUID = ref.sop_class_uid
            item.ReferencedSOPInstanceUID = ref.sop_instance_uid
            item.InstanceAvailability = ONLINE
            item.RetrieveAETitle = self.archive.settings.aet
            series.setdefault(ref.series_instance_uid, []).append(item)
        if not series:
            return None
        ds = Dataset()
        steps = []
        for step in ProcedureSteps(self.archive.index).list(study=study,
                                                            limit=MAX_PROCEDURE_STEPS):
            ref_pps = Dataset()
            ref_pps.ReferencedSOPClassUID = MPPS_SOP_CLASS
            ref_pps.ReferencedSOPInstanceUID = step.sop_instance_uid
            ref_pps.PerformedWorkitemCodeSequence = []
            steps.append(ref_pps)
        ds.ReferencedPerformedProcedureStepSequence = steps
        ds.StudyInstanceUID = study
        items = []
        for uid, sops in series.items():
            item = Dataset()
            item.SeriesInstanceUID = uid
            item.ReferencedSOPSequence = sops
            items.append(item)
        ds.ReferencedSeriesSequence = items
        return ds


def _seconds(at: Any, default: float) -> float:
    """A change's time (the index gives SQLite's back naive, in UTC) in seconds."""
    if not isinstance(at, datetime):
        return default
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


def start_notifiers(archive: Archive) -> list[Notifier]:
    """A running :class:`Notifier` for each AE title of ``ian_to``."""
    started = []
    for aet in archive.settings.ian_to:
        peer = archive.settings.peer(aet)
        if peer is None:  # config._check refuses this; kept for a settings object built by hand
            log.error("ian_to names %s, which is not a configured peer", aet)
            continue
        notifier = Notifier(archive, peer)
        notifier.start()
        started.append(notifier)
    return started


__all__ = ["IAN_SOP_CLASS", "Notifier", "start_notifiers"]
