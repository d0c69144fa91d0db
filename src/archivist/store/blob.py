"""Blob stores: bytes under generated keys, nothing else (no pydicom here).

Keys are 32 hex characters and stored as ``ab/cd/<key>``; they never contain any text a client
sent. The first four characters are a time bucket (the minute of writing, modulo 65,536), the other
28 are random: blobs written in the same minute share one directory, so a busy ingest creates a
directory once a minute instead of for almost every blob, and one directory fsync covers a whole
group of puts (:meth:`FilesystemBlobStore.sync`). Over time the buckets wrap and fill evenly.

A put fsyncs the file and renames it into place; the rename is durable once its directory is
fsynced, which :meth:`BlobStore.put_file` does itself unless the caller defers it (``defer_sync``)
to do it once for a group with :meth:`BlobStore.sync` before it acknowledges anything.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from archivist.errors import NotFound, StorageError, StorageFull

_KEY = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 1024 * 1024
#: A temporary file a process writes in the ``tmp`` folder (a blob's part, a C-STORE data set
#: on its way in) is named ``<kind>-<pid>_<rest>`` (:func:`temp_prefix`), so what a process
#: killed in the middle left there can be told from what the living ones are writing.
_OWNED_TEMP = re.compile(r"(?:blob|dimse)-([0-9]+)_[A-Za-z0-9_.]+")


def temp_prefix(kind: str) -> str:
    """The start of the name of a temporary file this process writes: ``<kind>-<pid>_``."""
    return f"{kind}-{os.getpid()}_"


def sweep_temp_of(tmp_dir: Path, pid: int) -> int:
    """Remove the blob parts and C-STORE data sets that the process `pid` left in `tmp_dir`
    (call it once that process has ended: a worker killed in the middle of a store). Returns
    how many were removed. The start-up sweep (:meth:`FilesystemBlobStore.clear_tmp`) only
    runs when no process uses the data directory, so without this a worker started again
    left them until the whole archive was restarted."""
    removed = 0
    try:
        names = os.listdir(tmp_dir)
    except OSError:
        return 0
    for name in names:
        match = _OWNED_TEMP.fullmatch(name)
        if match is not None and int(match.group(1)) == pid:
            try:
                os.unlink(os.path.join(tmp_dir, name))
            except OSError:
                continue
            removed += 1
    return removed


@dataclass(frozen=True)
class PutResult:
    key: str
    size: int
    sha256: str


def new_key() -> str:
    """A fresh storage key: 32 lowercase hex characters, a minute bucket then 28 random ones."""
    bucket = (int(time.time()) // 60) & 0xFFFF
    return f"{bucket:04x}{secrets.token_hex(14)}"


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise StorageError(f"malformed storage key {key!r}")
    return key


def _raise_os(exc: OSError, what: str) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise StorageFull(f"no space left while {what}") from exc
    raise StorageError(f"{what}: {exc.strerror or exc}") from exc


class BlobStore(Protocol):
    """What the archive needs from a byte store."""

    def put_file(self, source: Path, *, consume: bool = False,
                 defer_sync: bool = False) -> PutResult:
        """Store the bytes of `source` under a new key; durable when this returns, or, with
        `defer_sync`, once :meth:`sync` has been called with the key."""

    def put_bytes(self, data: bytes, *, defer_sync: bool = False) -> PutResult:
        """Store `data` under a new key, durable as :meth:`put_file` makes it."""

    def sync(self, keys: Iterable[str]) -> None:
        """Make puts made with ``defer_sync=True`` durable (one directory fsync per directory)."""

    def open(self, key: str) -> BinaryIO:
        """Open a stored blob for reading."""

    def path(self, key: str) -> Path | None:
        """A local file path for the blob if the store has one, else None."""

    def delete(self, key: str) -> None:
        """Remove a blob; a missing key is not an error."""

    def keys(self) -> Iterator[str]:
        """Every stored key (for consistency sweeps)."""


class FilesystemBlobStore:
    """Blobs as files under ``root`` (``root/ab/cd/<key>``), written durably.

    Parameters
    ----------
    root
        Directory for the blobs; created if missing (mode 0700).
    tmp
        Directory for partial writes; must be on the same file system as `root`.
    """

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = Path(root)
        self.tmp = Path(tmp)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dirs_made: set[str] = set()
        self._lock = threading.Lock()
        # The hot path (put_bytes, sync) builds paths as strings: pathlib's joins and
        # conversions cost a busy ingest ~3 % of its time.
        self._root_s = str(self.root)
        self._tmp_s = str(self.tmp)

    def _dir_s(self, key: str) -> str:
        """The directory of a key (unchecked: a key this store made, or checked by the caller)."""
        return f"{self._root_s}/{key[:2]}/{key[2:4]}"

    def _final(self, key: str) -> Path:
        return Path(f"{self._dir_s(check_key(key))}/{key}")

    def path(self, key: str) -> Path | None:
        return self._final(key)

    def _ensure_dir(self, d: str) -> None:
        if d in self._dirs_made:
            return
        folder = Path(d)
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            _fsync_dir(folder.parent)
            _fsync_dir(folder.parent.parent)
        with self._lock:
            self._dirs_made.add(d)

    def put_file(self, source: Path, *, consume: bool = False,
                 defer_sync: bool = False) -> PutResult:
        """Store `source`. With ``consume=True`` the file itself is moved into place when it can
        be (it must then be on the same file system, e.g. in ``tmp``); otherwise it is copied.

        The file's data are fsynced before the rename. The directory entry is fsynced before
        this returns, unless `defer_sync`: then the caller must call :meth:`sync` with the key
        before it treats the blob as durable.

        Returns the key, the size and the SHA-256 of the stored bytes.

        Raises
        ------
        StorageFull
            ENOSPC or EDQUOT while writing; nothing is left behind.
        StorageError
            Any other I/O failure; nothing is left behind (a consumed source is removed).
        """
        key = new_key()
        final = self._final(key)
        digest = hashlib.sha256()
        size = 0
        tmp: Path | None = None
        try:
            if consume:
                # Hash and fsync the received file where it is, then rename it into place.
                fd = os.open(source, os.O_RDONLY)
                try:
                    with os.fdopen(fd, "rb", closefd=False) as fh:
                        while chunk := fh.read(_CHUNK):
                            digest.update(chunk)
                            size += len(chunk)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._ensure_dir(self._dir_s(key))
                try:
                    os.rename(source, final)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    consume = False  # another file system: copy below
                    digest, size = hashlib.sha256(), 0
            if not consume:
                tmp = self.tmp / f"{temp_prefix('blob')}{key}.part"
                with open(source, "rb") as src, open(tmp, "xb") as dst:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
                self._ensure_dir(self._dir_s(key))
                os.rename(tmp, final)
            os.chmod(final, 0o600)
            if not defer_sync:
                _fsync_dir(final.parent)
        except OSError as exc:
            if tmp is not None:
                _unlink_quiet(tmp)
            _unlink_quiet(final)
            if consume:
                _unlink_quiet(Path(source))
            _raise_os(exc, "storing a blob")
        return PutResult(key, size, digest.hexdigest())

    def sync(self, keys: Iterable[str]) -> None:
        """fsync each distinct directory that holds one of `keys` (puts with ``defer_sync``).

        Raises
        ------
        StorageFull, StorageError
            A directory could not be fsynced: the puts in it are not durable (the caller
            refuses them and deletes their blobs).
        """
        for d in {self._dir_s(check_key(k)) for k in keys}:
            try:
                _fsync_dir(d)
            except OSError as exc:
                _raise_os(exc, "making stored blobs durable")

    def put_bytes(self, data: bytes, *, defer_sync: bool = False) -> PutResult:
        """Store `data`: written once to a temporary file, fsynced, renamed into place (few
        system calls: a received object held in memory takes this way). `defer_sync` as for
        :meth:`put_file`.

        Raises
        ------
        StorageFull, StorageError
            As :meth:`put_file`; nothing is left behind.
        """
        key = new_key()
        tmp = f"{self._tmp_s}/{temp_prefix('blob')}{key}.part"
        folder = self._dir_s(key)
        created = False
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            created = True
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            self._ensure_dir(folder)
            os.rename(tmp, f"{folder}/{key}")
            created = False
            if not defer_sync:
                _fsync_dir(folder)
        except OSError as exc:
            if created:
                _unlink_quiet(tmp)
            _raise_os(exc, "storing a blob")
        return PutResult(key, len(data), hashlib.sha256(data).hexdigest())

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._final(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {key} is missing from the store") from None
        except OSError as exc:
            raise StorageError(f"reading blob {key}: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        _unlink_quiet(self._final(key))

    def keys(self) -> Iterator[str]:
        for first in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if not first.is_dir() or len(first.name) != 2:
                continue
            for second in sorted(first.iterdir()):
                if not second.is_dir():
                    continue
                for f in second.iterdir():
                    if _KEY.match(f.name):
                        yield f.name

    def clear_tmp(self) -> int:
        """Remove partial writes left by a crash; returns how many were removed."""
        return clear_files(self.tmp)


def clear_files(folder: Path) -> int:
    """Remove the files directly in `folder` (partial writes a crash left); returns how many."""
    removed = 0
    for f in folder.iterdir():
        if f.is_file():
            _unlink_quiet(f)
            removed += 1
    return removed


class MemoryBlobStore:
    """In-memory twin of :class:`FilesystemBlobStore` for unit tests."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put_file(self, source: Path, *, consume: bool = False,
                 defer_sync: bool = False) -> PutResult:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            _raise_os(exc, "storing a blob")
        if consume:
            _unlink_quiet(Path(source))
        return self.put_bytes(data)

    def sync(self, keys: Iterable[str]) -> None:
        """Nothing to do: memory is as durable as it gets."""

    def put_bytes(self, data: bytes, *, defer_sync: bool = False) -> PutResult:
        key = new_key()
        with self._lock:
            self._blobs[key] = bytes(data)
        return PutResult(key, len(data), hashlib.sha256(data).hexdigest())

    def open(self, key: str) -> BinaryIO:
        import io

        try:
            return io.BytesIO(self._blobs[check_key(key)])
        except KeyError:
            raise NotFound(f"blob {key} is missing from the store") from None

    def path(self, key: str) -> Path | None:
        return None

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._blobs.pop(key, None)

    def keys(self) -> Iterator[str]:
        return iter(list(self._blobs))


#: fsync(2) on a directory fails with these where the file system cannot do it at all (some
#: network and FUSE file systems): nothing more can be done there, and it is no I/O error.
_DIR_FSYNC_UNSUPPORTED = frozenset((errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF))


def _fsync_dir(d: str | Path) -> None:
    """Make the entries of directory `d` durable (renames into it, directories made in it).

    Raises
    ------
    OSError
        The directory cannot be opened or the fsync failed (EIO, ENOSPC...): what was put
        there is not known to be durable, so it must not be acknowledged. (These used to be
        swallowed, and a store was answered with success all the same.)
    """
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _unlink_quiet(p: str | Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def copy_stream(src: BinaryIO, dst: BinaryIO) -> int:
    """Copy a stream in chunks; returns the number of bytes."""
    n = 0
    while chunk := src.read(_CHUNK):
        dst.write(chunk)
        n += len(chunk)
    return n


__all__ = [
    "BlobStore",
    "FilesystemBlobStore",
    "MemoryBlobStore",
    "PutResult",
    "check_key",
    "copy_stream",
    "new_key",
    "sweep_temp_of",
    "temp_prefix",
]
