"""A guard against a race in pynetdicom's requestor (3.0.4; pydicom/pynetdicom#875).

Each association pynetdicom requests runs a reactor thread that takes messages off the DIMSE
queue without blocking (``get_msg(block=False)``) and serves the requests among them; anything
else it drops, logging "Received unexpected ... service message". A ``send_*`` call pauses that
thread before it sends, but the pause can be passed just as it is set: on a loaded machine the
reactor then takes the response the ``send_*`` call waits for, and the caller gets nothing (a
C-FIND loses a match; an N-CREATE or N-EVENT-REPORT waits its whole DIMSE timeout and is
reported as failed, though the peer answered). Seen here with the wire captured: ~3 lost
responses in ~4,900 C-FINDs at a load average of 10.

:func:`install` makes the non-blocking call, which only the reactor makes, hand out requests
only; responses stay queued for the ``send_*`` that waits for them (``block=True``, unchanged).
Archivist's own acceptor does not use pynetdicom's reactor; the guard is for the associations
Archivist requests through pynetdicom (event reports, IAN, check-peer, migrate...) and for the
test suite's clients.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["install"]

_installed = False
_lock = threading.Lock()


def install() -> None:
    """Patch pynetdicom's DIMSE provider once (idempotent, thread-safe)."""
    global _installed
    with _lock:
        if _installed:
            return
        from pynetdicom.dimse import DIMSEServiceProvider

        original = DIMSEServiceProvider.get_msg

        def get_msg(self: Any, block: bool = False) -> Any:
            if block:
                return original(self, block=True)
            queue = self.msg_queue
            with queue.mutex:
                if queue.queue and getattr(queue.queue[0][1], "is_valid_request", False):
                    item = queue.queue.popleft()
                    queue.not_full.notify()
                    return item
            return None, None

        get_msg.__doc__ = original.__doc__
        DIMSEServiceProvider.get_msg = get_msg  # type: ignore[method-assign]
        _installed = True
