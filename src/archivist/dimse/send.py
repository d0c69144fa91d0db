"""Send stored instances to another DICOM node (C-STORE SCU), as C-MOVE's sub-operations do,
for ``archivist send`` (Orthanc's "send to DICOM modality").

One association with the destination (:class:`~archivist.dimse.requestor.Outbound`), the
presentation contexts C-MOVE proposes (:func:`~archivist.dimse.handlers.contexts_for`), and each
object sent as C-MOVE sends it: as stored when the destination accepted its transfer syntax,
else decompressed into an uncompressed syntax it accepted, with its SOP Instance UID unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from archivist.archive.transcode import TranscodeRefused
from archivist.dimse.acceptor_services import _NoContext, _sub_operation, category
from archivist.dimse.handlers import contexts_for
from archivist.dimse.requestor import AssociationRefused, Outbound
from archivist.errors import ArchivistError

if TYPE_CHECKING:
    from archivist.archive.archive import Archive
    from archivist.archive.retrieve import InstanceRef

__all__ = ["SendResult", "send_instances"]

#: What :meth:`Outbound.open` says when the peer accepted the association but none of the
#: presentation contexts.
_NONE_ACCEPTED = "no presentation context accepted"


@dataclass
class SendResult:
    """What a send did: instances stored (with a warning status among them), and those that
    were not, each with the reason.

    `unsent` names those of `failed` that were never offered: the association had ended
    (aborted, timed out, connection lost) before their turn. The one being sent when it ended
    is in `failed` only (the destination may have choked on it).
    """

    sent: int = 0
    warnings: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    unsent: list[str] = field(default_factory=list)
    #: Why the association ended before the last instance was answered (None: it did not).
    interrupted: str | None = None


def send_instances(archive: Archive, host: str, port: int, called: str,
                   refs: list[InstanceRef], *,
                   progress: Callable[[InstanceRef, str], None] | None = None) -> SendResult:
    """C-STORE `refs` to `called` at `host`:`port`, in order, over one association.

    `progress` is called after each instance with its outcome (``success``, ``warning`` or
    ``failure``).

    Raises
    ------
    archivist.dimse.requestor.AssociationRefused, OSError, TimeoutError
        The destination could not be associated with (nothing was sent). One that accepts
        the association but none of its presentation contexts does not raise: each instance
        is then failed, as one of a SOP class it did not accept.
    """
    return asyncio.run(_send(archive, host, port, called, refs, progress))


async def _send(archive: Archive, host: str, port: int, called: str, refs: list[InstanceRef],
                progress: Callable[[InstanceRef, str], None] | None) -> SendResult:
    loop = asyncio.get_running_loop()
    result = SendResult()
    try:
        outbound = await Outbound.open(archive.settings, host, port, called, contexts_for(refs))
    except AssociationRefused as exc:
        if str(exc) != _NONE_ACCEPTED:
            raise
        # Reached, and it takes none of these SOP classes / syntaxes: each is refused, as
        # when it accepts some of them (not "unreachable", which is tried again).
        reason = f"{called} accepted no presentation context that can carry it"
        for ref in refs:
            result.failed.append((ref.sop_instance_uid, reason))
            if progress is not None:
                progress(ref, "failure")
        return result
    broken: str | None = None
    try:
        for ref in refs:
            outcome = "failure"
            if broken is not None:
                result.failed.append((ref.sop_instance_uid, broken))
                result.unsent.append(ref.sop_instance_uid)
            else:
                try:
                    sop_class, sop, cx, data = await loop.run_in_executor(
                        None, _sub_operation, archive.retrieve.stored(ref), outbound.context_for)
                except _NoContext:
                    reason = f"{called} accepted no presentation context that can carry it"
                    result.failed.append((ref.sop_instance_uid, reason))
                except Exception as exc:  # noqa: BLE001 - unreadable, deleted, undecodable
                    result.failed.append((ref.sop_instance_uid,
                                          f"cannot be read or converted: {_why(exc)}"))
                else:
                    try:
                        code = await outbound.store(cx, outbound.new_message_id(), sop_class,
                                                    sop, data)
                    except Exception as exc:  # noqa: BLE001 - the destination went away
                        broken = f"the association ended ({type(exc).__name__})"
                        result.failed.append((ref.sop_instance_uid, broken))
                    else:
                        outcome = category(code)
                        if outcome == "success":
                            result.sent += 1
                        elif outcome == "warning":
                            result.sent += 1
                            result.warnings += 1
                        else:
                            outcome = "failure"
                            result.failed.append((ref.sop_instance_uid,
                                                  f"refused with status 0x{code:04X}"))
            if progress is not None:
                progress(ref, outcome)
    finally:
        if broken is None and not outbound.closed:
            await outbound.release()
    result.interrupted = broken
    return result


def _why(exc: BaseException) -> str:
    """What went wrong with an object: the reason of this archive's own refusals (a transcode
    refused says why: "the compressed frame declares ..."), the kind of error otherwise (a
    parser's message may quote the object's values)."""
    if isinstance(exc, (ArchivistError, TranscodeRefused)) and str(exc):
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return type(exc).__name__
