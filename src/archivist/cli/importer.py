"""``archivist import``: files, folders, DICOMDIR and .zip through the one ingest pipeline."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
import tempfile
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from archivist.config import Settings

_ZIP_MAX_ENTRIES = 200_000


@dataclass
class Item:
    """One candidate object: a file on disk or an entry of a zip archive."""

    name: str
    size: int
    path: Path | None = None
    zip_path: Path | None = None
    zip_entry: str | None = None


def _is_within(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (Python < 3.13)
        return False


def _on_media(folder: Path, parts: list[str]) -> Path:
    """The file a DICOMDIR's Referenced File ID names under `folder`. File IDs are upper case
    (PS3.10 8.2, PS3.12 ISO 9660 names); media mounted or copied on another system often shows
    them in lower case, so a component absent as written is looked up ignoring case."""
    path = folder
    for part in parts:
        exact = path / part
        if not exact.exists() and path.is_dir():
            try:
                same = [c for c in path.iterdir() if c.name.lower() == part.lower()]
            except OSError:
                same = []
            if len(same) == 1:
                exact = same[0]
        path = exact
    return path


def _dicomdir_items(dicomdir: Path, refused: list[tuple[str, str]],
                    skipped: Counter[str]) -> Iterator[Item]:
    """Files a DICOMDIR references, refusing any path outside its folder (pydicom CVE-2026-32711).

    A referenced file that is absent or unreadable is added to `refused` (the import was asked
    for it); a reference leading outside the folder, or to something other than a file, is
    counted in `skipped`.
    """
    import pydicom

    root = dicomdir.parent
    ds = pydicom.dcmread(dicomdir, stop_before_pixels=True)
    for record in ds.get("DirectoryRecordSequence", []):
        ref = record.get("ReferencedFileID")
        if not ref:
            continue
        parts = [str(p) for p in (ref if isinstance(ref, (list, tuple)) or
                                  type(ref).__name__ == "MultiValue" else [ref])]
        if any(p in ("", ".", "..") or "/" in p or "\\" in p for p in parts):
            skipped["DICOMDIR reference outside its folder"] += 1
            continue
        candidate = _on_media(root, parts)
        try:
            st = candidate.stat()
        except OSError as exc:
            refused.append((str(candidate), f"named by {dicomdir}: {_os_reason(exc)}"))
            continue
        if not _is_within(candidate, root):
            skipped["DICOMDIR reference outside its folder"] += 1
        elif not stat.S_ISREG(st.st_mode):
            skipped["not a regular file"] += 1
        else:
            yield Item(str(candidate), st.st_size, path=candidate)


def _os_reason(exc: OSError) -> str:
    """Why a file could not be used, without repeating its name."""
    if exc.errno == errno.ENOENT:
        return "not found"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"cannot read: {exc.strerror or exc}"


_DIRECTORY_STORAGE = b"1.2.840.10008.1.3.10"  # Media Storage Directory Storage (PS3.10 8.6)


def _is_dicomdir(path: Path) -> bool:
    """A DICOMDIR by its File Meta, whatever its name (``DICOMDIR-bigEnd``, ``DICOMDIR;1``,
    a renamed copy): its records name the files to import; the object itself is no image."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
        if head[128:132] != b"DICM" or _DIRECTORY_STORAGE not in head:
            return False
        import pydicom

        meta = pydicom.filereader.read_file_meta_info(path)
        return str(meta.get("MediaStorageSOPClassUID", "")) == _DIRECTORY_STORAGE.decode()
    except Exception:  # noqa: BLE001 - not readable as Part 10: the ingest says why
        return False


