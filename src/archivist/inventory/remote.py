"""The SCU side: Repository Query, plain C-FIND per level, C-MOVE and C-GET against a peer.

pynetdicom 3.0.4, as SCU, treats a Repository Query 0xB001 Warning as "end of pending" but keeps
reading for another response, so against a conforming SCP (which ends with the Warning) it waits
for ``dimse_timeout`` and aborts. :func:`repository_query` reads the responses itself and stops
at 0xB001; a trailing 0x0000 from a pynetdicom-based SCP (which sends one) answers an earlier
Message ID and is skipped.

pynetdicom is imported inside the functions (the inventory layer does not need it otherwise).
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from archivist.core.pynetdicom_race import install as install_scu_guard
from archivist.core.scu_socket import no_delay
from archivist.errors import ArchivistError
from archivist.inventory import (
    INVENTORY_CREATION,
    REPOSITORY_QUERY,
    STORAGE_MANAGEMENT_INSTANCE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
)

log = logging.getLogger("archivist.inventory.events")

_ADDRESS = re.compile(r"^([^@]{1,16})@(\[[^\]]+\]|[^:]+):(\d{1,5})$")


class RemoteError(ArchivistError):
    """A peer that could not be reached, refused us, or answered with a failure."""


@dataclass(frozen=True)
class Remote:
    """A peer DICOM node: ``AET@HOST:PORT``."""

    aet: str
    host: str
    port: int
    calling_aet: str = "ARCHIVIST"
    dimse_timeout: float = 60.0
    acse_timeout: float = 30.0
    network_timeout: float = 60.0

    @classmethod
    def parse(cls, text: str, **kwargs: Any) -> Remote:
        m = _ADDRESS.match(text.strip())
        if m is None:
            raise RemoteError(f"{text!r}: expected AET@HOST:PORT")
        host = m.group(2).strip("[]")
        port = int(m.group(3))
        if not 0 < port < 65536:
            raise RemoteError(f"{text!r}: port out of range")
        return cls(m.group(1).strip(), host, port, **kwargs)

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def install_n_action_fix() -> None:
    """Let N-ACTION responses carry Attribute Identifier List (0000,1005), both ways
    (idempotent).

    PS3.7 10.1.4.1 allows it in an N-ACTION-RSP and Inventory Creation needs it with 0xB010
    (PS3.4 KK.2.2). pynetdicom 3.0.4 loses it twice: the N-ACTION-RSP command set does not list
    it (so it is never encoded), and its N_ACTION primitive has no such parameter (so neither a
    handler's status nor a received response can fill it, although the primitive lists it among
    its optional status keywords).
    """
    import pynetdicom.dimse_messages as dm
    from pynetdicom.dimse_primitives import N_ACTION, N_GET

    keys = dm._COMMAND_SET_KEYWORDS["N-ACTION-RSP"]  # type: ignore[attr-defined]
    if "AttributeIdentifierList" not in keys:
        dm._COMMAND_SET_KEYWORDS["N-ACTION-RSP"] = (  # type: ignore[attr-defined]
            *keys, "AttributeIdentifierList")
    if "AttributeIdentifierList" not in vars(N_ACTION):
        # The same parameter (and validation) as N-GET's.
        N_ACTION._attribute_identifier_list = None  # type: ignore[attr-defined]
        N_ACTION.AttributeIdentifierList = N_GET.AttributeIdentifierList  # type: ignore[attr-defined]


@dataclass
class PageResult:
    """What one Repository Query C-FIND returned."""

    records: list[Dataset] = field(default_factory=list)
    status: int = 0
    limit_reached: bool = False


def _ae(remote: Remote) -> Any:
    from pynetdicom import AE

    install_scu_guard()  # pynetdicom's lost-response race
    ae = AE(ae_title=remote.calling_aet)
    ae.acse_timeout = remote.acse_timeout
    ae.dimse_timeout = remote.dimse_timeout
    ae.network_timeout = remote.network_timeout
    return ae


def unreachable(remote: Remote, timeout: float) -> str | None:
    """Why nothing accepts a TCP connection at `remote`'s address (a stopped archive, a wrong
    port), as a person can read it; None when something does."""
    try:
        with socket.create_connection((remote.host, remote.port), timeout=timeout):
            return None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"{remote} could not be reached: {reason} at {remote.host}:{remote.port}"


def _not_established(remote: Remote, assoc: Any) -> str:
    """Why the association with `remote` did not come about, as a person can act on it: a
    rejection, or nothing listening (pynetdicom reports a refused connection as an abort)."""
    if assoc.is_rejected:
        return (f"association with {remote} was rejected (does it know the calling AE title "
                f"{remote.calling_aet} and the called one {remote.aet}?)")
    return (unreachable(remote, min(5.0, remote.acse_timeout or 5.0))
            or f"association with {remote} was not accepted (aborted or timed out)")


def associate(remote: Remote, contexts: list[str], *, storage: list[Any] | None = None,
              evt_handlers: list[Any] | None = None) -> Any:
    """An established association proposing `contexts` (and storage SCP roles for C-GET).

    Raises
    ------
    RemoteError
        The peer rejected or could not be reached.
    """
    from pynetdicom import build_role

    ae = _ae(remote)
    for uid in contexts:
        ae.add_requested_context(uid)
    roles: dict[str, Any] = {}  # one SCP/SCU Role Selection item per SOP Class (PS3.7 D.3.3.4)
    for cx in storage or []:
        ae.add_requested_context(cx.abstract_syntax, cx.transfer_syntax)
        roles.setdefault(str(cx.abstract_syntax), build_role(cx.abstract_syntax, scp_role=True))
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.aet,
                         ext_neg=list(roles.values()) or None, evt_handlers=evt_handlers)
    if not assoc.is_established:
        raise RemoteError(_not_established(remote, assoc))
    # Without it, each C-FIND of an inventory walk waited ~40 ms for the peer's delayed ACK.
    no_delay(assoc)
    keep_responses_from_the_reactor(assoc)
    return assoc


def keep_responses_from_the_reactor(assoc: Any) -> None:
    """Leave DIMSE responses on `assoc` to the request that waits for them.

    pynetdicom 3.0.4 pauses its reactor thread while a request waits for its responses and
    sets it free when they end. The reactor, once woken, makes one more pass even if the next
    request has paused it again meanwhile (``threading.Event.wait`` returns after a ``set``
    even when a ``clear`` followed), and that pass takes whatever message is queued. On a busy
    machine the reactor may get its turn only after the next request's first response has
    arrived: it takes it, logs "Received unexpected C-FIND service message" and drops it, and
    the request waits out its DIMSE timeout and aborts (a migration or an inventory of a
    remote then fails, or retries a study). The reactor polls without blocking and requesters
    always block, so the reactor's poll here skips a queued response (a message that answers
    a Message ID); requests from the peer still reach it.
    """
    dimse = assoc.dimse
    take = dimse.get_msg
    queued = dimse.msg_queue

    def get_msg(block: bool = False) -> Any:
        if not block:
            with queued.mutex:
                head = queued.queue[0] if queued.queue else None
            if head is not None and getattr(head[1], "MessageIDBeingRespondedTo", None) \
                    is not None:
                return None, None
        return take(block)

    dimse.get_msg = get_msg


def supports(assoc: Any, sop_class: str) -> bool:
    """Whether the peer accepted a presentation context for `sop_class`."""
    return any(str(cx.abstract_syntax) == sop_class for cx in assoc.accepted_contexts)


def _next_message_id(assoc: Any) -> int:
    """A Message ID of its own for each request on `assoc` (pynetdicom uses 1 unless told)."""
    n = int(getattr(assoc, "_archivist_message_id", 0)) % 0xFFFF + 1
    assoc._archivist_message_id = n
    return n


def repository_query(assoc: Any, identifier: Dataset) -> PageResult:
    """One Repository Query C-FIND; 0xB001 ends it (PS3.4 C.6.4.4).

    The responses are read here, not by pynetdicom's C-FIND generator (which keeps waiting
    after a 0xB001). pynetdicom pauses its reactor thread while the requestor reads responses;
    after a 0xB001 the reactor is left paused (the next request, or the release, takes over
    from there), so no response to a following request can reach the reactor instead of its
    reader. A pynetdicom-based SCP sends a trailing 0x0000 after its 0xB001: it answers the
    earlier Message ID and is skipped by the next Repository Query on the association.

    Raises
    ------
    RemoteError
        A failure status (its code is in the message), or the association was lost.
    """
    from pynetdicom.dimse_primitives import C_FIND
    from pynetdicom.dsutils import decode

    message_id = _next_message_id(assoc)
    # Sends the request with the reactor paused; its generator is never started.
    assoc.send_c_find(identifier, REPOSITORY_QUERY, msg_id=message_id).close()
    context = assoc._get_valid_context(REPOSITORY_QUERY, "", "scu")
    syntax = context.transfer_syntax[0]
    result = PageResult()
    try:
        while True:
            _cx, rsp = assoc.dimse.get_msg(block=True)
            if rsp is None or not isinstance(rsp, C_FIND) or not rsp.is_valid_response:
                assoc.abort()
                raise RemoteError("Repository Query failed: association lost" if rsp is None
                                  else "Repository Query failed: unexpected message")
            if rsp.MessageIDBeingRespondedTo != message_id:
                continue  # a trailing response to an earlier request
            code = int(rsp.Status) if rsp.Status is not None else -1
            if code in (0xFF00, 0xFF01):
                ds = decode(rsp.Identifier, syntax.is_implicit_VR, syntax.is_little_endian,
                            syntax.is_deflated) if rsp.Identifier is not None else None
                if ds is not None:
                    result.records.append(ds)
                continue
            result.status = code
            if code == 0xB001:
                result.limit_reached = True
                return result
            if code == 0x0000:
                return result
            comment = getattr(rsp, "ErrorComment", None) or ""
            raise RemoteError(f"Repository Query failed: 0x{code & 0xFFFF:04X} {comment}")
    finally:
        if not result.limit_reached:
            assoc._reactor_checkpoint.set()


def repository_walk(assoc: Any, level: str, keys: dict[str, Any], *,
                    page_size: int = 500) -> Iterator[Dataset]:
    """Every record of a Repository Query, page after page by Prior Record Key."""
    prior: bytes | None = None
    while True:
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
        ds.RecordKey = b""
        ds.MaximumNumberOfRecords = page_size
        if prior is not None:
            ds.PriorRecordKey = prior
        page = repository_query(assoc, ds)
        yield from page.records
        if not page.limit_reached:
            return
        if not page.records:
            raise RemoteError("Repository Query reached its limit without returning a record")
        last = page.records[-1].get("RecordKey")
        if not last:
            raise RemoteError("the peer returned no Record Key; cannot continue paging")
        prior = bytes(last)


def find(assoc: Any, identifier: Dataset, model: str = STUDY_ROOT_FIND) -> Iterator[Dataset]:
    """A plain C-FIND; yields the pending identifiers.

    Raises
    ------
    RemoteError
        A failure status, or the association was lost.
    """
    for status, ds in assoc.send_c_find(identifier, model):
        code = int(status.get("Status", -1)) if status else -1
        if code in (0xFF00, 0xFF01):
            if ds is not None:
                yield ds
            continue
        if code in (0x0000, 0xB001):
            return
        comment = status.get("ErrorComment", "") if status else "association lost"
        raise RemoteError(f"C-FIND failed: 0x{code & 0xFFFF:04X} {comment}")


@dataclass
class RetrieveResult:
    """Final sub-operation counts of a C-MOVE or C-GET."""

    status: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int = 0


def _final(responses: Iterator[Any]) -> RetrieveResult:
    last: Any = None
    for status, _ in responses:
        if status is None or "Status" not in status:
            raise RemoteError("association lost during retrieve")
        last = status
        if int(status.Status) not in (0xFF00, 0xFF01):
            break
    if last is None:
        raise RemoteError("no response to the retrieve request")
    return RetrieveResult(
        status=int(last.Status),
        completed=int(last.get("NumberOfCompletedSuboperations", 0) or 0),
        failed=int(last.get("NumberOfFailedSuboperations", 0) or 0),
        warning=int(last.get("NumberOfWarningSuboperations", 0) or 0),
        remaining=int(last.get("NumberOfRemainingSuboperations", 0) or 0),
    )


def move(assoc: Any, identifier: Dataset, destination: str,
         model: str = STUDY_ROOT_MOVE) -> RetrieveResult:
    """C-MOVE to `destination`; returns the final counts."""
    return _final(assoc.send_c_move(identifier, destination, model))


def get(assoc: Any, identifier: Dataset, model: str = STUDY_ROOT_GET) -> RetrieveResult:
    """C-GET over `assoc` (its C-STORE handler receives the instances)."""
    return _final(assoc.send_c_get(identifier, model))


class EventSender:
    """Sends an Inventory Creation N-EVENT-REPORT (PS3.4 KK.2.3) over a new association to the
    requester's configured address (``--peer AET=HOST:PORT``), as Storage Commitment does.

    Raises when the event was not delivered (no association, or no response to the
    N-EVENT-REPORT), so that the outbox keeps it and tries again. A requester without a
    configured address, or a job without a requester (started over HTTP), gets nothing.
    """

    def __init__(self, archive: Any) -> None:
        self.settings = archive.settings

    def __call__(self, job: Any, event_type: int, ds: Dataset) -> None:
        from pynetdicom import AE, build_role

        if not job.requester_aet:
            return
        peer = self.settings.peer(job.requester_aet)
        if peer is None:
            log.warning("inventory creation %s: %s has no configured address; event %d not sent",
                        job.transaction_uid, job.requester_aet, event_type)
            return
        install_scu_guard()  # pynetdicom's lost-response race
        ae = AE(ae_title=self.settings.aet)
        ae.acse_timeout = self.settings.acse_timeout
        ae.dimse_timeout = self.settings.dimse_timeout
        ae.network_timeout = self.settings.network_timeout
        ae.add_requested_context(INVENTORY_CREATION)
        from archivist.core.tls import client_context

        tls = client_context(self.settings, peer.aet)  # a peer of dicom_tls_peers: TLS
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet,
                             ext_neg=[build_role(INVENTORY_CREATION, scu_role=False,
                                                 scp_role=True)],
                             tls_args=(tls, peer.host) if tls is not None else None)
        if not assoc.is_established:
            raise RemoteError(f"association with {peer.aet} not accepted")
        no_delay(assoc)
        try:
            status, _ = assoc.send_n_event_report(ds, event_type, INVENTORY_CREATION,
                                                  STORAGE_MANAGEMENT_INSTANCE)
            if not status or "Status" not in status:
                raise RemoteError(f"no response from {peer.aet} to event {event_type}")
            log.info("inventory creation %s: event %d to %s: 0x%04X", job.transaction_uid,
                     event_type, peer.aet, int(status.Status) & 0xFFFF)
        finally:
            if assoc.is_established:
                assoc.release()
