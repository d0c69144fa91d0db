"""The UPS-RS event channel: a WebSocket at ``/dicomweb/subscribers/{aetitle}`` (PS3.18 8.10,
Open Notification Connection and Send Event Report; 11.13 Workitem Event Reports).

While a subscriber's channel is open, its events are sent from the index's event outbox
(:meth:`archivist.archive.ups.Workitems.events_of`), where the core writes every event of every
change, whichever protocol made it (UPS-RS, N-CREATE, N-SET, N-ACTION), and any worker or node
that holds the channel sends them: each event is claimed first (one sender only), sent as a text
frame holding a DICOM JSON data set, then removed. The outbox is polled every
:data:`POLL_SECONDS`. An event a closed channel did not get stays in the outbox (for a day,
:data:`archivist.archive.ups.EVENT_KEEP`) and comes when the subscriber connects again.

Each message has Affected SOP Class UID (0000,0002) (the UPS Event SOP Class, as the example of
PS3.18 11.13), Message ID (0000,0110) (1, 2, ... on each channel), Affected SOP Instance UID (0000,1000) (the workitem),
Event Type ID (0000,1002) (1 State Report, 2 Cancel Requested, 3 Progress Report, 4 SCP Status
Change, 5 Assigned), and the event's attributes (PS3.4 Table CC.2.4-2).

The channel is guarded as the writes are (:mod:`archivist.web.app`): the server's ``--allow``
list, its Host check, HTTP Basic when ``http_users`` is set, and no other origin's page unless
``cors_origins`` names it (taking events from the outbox changes it). A plain GET there is
answered 426 Upgrade Required.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from archivist.archive.ups import UPS_EVENT, PendingEvent
from archivist.web.dicomweb.jsonmodel import dataset_to_json
from archivist.web.dicomweb.ups_rs import _AET, _INLINE, workitems_of
from archivist.web.errors import HTTPProblem

__all__ = ["MAX_CHANNELS", "POLL_SECONDS", "channel", "event_message", "not_a_websocket"]

log = logging.getLogger("archivist.web")

#: How often an open channel looks for new events.
POLL_SECONDS = 0.5
#: Channels open at once in one worker; one more is closed with 1013 (try again later).
MAX_CHANNELS = 64
#: How long a claimed event is held for this sender (then another may send it).
_LEASE = 30.0
#: WebSocket close codes (RFC 6455 7.4.1).
GOING_AWAY, POLICY_VIOLATION, TRY_AGAIN_LATER = 1001, 1008, 1013


def event_message(event: PendingEvent, message_id: int) -> dict[str, Any]:
    """One Event Report as the DICOM JSON data set of its WebSocket message."""
    body = dataset_to_json(event.info, "", inline_up_to=_INLINE)
    body.update({
        "00000002": {"vr": "UI", "Value": [UPS_EVENT]},
        "00000110": {"vr": "US", "Value": [message_id & 0xFFFF]},
        "00001000": {"vr": "UI", "Value": [event.ups_uid]},
        "00001002": {"vr": "US", "Value": [event.event_type]},
    })
    return dict(sorted(body.items()))


async def not_a_websocket(request: Request, aetitle: str) -> Response:
    """A plain HTTP request where the channel is: 426 and how to open it."""
    raise HTTPProblem(426, "this is the UPS-RS event channel: open it as a WebSocket "
                      "(PS3.18 8.10.4)", {"Upgrade": "websocket", "Connection": "Upgrade"})


async def channel(websocket: WebSocket) -> None:
    """Send `aetitle`'s events, in order, for as long as the channel is open."""
    aet = str(websocket.path_params.get("aetitle", "")).strip()
    state = websocket.app.state
    if not _AET.match(aet):
        await websocket.close(POLICY_VIOLATION, "the AE title must be 1 to 16 characters")
        return
    open_now = getattr(state, "ups_channels", 0)
    if open_now >= MAX_CHANNELS:
        await websocket.close(TRY_AGAIN_LATER, "too many event channels open; try again later")
        return
    state.ups_channels = open_now + 1
    try:
        await websocket.accept()
        await _send_events(websocket, aet, state)
    finally:
        state.ups_channels -= 1


async def _send_events(websocket: WebSocket, aet: str, state: Any) -> None:
    items = workitems_of(state)
    closed = asyncio.Event()

    async def watch() -> None:
        """Read (and ignore) what the subscriber sends, until it closes."""
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            closed.set()

    watcher = asyncio.ensure_future(watch())
    health = getattr(state, "health", None)
    sent = 0  # the Message ID of each message: 1, 2, ... on this channel
    try:
        while not closed.is_set():
            if health is not None and health.stopping:
                await websocket.close(GOING_AWAY, "the archive is stopping")
                return
            events = await run_in_threadpool(items.events_of, aet)
            for event in events:
                if closed.is_set():
                    return
                if not await run_in_threadpool(items.claim, event.pk, _LEASE):
                    break  # another sender holds it: the next ones wait, in order
                sent += 1
                try:
                    await websocket.send_text(json.dumps(event_message(event, sent),
                                                         ensure_ascii=False))
                except Exception:  # noqa: BLE001 - gone: the event is due again at once
                    await run_in_threadpool(items.retry_later, event.pk, 0)
                    return
                await run_in_threadpool(items.delivered, event.pk)
            try:
                await asyncio.wait_for(closed.wait(), POLL_SECONDS)
            except TimeoutError:
                pass
    except Exception:  # the index failing: the subscriber reconnects later
        log.warning("UPS-RS event channel of %s failed", aet, exc_info=True)
        with contextlib.suppress(Exception):  # closed already
            await websocket.close(TRY_AGAIN_LATER, "the archive's index failed; reconnect")
    finally:
        watcher.cancel()