def collect(paths: list[Path]) -> tuple[list[Item], Counter[str], list[tuple[str, str]]]:
    """Every candidate under `paths`; regular files only, no links leading outside a root.

    Returns the candidates, what was skipped (by reason), and what was asked for but could not
    be read (name and reason: a folder or file without permission, a file a DICOMDIR names that
    is absent), which the import reports as rejected.
    """
    items: list[Item] = []
    skipped: Counter[str] = Counter()
    refused: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add_file(p: Path, root: Path) -> None:
        try:
            st = p.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                skipped["symbolic link loop"] += 1
            elif p.is_symlink():
                skipped["broken symbolic link"] += 1
            else:
                refused.append((str(p), _os_reason(exc)))
            return
        if p.is_symlink() and not _is_within(p, root):
            skipped["link outside the folder"] += 1
            return
        if not stat.S_ISREG(st.st_mode):
            skipped["not a regular file"] += 1
            return
        key = str(p.resolve())
        if key in seen:
            return
        seen.add(key)
        if p.suffix.lower() == ".zip":
            # A .zip that cannot be opened (truncated, damaged) is named with its reason, not
            # counted as "not DICOM" (QA s22): its objects were not imported.
            if not zipfile.is_zipfile(p):
                refused.append((str(p), _DAMAGED_ZIP))
                return
            try:
                with zipfile.ZipFile(p) as zf:
                    infos = [i for i in zf.infolist() if not i.is_dir()]
                    if len(infos) > _ZIP_MAX_ENTRIES:
                        skipped["zip with too many entries"] += 1
                        return
                    for info in infos:
                        items.append(Item(f"{p}!{info.filename}", info.file_size, zip_path=p,
                                          zip_entry=info.filename))
            except (zipfile.BadZipFile, OSError) as exc:
                reason = f"an unreadable ZIP archive ({exc}): nothing in it was imported"
                refused.append((str(p), reason))
            return
        if p.name.upper() == "DICOMDIR" or _is_dicomdir(p):
            try:
                for item in _dicomdir_items(p, refused, skipped):
                    resolved = str(item.path and item.path.resolve())
                    if resolved not in seen:
                        seen.add(resolved)
                        items.append(item)
            except Exception:  # noqa: BLE001
                skipped["unreadable DICOMDIR"] += 1
            return
        items.append(Item(str(p), st.st_size, path=p))

    def unreadable_folder(exc: OSError) -> None:
        refused.append((f"{exc.filename}{os.sep}", _os_reason(exc)))

    for given in paths:
        if given.is_dir():
            for dirpath, dirnames, filenames in os.walk(given, followlinks=False,
                                                        onerror=unreadable_folder):
                dirnames.sort()
                for name in sorted(filenames):
                    add_file(Path(dirpath) / name, given)
        else:
            add_file(given, given.parent)
    return items, skipped, refused


_DAMAGED_ZIP = ("a damaged or truncated ZIP archive (no central directory): nothing in it was "
                "imported")


def _looks_like_part10(head: bytes) -> bool:
    return (len(head) >= 132 and head[128:132] == b"DICM") or _lacks_preamble(head)


def _lacks_preamble(head: bytes) -> bool:
    """A Part 10 file written without its 128-byte preamble and DICM prefix: it starts with the
    File Meta group (explicit VR little endian: (0002,0000) UL or (0002,0001) OB), as pydicom
    and some older tools write. Imported with a preamble added, as STOW-RS takes such parts."""
    return (len(head) >= 8 and head[128:132] != b"DICM" and head[:2] == b"\x02\x00"
            and head[2:4] in (b"\x00\x00", b"\x01\x00") and head[4:6] in (b"UL", b"OB"))


_PREAMBLE = b"\x00" * 128 + b"DICM"


def _head_of_regular_file(path: Path) -> bytes | None:
    """The first 132 bytes of `path`, or None when it is no longer a regular file: a file
    replaced by a FIFO or a device since it was listed must not block the import or feed it
    without end (the open does not wait for a FIFO's writer)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 132)
    finally:
        os.close(fd)


def printable(text: str) -> str:
    """A file name as printable text: bytes of a name that are not valid in the file system's
    encoding (kept by Python as lone surrogates, PEP 383) are written as ``\\xNN`` escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return text
    try:
        raw = text.encode(sys.getfilesystemencoding(), "surrogateescape")
        return raw.decode(sys.getfilesystemencoding(), "backslashreplace")
    except UnicodeError:
        return text.encode("ascii", "backslashreplace").decode("ascii")


