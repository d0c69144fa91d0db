"""STOW-RS parts stored by a sibling worker process, so one request uses every core.

A STOW-RS request arrives on one connection, so in one worker process: that process parses the
multipart body and, alone, would also store every part (header, validation, index row, blob and
its fsync) on one core while the other workers idle. With several workers, each listens on a
Unix socket in the data directory's ``run`` folder (``worker-<n>.sock``, mode 0600) and stores
parts handed over by the others through the one ingest, exactly as it stores its own; the
forwarding worker gets back what the store reported and puts it in the response, in the parts'
order. A part held in memory travels over the socket; a part spilled to a file travels as that
file's name (a file of this data directory's ``tmp`` folder, nothing else is accepted).

When no sibling answers (not started yet, restarting, gone), the part is stored locally:
forwarding is only ever a way to spread the work, never a condition for storing. A part file
keeps a second name until the sibling has answered, so one that dies (killed) after moving the
file into the store still leaves it to be stored here. A worker started again removes the part
files of worker processes that are gone (the startup sweep only runs with no worker up).

Frames, both ways: a 4-byte big-endian length, then that many bytes of JSON; a request's JSON
may announce ``size`` bytes of part data that follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from archivist.core.processes import alive

log = logging.getLogger("archivist.web")

#: What a stored part reported: (``ok`` or ``fail``, its arguments), see stow's ``_Outcome``.
Calls = list[tuple[str, tuple[Any, ...]]]
#: Stores one part: (data or file, expected study, client address) -> its calls.
StorePart = Callable[[bytes | Path, str | None, str | None], Awaitable[Calls]]

_LEN = struct.Struct(">I")
#: A request's JSON and a reply are small; a part in memory is at most the parser's spill size.
MAX_JSON = 1 << 20
MAX_DATA = 64 << 20
#: Seconds a sibling that failed is left alone before it is tried again.
RETRY_AFTER = 1.0
#: Seconds a sibling has to store a handed part and answer (a part is stored in milliseconds,
#: a spilled part of gigabytes in seconds): past it the sibling is taken for wedged (stopped,
#: swapping) and the part is stored here; without a limit one request waited for as long as
#: the sibling did.
ANSWER_TIMEOUT = 120.0
#: A Unix socket's path must fit in sockaddr_un (108 bytes with its NUL).
_MAX_SOCKET_PATH = 100
_PART_NAME = re.compile(r"stow-[A-Za-z0-9_]+\.part")


#: The suffix of a part file's second name while a sibling has it (see ``Siblings.forward``).
_KEEP = ".keep"
#: A part file of the STOW-RS request a worker receives is ``stow-<its pid>_<random>.part``
#: (stow's ``part_file_prefix``); its second name ends in ``.keep``, stow's preamble fix in
#: ``.fixed``.
_OWNED_FILE = re.compile(r"stow-([0-9]+)_[A-Za-z0-9_]+\.(?:part|keep|fixed)")


def sweep_dead_workers_parts(tmp_dir: Path) -> int:
    """Remove the part files of worker processes that are gone (killed in the middle of a
    request; the startup sweep only runs when no worker uses the data directory, so a worker
    started again would otherwise leave them until the whole archive restarts). Returns how
    many were removed."""
    removed = 0
    try:
        names = os.listdir(tmp_dir)
    except OSError:
        return 0
    for name in names:
        match = _OWNED_FILE.fullmatch(name)
        if match is None or int(match.group(1)) == os.getpid() or alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(tmp_dir / name)
            removed += 1
    if removed:
        log.warning("removed %d STOW-RS part files of worker processes that ended", removed)
    return removed


def _take_back(body: Path, keep: Path) -> None:
    """After a sibling failed with the part file `body`: `body` as it was handed over, and
    no file of the sibling's half-done work left behind."""
    with contextlib.suppress(OSError):
        body.with_suffix(".fixed").unlink()  # stow's preamble fix, cut short
    if not body.exists():
        with contextlib.suppress(OSError):
            os.replace(keep, body)


class SiblingFailed(Exception):
    """The sibling could not take the part (refused, gone, or answered nonsense)."""


def socket_path(run_dir: Path, number: int) -> Path:
    return run_dir / f"worker-{number}.sock"


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if size > limit:
        raise SiblingFailed(f"frame of {size} bytes")
    return await reader.readexactly(size)


def _frame(obj: object) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return _LEN.pack(len(body)) + body


