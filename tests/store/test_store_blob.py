"""Blob stores: one contract run against every implementation, plus filesystem specifics."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archivist.errors import NotFound, StorageError, StorageFull
from archivist.store import blob
from archivist.store.blob import (
    FilesystemBlobStore,
    MemoryBlobStore,
    check_key,
    copy_stream,
    new_key,
)
from archivist.testing.fs import mount_tmpfs, unmount

HOSTILE_NAMES = ["../evil.dcm", "1.2.3", "x" * 32, "name with spaces.dcm"]


@pytest.fixture(params=["filesystem", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "filesystem":
        return FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
    return MemoryBlobStore()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class TestKeys:
    def test_new_key_shape(self) -> None:
        keys = {new_key() for _ in range(200)}
        assert len(keys) == 200
        assert all(len(k) == 32 and all(c in "0123456789abcdef" for c in k) for k in keys)

    @pytest.mark.parametrize("key", ["", "../" + "a" * 29, "A" * 32, "a" * 31, "a" * 33,
                                     "g" * 32, "a" * 31 + "/", None, 5])
    def test_check_key_refuses(self, key: Any) -> None:
        with pytest.raises(StorageError, match="malformed storage key"):
            check_key(key)

    def test_check_key_accepts(self) -> None:
        key = "0123456789abcdef" * 2
        assert check_key(key) == key


class TestBlobStoreContract:
    def test_put_file_returns_size_and_digest(self, store: Any, tmp_path: Path) -> None:
        data = os.urandom(3000)
        put = store.put_file(_write(tmp_path / "in" / "a.bin", data))
        assert put.size == 3000
        assert put.sha256 == hashlib.sha256(data).hexdigest()
        check_key(put.key)

    def test_round_trip(self, store: Any, tmp_path: Path) -> None:
        data = b"DICM" * 1000
        put = store.put_file(_write(tmp_path / "in" / "a.bin", data))
        with store.open(put.key) as fh:
            assert fh.read() == data

    def test_large_file_spanning_chunks(self, store: Any, tmp_path: Path) -> None:
        data = os.urandom(2 * 1024 * 1024 + 17)
        put = store.put_file(_write(tmp_path / "in" / "big.bin", data))
        assert put.size == len(data)
        with store.open(put.key) as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == hashlib.sha256(data).hexdigest()

    def test_empty_file(self, store: Any, tmp_path: Path) -> None:
        put = store.put_file(_write(tmp_path / "in" / "empty", b""))
        assert (put.size, put.sha256) == (0, hashlib.sha256(b"").hexdigest())
        with store.open(put.key) as fh:
            assert fh.read() == b""

    def test_put_bytes(self, store: Any) -> None:
        put = store.put_bytes(b"abc")
        assert (put.size, put.sha256) == (3, hashlib.sha256(b"abc").hexdigest())
        with store.open(put.key) as fh:
            assert fh.read() == b"abc"

    @pytest.mark.parametrize("name", HOSTILE_NAMES)
    def test_key_never_derived_from_input(self, store: Any, tmp_path: Path, name: str) -> None:
        source = _write(tmp_path / "in" / name.replace("/", "_"), b"same bytes")
        first = store.put_file(source)
        second = store.put_file(source)
        assert first.key != second.key
        for key in (first.key, second.key):
            assert name not in key and "." not in key and "/" not in key
        assert sorted(store.keys()) == sorted([first.key, second.key])

    def test_same_bytes_get_distinct_keys(self, store: Any) -> None:
        keys = {store.put_bytes(b"x").key for _ in range(20)}
        assert len(keys) == 20

    def test_source_kept_without_consume(self, store: Any, tmp_path: Path) -> None:
        source = _write(tmp_path / "in" / "a.bin", b"keep me")
        store.put_file(source)
        assert source.read_bytes() == b"keep me"

    def test_source_removed_with_consume(self, store: Any, tmp_path: Path) -> None:
        source = _write(tmp_path / "in" / "a.bin", b"move me")
        put = store.put_file(source, consume=True)
        assert not source.exists()
        with store.open(put.key) as fh:
            assert fh.read() == b"move me"
        assert put.sha256 == hashlib.sha256(b"move me").hexdigest()

    def test_missing_source_is_storage_error(self, store: Any, tmp_path: Path) -> None:
        with pytest.raises(StorageError):
            store.put_file(tmp_path / "does-not-exist")
        assert list(store.keys()) == []

    def test_open_missing_key(self, store: Any) -> None:
        with pytest.raises(NotFound):
            store.open(new_key())

    @pytest.mark.parametrize("key", ["../../etc/passwd", "ab/cd/" + "0" * 26, "", "A" * 32])
    def test_open_malformed_key(self, store: Any, key: str) -> None:
        with pytest.raises(StorageError, match="malformed"):
            store.open(key)

    @pytest.mark.parametrize("key", ["../../etc/passwd", "ZZ" * 16])
    def test_delete_malformed_key(self, store: Any, key: str) -> None:
        with pytest.raises(StorageError, match="malformed"):
            store.delete(key)

    def test_delete(self, store: Any) -> None:
        a, b = store.put_bytes(b"a"), store.put_bytes(b"b")
        store.delete(a.key)
        assert list(store.keys()) == [b.key]
        with pytest.raises(NotFound):
            store.open(a.key)

    def test_delete_missing_is_not_an_error(self, store: Any) -> None:
        store.delete(new_key())
        assert list(store.keys()) == []

    def test_keys_lists_every_blob(self, store: Any) -> None:
        put = [store.put_bytes(bytes([i])) for i in range(10)]
        assert sorted(store.keys()) == sorted(p.key for p in put)

    def test_concurrent_puts(self, store: Any) -> None:
        results: list[str] = []
        lock = threading.Lock()

        def work(i: int) -> None:
            for j in range(10):
                key = store.put_bytes(f"{i}-{j}".encode()).key
                with lock:
                    results.append(key)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(results)) == 80
        assert sorted(store.keys()) == sorted(results)


class TestFilesystemBlobStore:
    def test_layout_is_sharded(self, tmp_path: Path) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
        put = fs.put_bytes(b"x")
        expected = tmp_path / "blobs" / put.key[:2] / put.key[2:4] / put.key
        assert fs.path(put.key) == expected
        assert expected.read_bytes() == b"x"

    def test_permissions(self, tmp_path: Path) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
        put = fs.put_file(_write(tmp_path / "a", b"x"))
        path = fs.path(put.key)
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "blobs").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "tmp").stat().st_mode) == 0o700

    def test_no_partial_left_in_tmp(self, tmp_path: Path) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
        fs.put_file(_write(tmp_path / "a", b"x"))
        fs.put_file(_write(tmp_path / "b", b"y"), consume=True)
        fs.put_bytes(b"z")
        assert list((tmp_path / "tmp").iterdir()) == []

    def test_nothing_written_outside_root(self, tmp_path: Path) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
        fs.put_file(_write(tmp_path / "in" / "..evil", b"x"))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "in", "tmp"]

    def test_write_is_fsynced_before_rename(self, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
        events: list[str] = []
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd: int) -> None:
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            events.append(f"fsync-{kind}")
            real_fsync(fd)

        def rename(src: Any, dst: Any) -> None:
            events.append(f"rename:{Path(src).parent.name}->{Path(dst).parent.parent.parent.name}")
            real_rename(src, dst)

        monkeypatch.setattr(blob.os, "fsync", fsync)
        monkeypatch.setattr(blob.os, "rename", rename)
        fs.put_file(_write(tmp_path / "a", b"x"))
        rename_at = events.index("rename:tmp->blobs")
        assert "fsync-file" in events[:rename_at]
        assert events[rename_at + 1:] == ["fsync-dir"]

    def test_consumed_file_is_fsynced_before_its_rename(self, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
        events = _record_fsyncs_and_renames(monkeypatch)
        fs.put_file(_write(tmp_path / "tmp" / "in.dcm", b"x"), consume=True)
        assert "fsync-file" in events[:events.index("rename")]
        assert events[-1] == "fsync-dir"

    def test_deferred_sync_fsyncs_each_directory_once(self, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
        fs.put_bytes(b"warm")  # the bucket directory exists (its creation fsyncs its parents)
        synced: list[str] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)

        monkeypatch.setattr(blob.os, "fsync", fsync)
        keys = [fs.put_file(_write(tmp_path / f"s{i}", b"x"), defer_sync=True).key
                for i in range(20)]
        assert synced == []  # nothing yet: the caller owns the directory fsync
        fs.sync(keys)
        dirs = {str(fs.path(k).parent) for k in keys}  # type: ignore[union-attr]
        assert sorted(synced) == sorted(dirs)
        # Puts in the same minute share a bucket (a test running across a minute sees two).
        assert len(dirs) <= 2

    def test_bytes_are_fsynced_before_their_rename(self, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
        fs.put_bytes(b"warm")  # the bucket directory exists
        events = _record_fsyncs_and_renames(monkeypatch)
        put = fs.put_bytes(b"payload")
        assert events == ["fsync-file", "rename", "fsync-dir"]
        events.clear()
        deferred = fs.put_bytes(b"later", defer_sync=True)
        assert events == ["fsync-file", "rename"]  # the directory is the caller's (sync)
        fs.sync([deferred.key])
        assert events[-1] == "fsync-dir"
        for p, data in ((fs.path(put.key), b"payload"), (fs.path(deferred.key), b"later")):
            assert p is not None and p.read_bytes() == data
            assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert put.sha256 == hashlib.sha256(b"payload").hexdigest() and put.size == 7

    @pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
    def test_bytes_that_cannot_be_written_leave_nothing(self, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        code: int) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")

        def failing_write(fd: int, data: Any) -> int:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(blob.os, "write", failing_write)
        with pytest.raises(StorageFull if code == errno.ENOSPC else StorageError):
            fs.put_bytes(b"x" * 1000)
        assert list((tmp_path / "tmp").iterdir()) == []
        assert list(fs.keys()) == []

    def test_consume_renames_without_copy(self, tmp_path: Path) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
        source = _write(tmp_path / "tmp" / "incoming.dcm", b"payload")
        inode = source.stat().st_ino
        put = fs.put_file(source, consume=True)
        path = fs.path(put.key)
        assert path is not None and path.stat().st_ino == inode

    @pytest.mark.parametrize(("code", "exc"), [
        (errno.ENOSPC, StorageFull), (errno.EDQUOT, StorageFull), (errno.EIO, StorageError),
    ])
    def test_os_errors_map_and_leave_nothing(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             code: int, exc: type[Exception]) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")

        def failing_fsync(fd: int) -> None:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(blob.os, "fsync", failing_fsync)
        with pytest.raises(exc) as info:
            fs.put_file(_write(tmp_path / "a", b"x"))
        assert type(info.value) is exc
        assert list((tmp_path / "tmp").iterdir()) == []
        assert list(fs.keys()) == []

    def test_keys_ignores_foreign_files(self, tmp_path: Path) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
        put = fs.put_bytes(b"x")
        _write(tmp_path / "blobs" / "README", b"")
        _write(tmp_path / "blobs" / "abc" / "de" / ("f" * 32), b"")
        _write(tmp_path / "blobs" / put.key[:2] / put.key[2:4] / "notakey.part", b"")
        assert list(fs.keys()) == [put.key]

    def test_clear_tmp(self, tmp_path: Path) -> None:
        fs = FilesystemBlobStore(tmp_path / "blobs", tmp_path / "tmp")
        _write(tmp_path / "tmp" / "a.part", b"1")
        _write(tmp_path / "tmp" / "b.part", b"2")
        assert fs.clear_tmp() == 2
        assert list((tmp_path / "tmp").iterdir()) == []
        assert fs.clear_tmp() == 0


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, so that ENOSPC comes from the kernel."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    reason = mount_tmpfs(mount_point, "1m")
    if reason is not None:
        pytest.skip(f"{reason}; ENOSPC is covered by the shim test")
    try:
        yield mount_point
    finally:
        unmount(mount_point)


class TestStorageFullOnRealFileSystem:
    def test_enospc_raises_storage_full_and_leaves_nothing(self, tiny_tmpfs: Path,
                                                           tmp_path: Path) -> None:
        fs = FilesystemBlobStore(tiny_tmpfs / "blobs", tiny_tmpfs / "tmp")
        small = fs.put_file(_write(tmp_path / "small", b"s" * 1000))
        with pytest.raises(StorageFull, match="no space left"):
            fs.put_file(_write(tmp_path / "big", os.urandom(2 * 1024 * 1024)))
        assert list((tiny_tmpfs / "tmp").iterdir()) == []
        assert list(fs.keys()) == [small.key]
        assert (tmp_path / "big").stat().st_size == 2 * 1024 * 1024
        # Space is given back: a small write succeeds again.
        again = fs.put_bytes(b"after")
        assert sorted(fs.keys()) == sorted([small.key, again.key])

    def test_put_bytes_enospc(self, tiny_tmpfs: Path) -> None:
        fs = FilesystemBlobStore(tiny_tmpfs / "blobs", tiny_tmpfs / "tmp")
        with pytest.raises(StorageFull):
            fs.put_bytes(b"\0" * (2 * 1024 * 1024))
        assert list((tiny_tmpfs / "tmp").iterdir()) == []
        assert list(fs.keys()) == []


class TestCopyStream:
    def test_copies_all(self, tmp_path: Path) -> None:
        import io

        data = os.urandom(1024 * 1024 * 2 + 5)
        out = io.BytesIO()
        assert copy_stream(io.BytesIO(data), out) == len(data)
        assert out.getvalue() == data


def _record_fsyncs_and_renames(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The blob store's fsyncs (of a file or a directory) and renames, in order, as they happen."""
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def rename(src: Any, dst: Any) -> None:
        events.append("rename")
        real_rename(src, dst)

    monkeypatch.setattr(blob.os, "fsync", fsync)
    monkeypatch.setattr(blob.os, "rename", rename)
    return events