def run_import(settings: Settings, paths: list[Path], *, quiet: bool = False,
               workers: int = 4) -> int:
    """Import `paths`; prints a summary; returns 0, or 1 when some objects were rejected."""
    import logging

    from archivist.archive.ingest import Origin, StoreStatus
    from archivist.cli.main import open_archive
    from archivist.cli.serve import configure_logging
    from archivist.errors import ArchivistError, InvalidObject, StorageFull

    configure_logging("WARNING")
    logging.getLogger("archivist").setLevel(logging.WARNING)
    items, skipped, refused = collect(paths)
    archive = open_archive(settings)
    tmp_dir = settings.tmp_dir
    tmp_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    rejected: list[tuple[str, str]] = list(refused)
    lock = threading.Lock()
    origin = Origin("import")
    stop = threading.Event()

    def one(item: Item, advance: Callable[[int], None]) -> None:
        if stop.is_set():
            return
        tmp_name: str | None = None
        try:
            if item.zip_path is not None:
                assert item.zip_entry is not None
                with zipfile.ZipFile(item.zip_path) as zf, zf.open(item.zip_entry) as src:
                    head = src.read(132)
                    if not _looks_like_part10(head):
                        if head.startswith(b"PK\x03\x04"):
                            raise InvalidObject("a ZIP archive inside a ZIP archive is not "
                                                "opened: unpack it first")
                        with lock:
                            skipped["not DICOM"] += 1
                        return
                    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, suffix=".dcm")
                    written = len(head)
                    with os.fdopen(fd, "wb") as dst:
                        if _lacks_preamble(head):
                            dst.write(_PREAMBLE)
                        dst.write(head)
                        while chunk := src.read(1024 * 1024):
                            written += len(chunk)
                            if written > settings.max_object_size:
                                raise InvalidObject("zip entry larger than max_object_size")
                            dst.write(chunk)
                path, consume = Path(tmp_name), True
            else:
                assert item.path is not None
                first = _head_of_regular_file(item.path)
                if first is None:
                    with lock:
                        skipped["not a regular file"] += 1
                    return
                head = first
                if not _looks_like_part10(head):
                    with lock:
                        skipped["not DICOM"] += 1
                    return
                path, consume = item.path, False
                if _lacks_preamble(head):
                    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, suffix=".dcm")
                    with os.fdopen(fd, "wb") as dst, open(item.path, "rb") as src:
                        dst.write(_PREAMBLE)
                        shutil.copyfileobj(src, dst, 1 << 20)
                    path, consume = Path(tmp_name), True
            result = archive.ingest.store_file(path, origin, consume=consume)
            with lock:
                if result.status is StoreStatus.ALREADY_STORED:
                    counts["already present"] += 1
                else:
                    counts["stored"] += 1
        except StorageFull as exc:
            with lock:
                rejected.append((item.name, str(exc)))
            stop.set()
        except ArchivistError as exc:
            with lock:
                rejected.append((item.name, str(exc)))
        except OSError as exc:
            with lock:
                rejected.append((item.name, _os_reason(exc)))
        finally:
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass
            advance(item.size)

    total_bytes = sum(i.size for i in items)
    try:
        if quiet or not items:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(lambda it: one(it, lambda n: None), items))
        else:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            with Progress(
                TextColumn("[bold]importing[/] {task.fields[files]} files"), BarColumn(),
                DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                transient=False,
            ) as progress:
                task = progress.add_task("import", total=max(total_bytes, 1),
                                         files=f"0/{len(items)}")
                done = [0]

                def advance(n: int) -> None:
                    with lock:
                        done[0] += 1
                        files = f"{done[0]}/{len(items)}"
                    progress.update(task, advance=n, files=files)

                with ThreadPoolExecutor(max_workers=workers) as pool:
                    list(pool.map(lambda it: one(it, advance), items))
    finally:
        archive.close()

    out = sys.stdout
    if hasattr(out, "reconfigure"):
        # A name the output's encoding cannot take is escaped rather than a traceback.
        out.reconfigure(errors="backslashreplace")
    print(
        f"Imported: {counts['stored']} stored, {counts['already present']} already present, "
        f"{len(rejected)} rejected, {sum(skipped.values())} skipped (not DICOM or unreadable).",
        file=out,
    )
    for reason, n in sorted(skipped.items()):
        print(f"  skipped {n}: {reason}", file=out)
    for name, reason in rejected:
        print(f"  rejected {printable(name)}: {printable(reason)}", file=out)
    if stop.is_set():
        print("Stopped early: the archive is out of space.", file=out)
    return 1 if rejected else 0