class Siblings:
    """This worker's side of the exchange: its own listener, and its way to the others."""

    def __init__(self, run_dir: Path, tmp_dir: Path, number: int, total: int) -> None:
        self.run_dir = run_dir.resolve()
        self.tmp_dir = tmp_dir.resolve()
        self.number = number
        self.others = [n for n in range(total) if n != number]
        self._server: asyncio.AbstractServer | None = None
        self._idle: dict[int, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {
            n: [] for n in self.others}
        self._down_until: dict[int, float] = {n: 0.0 for n in self.others}
        self._busy: dict[int, int] = {n: 0 for n in self.others}
        # Connections siblings opened to this worker, and whether each is storing a part now.
        self._accepted: dict[asyncio.StreamWriter, bool] = {}
        self._closing = False
        self.answer_timeout = ANSWER_TIMEOUT
        self.forwarded = 0  # parts handed to a sibling and stored there, for figures and tests
        self.taken = 0  # parts this worker stored for a sibling

    @property
    def usable(self) -> bool:
        """Whether any sibling may be tried now."""
        return self._pick() is not None

    # -- this worker as the one that stores for the others ---------------------------------

    async def start(self, store: StorePart) -> bool:
        """Listen for parts from the siblings; False (and nothing listens) when the socket's
        path is too long for a Unix socket or it cannot be bound."""
        sweep_dead_workers_parts(self.tmp_dir)
        path = socket_path(self.run_dir, self.number)
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            log.debug("no STOW-RS part exchange: socket path too long (%s)", path)
            return False
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a worker of this number that ended
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                lambda r, w: self._serve(r, w, store), path=str(path), limit=1 << 16)
        except OSError as exc:
            log.warning("no STOW-RS part exchange: cannot listen on %s: %s", path, exc.strerror)
            return False
        finally:
            os.umask(old)
        return True

    async def close(self) -> None:
        """Stop taking parts: connections waiting for a request are closed at once, one whose
        part is being stored once its outcome is sent."""
        self._closing = True
        for writer, storing in list(self._accepted.items()):
            if not storing:
                writer.close()
        for pool in self._idle.values():
            for _, writer in pool:
                writer.close()
            pool.clear()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(OSError):
                socket_path(self.run_dir, self.number).unlink()

    def _part_file(self, name: object) -> Path:
        """The part file a sibling names: only a STOW-RS part file of this ``tmp`` folder."""
        if not isinstance(name, str) or not _PART_NAME.fullmatch(name):
            raise SiblingFailed("not a part file name")
        path = self.tmp_dir / name
        if not path.is_file():
            raise SiblingFailed("no such part file")
        return path

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     store: StorePart) -> None:
        self._accepted[writer] = False
        try:
            while not self._closing:
                try:
                    head = json.loads(await _read_frame(reader, MAX_JSON))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the sibling closed its connection, or this worker is closing
                self._accepted[writer] = True
                if not isinstance(head, dict):
                    raise SiblingFailed("request is not an object")
                size = head.get("size")
                body: bytes | Path
                if isinstance(size, int) and 0 < size <= MAX_DATA:
                    body = await reader.readexactly(size)
                else:
                    body = self._part_file(head.get("file"))
                study, client = head.get("study"), head.get("client")
                calls = await store(body, study if isinstance(study, str) else None,
                                    client if isinstance(client, str) else None)
                self.taken += 1
                writer.write(_frame({"calls": calls}))
                await writer.drain()
                self._accepted[writer] = False
        except (SiblingFailed, ValueError, OSError, asyncio.IncompleteReadError) as exc:
            log.warning("STOW-RS part exchange: dropped a sibling's connection: %s", exc)
        finally:
            self._accepted.pop(writer, None)
            writer.close()

    # -- this worker handing a part to another -----------------------------------------------

    @staticmethod
    async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        await writer.drain()
        return await _read_frame(reader, MAX_JSON)

    def _pick(self) -> int | None:
        now = time.monotonic()
        ready = [n for n in self.others if self._down_until[n] <= now]
        return min(ready, key=lambda n: self._busy[n]) if ready else None

    async def forward(self, body: bytes | Path, study: str | None,
                      client: str | None) -> Calls | None:
        """Have a sibling store the part; its calls, or None when no sibling took it (the
        caller stores it then). A part file the sibling stored is gone afterwards."""
        number = self._pick()
        if number is None:
            return None
        keep = None
        if isinstance(body, Path):
            # A second name for the part file: a sibling that moved the file into the store
            # and died before it answered leaves no file to store here, though it may not have
            # recorded the instance. With this name the part is stored here all the same (an
            # instance the sibling did record is then reported as already stored).
            keep = body.with_suffix(_KEEP)
            try:
                os.link(body, keep)
            except OSError:
                return None  # no second name (no hard links here): stored here, not risked
        self._busy[number] += 1
        conn = None
        try:
            pool = self._idle[number]
            conn = pool.pop() if pool else await asyncio.open_unix_connection(
                str(socket_path(self.run_dir, number)), limit=1 << 16)
            reader, writer = conn
            head: dict[str, Any] = {"study": study, "client": client}
            if isinstance(body, bytes):
                head["size"] = len(body)
                writer.write(_frame(head))
                writer.write(body)
            else:
                head["file"] = body.name
                writer.write(_frame(head))
            reply = json.loads(await asyncio.wait_for(self._answer(reader, writer),
                                                      self.answer_timeout))
            calls = [(str(name), tuple(args)) for name, args in reply["calls"]]
        except (OSError, ValueError, KeyError, TypeError, SiblingFailed,
                asyncio.IncompleteReadError) as exc:
            if conn is not None:
                conn[1].close()
            if keep is not None and isinstance(body, Path):
                _take_back(body, keep)
            self._down_until[number] = time.monotonic() + RETRY_AFTER
            log.info("STOW-RS part exchange: worker %d did not take a part (%s); storing here",
                     number, type(exc).__name__)
            return None
        except BaseException:
            if conn is not None:  # cancelled mid-exchange: the connection is out of step
                conn[1].close()
            raise
        finally:
            self._busy[number] -= 1
            if keep is not None:
                with contextlib.suppress(OSError):
                    keep.unlink()
        self._idle[number].append(conn)
        self.forwarded += 1
        return calls
