"""Storage Commitment Push Model SCP (PS3.4 Annex J): a modality asks whether the archive has
taken the objects it sent into safekeeping before it deletes its own copies.

The requestor sends an N-ACTION (Action Type 1, Request Storage Commitment) on the well-known
Storage Commitment Push Model SOP Instance, naming a Transaction UID and the SOP instances in a
Referenced SOP Sequence. The archive answers the N-ACTION at once and then reports, in an
N-EVENT-REPORT on a **new association** to the requestor (PS3.4 J.3.3), which instances it
holds (Event Type 1: all of them; 2: some failed, in a Failed SOP Sequence with a Failure
Reason):

- held: an index row for the SOP Instance UID with the same SOP Class, and its stored object
  present with the size the index recorded (so committed means written, fsync'd and indexed:
  what a C-STORE success already promised);
- 0x0112 No such object instance: not stored (never received, refused, or deleted);
- 0x0119 Class / Instance conflict: stored with another SOP Class UID;
- 0x0110 Processing failure: its stored object is missing or has another size.

The report goes to the address configured for the requestor's AE title (``--peer AET=HOST:PORT``,
as for C-MOVE destinations and Orthanc's ``DicomModalities``), proposing the SOP class with the
archive in the SCP role (SCP/SCU Role Selection, PS3.7 D.3.3.4). A requestor without a configured
address is refused at once (0x0110 with an Error Comment naming the setting), rather than
accepted and never answered. Reports are queued durably before the N-ACTION is answered
(``<data>/commitment-events/``, :mod:`archivist.inventory.outbox`) and retried with a growing
delay while the requestor cannot be reached (for a day), across restarts too; one unreachable
modality does not hold back the reports of another.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from archivist.core.pynetdicom_race import install as install_scu_guard
from archivist.core.scu_socket import no_delay
from archivist.core.tls import client_context
from archivist.core.uids import is_valid_uid
from archivist.dimse.services import Service, peer_aet
from archivist.dimse.status import Status, status_dataset
from archivist.inventory.outbox import Outbox, Pending, Sender

if TYPE_CHECKING:
    from archivist.archive.archive import Archive

log = logging.getLogger("archivist.dimse.commitment")

STORAGE_COMMITMENT = str(StorageCommitmentPushModel)  # 1.2.840.10008.1.20.1
#: The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.1).
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_COMMITMENT = 1  # N-ACTION Action Type ID (Table J.3-1)
ALL_COMMITTED, SOME_FAILED = 1, 2  # N-EVENT-REPORT Event Type IDs (Table J.3-2)

NO_SUCH_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
PROCESSING_FAILURE = 0x0110
#: At most this many instances in one request (a modality's study is far below it).
MAX_REFERENCES = 100_000


class CommitmentHandler:
    """N-ACTION on the Storage Commitment Push Model SOP Instance."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.outbox = Outbox(Path(archive.settings.data_dir) / "commitment-events")
        self._lock = threading.Lock()
        self._sender: _ReportSender | None = None
        if self.outbox.names():
            self._start()  # reports a previous process could not deliver

    def __call__(self, event: Any) -> tuple[Any, Dataset | None]:
        aet = peer_aet(event)
        req = event.request
        instance = str(getattr(req, "RequestedSOPInstanceUID", "") or "")
        if instance != STORAGE_COMMITMENT_INSTANCE:
            # (an Error Comment holds 64 characters: the UID whole, not cut)
            return status_dataset(NO_SUCH_INSTANCE, "Requested SOP Instance must be "
                                  f"{STORAGE_COMMITMENT_INSTANCE}"), None
        if int(getattr(req, "ActionTypeID", 0) or 0) != REQUEST_COMMITMENT:
            return status_dataset(0x0123, "No such action: Request Storage Commitment is 1"), None
        try:
            info = event.action_information
        except Exception:  # noqa: BLE001 - no Action Information, or one that does not decode
            info = None
        if not isinstance(info, Dataset):
            return status_dataset(0x0120, "The Action Information is missing"), None
        uid = str(info.get("TransactionUID", "") or "").strip()
        if not uid:
            return status_dataset(0x0120, "Transaction UID is missing"), None
        if not is_valid_uid(uid):
            return status_dataset(0x0106, "Transaction UID is not a valid UID"), None
        refs = info.get("ReferencedSOPSequence", None)
        if not refs:
            return status_dataset(0x0120, "Referenced SOP Sequence is missing or empty"), None
        if len(refs) > MAX_REFERENCES:
            return status_dataset(0x0106, f"More than {MAX_REFERENCES} instances in one "
                                  "request"), None
        pairs: list[tuple[str, str]] = []
        for item in refs:
            sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
            sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
            if not sop_class or not sop_instance:
                return status_dataset(0x0120, "Referenced SOP Sequence item without SOP "
                                      "Class or Instance UID"), None
            pairs.append((sop_class, sop_instance))
        if self.archive.settings.peer(aet) is None:
            # Nowhere to send the report: say so now rather than never answer.
            log.warning("storage commitment from %s refused: no address configured for it", aet)
            # (an Error Comment holds 64 characters)
            return status_dataset(PROCESSING_FAILURE, "Report address unknown: configure "
                                  f"--peer {aet}=HOST:PORT"), None
        job = zlib.crc32(aet.encode()) % 10**8  # the reports to one requestor, in order
        try:
            report, event_type = self._report(uid, pairs)
            # Queued (fsync'd) before the N-ACTION is answered; sent after it (outbox.py).
            self.outbox.put(job, {"requester_aet": aet, "transaction_uid": uid}, event_type,
                            report)
        except Exception as exc:
            log.exception("storage commitment from %s failed", aet)
            return status_dataset(PROCESSING_FAILURE,
                                  f"Processing failure: {type(exc).__name__}"), None
        failed = len(report.get("FailedSOPSequence", None) or [])
        log.info("storage commitment %s from %s: %d instances, %d committed, %d failed", uid,
                 aet, len(pairs), len(pairs) - failed, failed)
        self._start()
        assert self._sender is not None
        # It just reached us, so it is likely listening again: the reports queued for it
        # earlier (waiting up to a minute between tries) are tried now, not after the wait.
        self._sender.retry_now(job)
        return Status.SUCCESS, None

    # -- the report ------------------------------------------------------------------------------

    def _report(self, uid: str, pairs: list[tuple[str, str]]) -> tuple[Dataset, int]:
        committed: list[Dataset] = []
        failed: list[Dataset] = []
        for sop_class, sop_instance in pairs:
            reason = self._failure(sop_class, sop_instance)
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            if reason is None:
                committed.append(item)
            else:
                item.FailureReason = reason
                failed.append(item)
        ds = Dataset()
        ds.TransactionUID = uid
        ds.RetrieveAETitle = self.archive.settings.aet
        if committed:
            ds.ReferencedSOPSequence = committed
        if failed:
            ds.FailedSOPSequence = failed
        return ds, (SOME_FAILED if failed else ALL_COMMITTED)

    def _failure(self, sop_class: str, sop_instance: str) -> int | None:
        """None when the instance is held, else the Failure Reason (PS3.4 J.3.3.1.2)."""
        row = self.archive.index.get_instance(sop_instance)
        if row is None:
            return NO_SUCH_INSTANCE
        if str(row.get("sop_class_uid") or "") != sop_class:
            return CLASS_INSTANCE_CONFLICT
        path = self.archive.blobs.path(str(row.get("storage_key") or ""))
        if path is not None:
            try:
                if os.stat(path).st_size != int(row.get("size") or 0):
                    log.warning("storage commitment: sop=%s stored object has another size",
                                sop_instance)
                    return PROCESSING_FAILURE
            except OSError:
                log.warning("storage commitment: sop=%s stored object is missing", sop_instance)
                return PROCESSING_FAILURE
        return None

    # -- delivery --------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._sender is None:
                data_dir = Path(self.archive.settings.data_dir)
                self._sender = _ReportSender(self.outbox, self._deliver,
                                             alive=data_dir.exists,
                                             label="storage commitment report")

    def _deliver(self, pending: Pending) -> None:
        """Send one report; raises when it was not delivered (it is retried)."""
        from pynetdicom import AE, build_role

        settings = self.archive.settings
        aet = str(pending.job.get("requester_aet") or "")
        uid = str(pending.job.get("transaction_uid") or "")
        peer = settings.peer(aet)
        if peer is None:
            log.warning("storage commitment %s: %s no longer has a configured address; report "
                        "dropped", uid, aet)
            return
        install_scu_guard()  # pynetdicom's lost-response race
        ae = AE(ae_title=settings.aet)
        ae.acse_timeout = settings.acse_timeout
        ae.dimse_timeout = settings.dimse_timeout
        ae.network_timeout = settings.network_timeout
        ae.add_requested_context(STORAGE_COMMITMENT)
        tls = client_context(settings, peer.aet)  # a peer of dicom_tls_peers: TLS
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet,
                             ext_neg=[build_role(STORAGE_COMMITMENT, scu_role=False,
                                                 scp_role=True)],
                             tls_args=(tls, peer.host) if tls is not None else None)
        if not assoc.is_established:
            raise ConnectionError(f"association with {peer.aet} at {peer.host}:{peer.port} "
                                  "not accepted")
        no_delay(assoc)  # the report goes out without waiting for a delayed ACK
        try:
            status, _ = assoc.send_n_event_report(pending.dataset, pending.event_type,
                                                  STORAGE_COMMITMENT,
                                                  STORAGE_COMMITMENT_INSTANCE)
            if not status or "Status" not in status:
                raise ConnectionError(f"no response from {peer.aet} to the commitment report")
            log.info("storage commitment %s: report (event %d) to %s: 0x%04X", uid,
                     pending.event_type, peer.aet, int(status.Status) & 0xFFFF)
        finally:
            if assoc.is_established:
                assoc.release()


class _ReportSender(Sender):
    """The outbox's sender, and a requestor's queued reports tried at once on request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._now: set[int] = set()
        self._now_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def retry_now(self, job: int) -> None:
        """Try the reports of `job` (one requestor) at the next pass, whatever their delay."""
        with self._now_lock:
            self._now.add(job)
        self.wake()

    def _pass(self) -> float:
        with self._now_lock:
            jobs, self._now = self._now, set()
        if jobs:  # (in the sender's thread, the only one using its retry delays)
            self._retry = {name: due for name, due in self._retry.items()
                           if self.outbox.job_of(name) not in jobs}
        return super()._pass()


def services(archive: Archive) -> list[Service]:
    """Storage Commitment Push Model, as an SCP (see :mod:`archivist.dimse.services`)."""
    return [Service(STORAGE_COMMITMENT, "N-ACTION", CommitmentHandler(archive))]


__all__ = ["STORAGE_COMMITMENT", "STORAGE_COMMITMENT_INSTANCE", "CommitmentHandler", "services"]
