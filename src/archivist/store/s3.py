"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, Garage...), so that several
Archivist nodes on one PostgreSQL index serve the same objects.

Objects go to ``<bucket>/<prefix><key>`` with one PUT each (path-style URLs, Signature Version
4 computed here with the standard library: no SDK). A PUT the store answered 200 is durable: a
put is acknowledged by the ingest only after that and its index row's commit, as on files.

Reading needs a local file (WADO frames, rendering and transcoding seek in it), so a blob is
read through a cache under the node's data directory (``cache/blobs``): what this node stored
is kept there as it goes up, what it reads is fetched once. Keys are never reused, so a cached
blob never goes stale; the cache is trimmed to ``s3_cache_bytes`` (least recently used first)
and emptied when the archive starts with no other process on the data directory (a file cut by
a crash would otherwise be served). A key deleted from the store but still cached is served
until evicted only to a reader that found it in the index before the deletion.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import http.client
import logging
import os
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from archivist.errors import NotFound, StorageError
from archivist.store.blob import (
    PutResult,
    _raise_os,
    check_key,
    clear_files,
    new_key,
    temp_prefix,
)

__all__ = ["S3BlobStore"]

log = logging.getLogger("archivist.store.s3")

_CHUNK = 1024 * 1024
_UNSIGNED = "UNSIGNED-PAYLOAD"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Attempts of a request that failed on the network or with a 5xx (the store's own advice);
#: one that timed out is not tried again.
_ATTEMPTS = 3
#: Cached blobs used this recently are not trimmed (seconds).
_IN_USE_SECONDS = 300


class S3BlobStore:
    """The :class:`~archivist.store.blob.BlobStore` of an S3 bucket, read through a local cache.

    Parameters
    ----------
    endpoint
        ``http(s)://host:port`` of the store.
    bucket, region, access_key, secret_key, prefix
        Where and as whom; `prefix` is put before every key (e.g. ``archive/``).
    cache, tmp
        The local cache folder and the folder of partial downloads (same file system).
    cache_bytes
        The cache's size limit.
    """

    def __init__(self, endpoint: str, bucket: str, *, region: str, access_key: str,
                 secret_key: str, prefix: str = "", cache: Path, tmp: Path,
                 cache_bytes: int = 2 << 30, timeout: float = 15.0) -> None:
        parsed = urllib.parse.urlsplit(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise StorageError(f"s3_endpoint must be an http(s) URL, not {endpoint!r}")
        self.https = parsed.scheme == "https"
        self.host = parsed.hostname
        self.port = parsed.port or (443 if self.https else 80)
        self.netloc = parsed.netloc.rpartition("@")[2]
        self.base = parsed.path.rstrip("/")
        self.bucket = bucket
        self.region = region or "us-east-1"
        self.access_key = access_key
        self.secret_key = secret_key
        self.prefix = prefix
        self.cache = Path(cache)
        self.tmp = Path(tmp)
        self.cache_bytes = cache_bytes
        self.timeout = timeout
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._local = threading.local()
        self._trim_lock = threading.Lock()
        self._since_trim = 0

    # -- requests ----------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", 0) != os.getpid():
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _path(self, key: str | None) -> str:
        path = f"{self.base}/{urllib.parse.quote(self.bucket, safe='')}"
        if key is not None:
            path += "/" + urllib.parse.quote(self.prefix + key, safe="/")
        return path

    def _headers(self, method: str, path: str, query: dict[str, str], payload: str,
                 extra: dict[str, str],
                 now: datetime.datetime | None = None) -> dict[str, str]:
        """The request's headers with its Signature Version 4 Authorization."""
        now = now or datetime.datetime.now(datetime.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": self.netloc, "x-amz-content-sha256": payload, "x-amz-date": stamp,
                   **{k.lower(): v for k, v in extra.items()}}
        signed = sorted(headers)
        canonical_query = "&".join(
            f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
            for k, v in sorted(query.items()))
        canonical = "\n".join([
            method, path, canonical_query,
            "".join(f"{h}:{headers[h].strip()}\n" for h in signed), ";".join(signed), payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = f"AWS4{self.secret_key}".encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                    f"SignedHeaders={';'.join(signed)}, Signature={signature}")
        return headers

    def _request(self, method: str, key: str | None, *, query: dict[str, str] | None = None,
                 body: bytes | Path | None = None, size: int = 0,
                 headers: dict[str, str] | None = None, into: BinaryIO | None = None,
                 digests: list[Any] | None = None) -> tuple[int, bytes]:
        """One request, tried again on a network error or a 5xx; the status and the body (or
        the body written to `into` on success). A file body is read once per attempt, its
        SHA-256 computed on the way out and appended to `digests`."""
        query = query or {}
        path = self._path(key)
        url = path + ("?" + urllib.parse.urlencode(sorted(query.items()),
                                                   quote_via=urllib.parse.quote)
                      if query else "")
        extra = dict(headers or {})
        if body is not None:
            extra["content-length"] = str(size if isinstance(body, Path) else len(body))
        payload = _UNSIGNED if body is not None else _EMPTY_SHA256
        last: BaseException | None = None
        for attempt in range(_ATTEMPTS):
            conn = self._connection()
            try:
                conn.putrequest(method, url, skip_host=True, skip_accept_encoding=True)
                for name, value in self._headers(method, path, query, payload, extra).items():
                    conn.putheader(name, value)
                conn.endheaders()
                if isinstance(body, Path):
                    digest = hashlib.sha256()
                    if digests is not None:
                        digests.append(digest)
                    with open(body, "rb") as fh:
                        while chunk := fh.read(_CHUNK):
                            digest.update(chunk)
                            conn.send(chunk)
                elif body:
                    conn.send(body)
                response = conn.getresponse()
                if 200 <= response.status < 300 and into is not None:
                    while chunk := response.read(_CHUNK):
                        into.write(chunk)
                    return response.status, b""
                data = response.read()
                if response.status >= 500 and attempt + 1 < _ATTEMPTS:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                return response.status, data
            except (OSError, http.client.HTTPException) as exc:
                last = exc
                self._drop_connection()
                if isinstance(exc, TimeoutError):
                    break  # a store that hangs: asking again would only multiply the wait
                if into is not None and attempt + 1 < _ATTEMPTS:
                    into.seek(0)
                    into.truncate()
                time.sleep(0.2 * (attempt + 1))
        if isinstance(last, TimeoutError):
            raise StorageError(f"the object store at {self.netloc} did not answer within "
                               f"{self.timeout:g} s")
        raise StorageError(f"the object store at {self.netloc} cannot be reached: "
                           f"{type(last).__name__}: {last}")

    @staticmethod
    def _problem(status: int, data: bytes) -> str:
        try:
            root = ET.fromstring(data)
            code = root.findtext("Code") or ""
            message = root.findtext("Message") or ""
            return f"{status} {code} {message}".strip()[:300]
        except ET.ParseError:
            return str(status)

    # -- the BlobStore protocol --------------------------------------------------------------

    def holds_objects(self) -> bool:
        """Whether the bucket holds any key under the prefix (one listing of one key); a
        StorageError when it cannot be listed with these credentials."""
        status, data = self._request("GET", None, query={"list-type": "2", "max-keys": "1",
                                                         "prefix": self.prefix})
        if status != 200:
            raise StorageError(f"bucket {self.bucket} at {self.netloc}: "
                               f"{self._problem(status, data)}")
        root = ET.fromstring(data)
        ns = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
        return root.find(f"{ns}Contents") is not None

    def clear_tmp(self) -> int:
        """Remove partial uploads and downloads left by a crash; returns how many."""
        return clear_files(self.tmp)

    def put_file(self, source: Path, *, consume: bool = False,
                 defer_sync: bool = False) -> PutResult:
        """Upload `source` (one PUT, durable when it returns); with `consume` the file then
        becomes the blob's cached copy (or is removed)."""
        key = new_key()
        digests: list[Any] = []  # the SHA-256 of the bytes each attempt sent
        try:
            size = os.stat(source).st_size
        except OSError as exc:
            _raise_os(exc, "storing a blob")
        try:
            status, data = self._request("PUT", key, body=Path(source), size=size,
                                         digests=digests)
            if status != 200:
                raise StorageError(f"storing a blob: {self._problem(status, data)}")
        except BaseException:
            if consume:
                with contextlib.suppress(OSError):
                    os.unlink(source)
            raise
        if consume:
            self._keep(Path(source), key, size)
        return PutResult(key, size, digests[-1].hexdigest())

    def put_bytes(self, data: bytes, *, defer_sync: bool = False) -> PutResult:
        key = new_key()
        status, answer = self._request("PUT", key, body=bytes(data))
        if status != 200:
            raise StorageError(f"storing a blob: {self._problem(status, answer)}")
        part = self.tmp / f"{temp_prefix('blob')}{key}.cache"
        with contextlib.suppress(OSError):
            part.write_bytes(data)
            self._keep(part, key, len(data))
        return PutResult(key, len(data), hashlib.sha256(data).hexdigest())

    def sync(self, keys: Iterable[str]) -> None:
        """Nothing to do: an object store has made a PUT durable when it answers it."""

    def path(self, key: str) -> Path | None:
        """The blob's cached copy, fetched first when absent; a path that does not exist when
        the store does not hold the key (deleted)."""
        cached = self.cache / check_key(key)
        try:
            os.utime(cached)  # recently used
            return cached
        except FileNotFoundError:
            pass
        except OSError as exc:
            _raise_os(exc, "reading the blob cache")
        part = self.tmp / f"{temp_prefix('blob')}{key}.fetch"
        try:
            with open(part, "wb") as fh:
                status, data = self._request("GET", key, into=fh)
            if status == 404:
                os.unlink(part)
                return cached
            if status != 200:
                os.unlink(part)
                raise StorageError(f"reading blob {key}: {self._problem(status, data)}")
            self._keep(part, key, part.stat().st_size)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(part)
            _raise_os(exc, "reading a blob")
        return cached

    def open(self, key: str) -> BinaryIO:
        path = self.path(key)
        assert path is not None
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {key} is missing from the store") from None
        except OSError as exc:
            raise StorageError(f"reading blob {key}: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        """Remove the blob; a failure is logged, not raised (as a file that cannot be removed:
        callers delete after the index has changed, and the object left is only an orphan)."""
        with contextlib.suppress(OSError):
            os.unlink(self.cache / check_key(key))
        try:
            status, data = self._request("DELETE", key)
        except StorageError as exc:
            log.warning("blob %s not deleted from the object store: %s", key, exc)
            return
        if status not in (200, 204, 404):
            log.warning("blob %s not deleted from the object store: %s", key,
                        self._problem(status, data))

    def keys(self) -> Iterator[str]:
        token = None
        while True:
            query = {"list-type": "2", "prefix": self.prefix, "max-keys": "1000"}
            if token:
                query["continuation-token"] = token
            status, data = self._request("GET", None, query=query)
            if status != 200:
                raise StorageError(f"listing bucket {self.bucket}: "
                                   f"{self._problem(status, data)}")
            root = ET.fromstring(data)
            ns = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
            for item in root.iter(f"{ns}Contents"):
                name = (item.findtext(f"{ns}Key") or "")[len(self.prefix):]
                with contextlib.suppress(StorageError):
                    yield check_key(name)
            if (root.findtext(f"{ns}IsTruncated") or "").lower() != "true":
                return
            token = root.findtext(f"{ns}NextContinuationToken")

    # -- the cache ---------------------------------------------------------------------------

    def _keep(self, part: Path, key: str, size: int) -> None:
        """Move a complete local copy into the cache (best effort: the store has the blob)."""
        try:
            os.replace(part, self.cache / key)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(part)
            return
        with self._trim_lock:
            self._since_trim += size
            due = self._since_trim > self.cache_bytes // 10
            if due:
                self._since_trim = 0
        if due:
            self.trim()

    def trim(self) -> int:
        """Remove the least recently used cached blobs past the size limit; returns how many.
        Blobs used in the last :data:`_IN_USE_SECONDS` stay whatever their size: one being
        read now (fetched a moment ago, or larger than the whole limit) must not go between
        :meth:`path` and its reader's open."""
        entries = []
        total = 0
        for entry in os.scandir(self.cache):
            with contextlib.suppress(OSError):
                st = entry.stat()
                entries.append((st.st_mtime, st.st_size, entry.path))
                total += st.st_size
        removed = 0
        recent = time.time() - _IN_USE_SECONDS
        for mtime, size, path in sorted(entries):
            if total <= self.cache_bytes or mtime > recent:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
                total -= size
                removed += 1
        return removed

    def clear_cache(self) -> int:
        removed = 0
        for entry in os.scandir(self.cache):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
        return removed
