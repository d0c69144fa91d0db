"""HTTP Basic authentication (RFC 7617) for every route but ``/healthz``, when the ``http_users``
setting names users (what Orthanc's ``AuthenticationEnabled`` + ``RegisteredUsers`` give).

The UPS-RS event WebSocket is guarded the same way: its opening request needs the credentials
(a refusal is the same 401, as the WebSocket's HTTP answer).

Passwords are kept as scrypt hashes (:mod:`archivist.core.passwords`; ``archivist
hash-password`` makes one). A request without valid credentials gets 401 with
``WWW-Authenticate: Basic realm="Archivist", charset="UTF-8"`` and the JSON error body of this
server, before its body is read. A browser then asks for a name and password once and sends
them with every request of the page, the viewer's DICOMweb calls and the archive page's uploads
included. CORS preflights (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``,
which browsers send without credentials) are passed on, but only their answer (204, or 403 for
an origin not allowed) goes back: anything else becomes the 401 (``/wado`` serves ``OPTIONS``,
and a request merely dressed as a preflight got the object without a password).

A check costs tens of milliseconds of CPU by design, so credentials that passed are remembered
(by a digest of the header, at most 1,024) and checks run in a thread, at most two at a time,
and one at a time per client address, with at most a few more waiting (beyond that 429 with
``Retry-After``): a client sending wrong passwords in a loop, on as many connections as it
likes, slows itself, not the others nor their first log-in. An unknown user name takes as long
to refuse as a wrong password. Credentials with control characters are refused (RFC 7617 2).
Failures are logged with the client's address (never the name given).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import unicodedata
from typing import Any

from starlette.concurrency import run_in_threadpool

from archivist.config import Settings
from archivist.core.passwords import hash_password, verify_password
from archivist.web.errors import problem_response

__all__ = ["BasicAuth"]

log = logging.getLogger("archivist.web")

_CHALLENGE = 'Basic realm="Archivist", charset="UTF-8"'
_REMEMBERED = 1024
#: Checks one client address may have waiting (beyond the one running) before it gets 429.
_WAITING_PER_CLIENT = 4
#: What an unauthenticated preflight may answer; anything else is replaced by the 401.
_PREFLIGHT_ANSWERS = frozenset({204, 403})


class BasicAuth:
    """ASGI middleware: 401 unless the request carries the credentials of an ``http_users``
    entry (does nothing when there is none)."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.users = dict(settings.http_users)
        self._passed: dict[bytes, str] = {}
        self._checks = asyncio.Semaphore(2)
        #: Per client address: its checks waiting or running, and the lock they take turns on.
        self._clients: dict[str, tuple[int, asyncio.Lock]] = {}
        #: Checks under way, by digest of the credentials.
        self._running: dict[bytes, asyncio.Future[Any]] = {}
        # An unknown name is checked against this, as costly as the costliest user's hash.
        self._decoy = hash_password("no such user", like=max(
            self.users.values(), key=_cost)) if self.users else ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] not in ("http", "websocket") or not self.users
                or scope.get("path") == "/healthz"):
            await self.app(scope, receive, send)
            return
        try:
            user = await self._user(_header(scope, b"authorization"), _client(scope))
        except _Busy:
            await problem_response(
                429, "too many password checks from this address at once; try again shortly",
                {"Retry-After": "1", "X-Content-Type-Options": "nosniff"})(scope, receive, send)
            return
        if user is not None:
            await self.app(scope, receive, send)
        elif (scope.get("method") == "OPTIONS" and _header(scope, b"origin") is not None
                and _header(scope, b"access-control-request-method") is not None):
            await self._preflight(scope, receive, send)
        else:
            await _challenge(scope, receive, send)

    async def _preflight(self, scope: Any, receive: Any, send: Any) -> None:
        """A CORS preflight without credentials: the CORS layers answer it, but only with
        a preflight's answer; whatever else the route would give becomes the 401."""
        replaced = False

        async def only_preflight_answers(message: Any) -> None:
            nonlocal replaced
            if replaced:
                return
            if (message["type"] == "http.response.start"
                    and message.get("status") not in _PREFLIGHT_ANSWERS):
                replaced = True
                await _challenge(scope, receive, send)
                return
            await send(message)

        await self.app(scope, receive, only_preflight_answers)

    async def _user(self, header: str | None, client: str) -> str | None:
        """The user `header` names with the right password, or None; raises :class:`_Busy`."""
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "basic" or not token or len(token) > 4096:
            return None
        key = hashlib.sha256(token.encode("latin-1", "replace")).digest()
        known = self._passed.get(key)
        if known is not None:
            return known
        # A page that has just been given the password sends it on many requests at once
        # (the viewer's first screen): they wait for one check instead of making one each.
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._check(token, key, client))
            self._running[key] = running
            running.add_done_callback(lambda _done: self._running.pop(key, None))
        outcome = await asyncio.shield(running)
        if outcome is _BUSY:
            raise _Busy
        return outcome  # type: ignore[return-value]

    async def _check(self, token: str, key: bytes, client: str) -> str | None | object:
        """Check `token` (scrypt, in a thread): the user's name, None, or ``_BUSY``."""
        try:
            raw = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            return None
        try:
            text = raw.decode("utf-8")  # what the challenge's charset asks for
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # what many clients send (requests, curl's -u on some)
        name, sep, password = text.partition(":")
        stored = self.users.get(name) if sep and not _has_control(text) else None
        waiting, turn = self._clients.get(client) or (0, asyncio.Lock())
        if waiting > _WAITING_PER_CLIENT:
            return _BUSY
        self._clients[client] = (waiting + 1, turn)
        try:
            async with turn, self._checks:
                ok = await run_in_threadpool(verify_password, password, stored or self._decoy)
        finally:
            waiting = self._clients[client][0] - 1
            if waiting:
                self._clients[client] = (waiting, turn)
            else:
                del self._clients[client]
        if not ok or stored is None:
            log.warning("HTTP authentication failed from %s (user name %s)", client,
                        "known" if stored is not None else "unknown or malformed")
            return None
        if len(self._passed) >= _REMEMBERED:
            self._passed.clear()
        self._passed[key] = name
        return name


_BUSY = object()


def _cost(stored: str) -> int:
    """How much work checking a password against `stored` is (N * r * p)."""
    try:
        n, r, p = (int(v) for v in stored.split("$")[1:4])
    except ValueError:
        return 0
    return n * r * p


def _has_control(text: str) -> bool:
    """Whether `text` holds a control character, which RFC 7617 2 forbids in credentials
    (scrypt would also take ``pw`` and ``pw\\0`` for the same password: HMAC pads keys)."""
    return any(unicodedata.category(c) == "Cc" for c in text)


class _Busy(Exception):
    """A client has too many password checks waiting."""


async def _challenge(scope: Any, receive: Any, send: Any) -> None:
    await problem_response(
        401, "authentication required: this server asks for a user name and password "
        "(HTTP Basic)", {"WWW-Authenticate": _CHALLENGE,
                         "X-Content-Type-Options": "nosniff"})(scope, receive, send)


def _client(scope: Any) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


def _header(scope: Any, name: bytes) -> str | None:
    values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == name]
    return values[0] if len(values) == 1 else None
