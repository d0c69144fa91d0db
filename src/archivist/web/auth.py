"""HTTP Basic authentication (RFC 7617) for every route but ``/healthz``, when the ``http_users``
setting names users (what Orthanc's ``AuthenticationEnabled`` + ``RegisteredUsers`` give).

Passwords are kept as scrypt hashes (:mod:`archivist.core.passwords`; ``archivist
hash-password`` makes one). A request without valid credentials gets 401 with
``WWW-Authenticate: Basic realm="Archivist", charset="UTF-8"`` and the JSON error body of this
server, before its body is read. A browser then asks for a name and password once and sends
them with every request of the page, the viewer's DICOMweb calls and the archive page's uploads
included. CORS preflights (``OPTIONS`` with ``Access-Control-Request-Method``, which browsers
send without credentials) are passed on.

A check costs tens of milliseconds of CPU by design, so credentials that passed are remembered
(by a digest of the header, at most 1,024) and checks run in a thread, at most two at a time:
a client sending wrong passwords in a loop slows itself, not the others. An unknown user name
takes as long to refuse as a wrong password.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool

from archivist.config import Settings
from archivist.core.passwords import hash_password, verify_password
from archivist.web.errors import problem_response

__all__ = ["BasicAuth"]

log = logging.getLogger("archivist.web")

_CHALLENGE = 'Basic realm="Archivist", charset="UTF-8"'
_REMEMBERED = 1024


class BasicAuth:
    """ASGI middleware: 401 unless the request carries the credentials of an ``http_users``
    entry (does nothing when there is none)."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.users = dict(settings.http_users)
        self._passed: dict[bytes, str] = {}
        self._checks = asyncio.Semaphore(2)
        self._decoy = hash_password("no such user") if self.users else ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or not self.users or scope.get("path") == "/healthz"
                or (scope["method"] == "OPTIONS"
                    and _header(scope, b"access-control-request-method") is not None)):
            await self.app(scope, receive, send)
            return
        if await self._user(_header(scope, b"authorization")) is None:
            await problem_response(
                401, "authentication required: this server asks for a user name and password "
                "(HTTP Basic)", {"WWW-Authenticate": _CHALLENGE,
                                 "X-Content-Type-Options": "nosniff"})(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _user(self, header: str | None) -> str | None:
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
        try:
            raw = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            return None
        try:
            text = raw.decode("utf-8")  # what the challenge's charset asks for
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # what many clients send (requests, curl's -u on some)
        name, sep, password = text.partition(":")
        stored = self.users.get(name) if sep else None
        async with self._checks:
            ok = await run_in_threadpool(verify_password, password, stored or self._decoy)
        if not ok or stored is None:
            log.warning("HTTP authentication failed (user name %s)",
                        "known" if stored is not None else "unknown")
            return None
        if len(self._passed) >= _REMEMBERED:
            self._passed.clear()
        self._passed[key] = name
        return name


def _header(scope: Any, name: bytes) -> str | None:
    values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == name]
    return values[0] if len(values) == 1 else None
