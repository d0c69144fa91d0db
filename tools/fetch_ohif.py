#!/usr/bin/env python3
"""Fetch the pinned OHIF viewer build (``@ohif/app`` from the npm registry) into a cache directory.

Run once before ``archivist serve`` (``make serve`` and ``make test`` do it for you)::

    uv run python tools/fetch_ohif.py            # into the configured viewer_dir
    uv run python tools/fetch_ohif.py --dest DIR  # somewhere else

What it does, and nothing more:

1. asks the registry for the metadata of ``@ohif/app`` at the exact pinned version
   (:data:`archivist.config.OHIF_VERSION`);
2. downloads that version's tarball and checks it against the ``dist.integrity`` (SHA-512, the
   Subresource Integrity string npm records at publish time) before anything is unpacked;
3. unpacks only ``package/dist/`` (a complete static production build) into a temporary folder
   beside the destination, refusing links and paths that leave it, then renames it into place, so
   the destination is either absent or complete;
4. stores a gzip'd copy (``name.gz``) beside each compressible file (scripts, styles, wasm, ...)
   so the server can send it compressed without compressing on every request;
5. writes ``.archivist-ohif.json`` (version, integrity, tarball URL) into it. A destination that
   already holds that marker for the pinned version is left alone, so a second run costs nothing.

The build is never committed to the repository (``.cache/`` is in ``.gitignore``). Only the Python
standard library is used; the registry is ``$npm_config_registry`` or https://registry.npmjs.org.
Exit status: 0 when the bundle is in place, 1 when it could not be fetched or verified.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

PACKAGE = "@ohif/app"
MARKER = ".archivist-ohif.json"
MAX_TARBALL = 512 * 1024 * 1024  # the 3.13.2 tarball is 50 MB; refuse anything absurd
TIMEOUT = 60.0


def _registry() -> str:
    return (os.environ.get("npm_config_registry") or "https://registry.npmjs.org").rstrip("/")


def _log(msg: str) -> None:
    print(f"fetch_ohif: {msg}", file=sys.stderr, flush=True)


def installed_version(dest: Path) -> str | None:
    """The version recorded in `dest`'s marker, or None when `dest` holds no complete bundle."""
    try:
        marker = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not (dest / "index.html").is_file():
        return None
    version = marker.get("version")
    return version if isinstance(version, str) else None


def registry_metadata(version: str) -> dict[str, Any]:
    """The registry's manifest of ``@ohif/app`` at `version` (``GET /<name>/<version>``)."""
    url = f"{_registry()}/{urllib.parse.quote(PACKAGE, safe='@')}/{version}"
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        meta = json.load(resp)
    if not isinstance(meta, dict):
        raise TypeError("registry metadata is not a JSON object")
    if meta.get("name") != PACKAGE or meta.get("version") != version:
        raise RuntimeError(f"registry answered for {meta.get('name')}@{meta.get('version')}")
    return meta


def _sri_hasher(integrity: str) -> tuple[str, bytes]:
    """Parse the strongest ``sha512-...`` entry of an SRI string into (algorithm, digest)."""
    for entry in integrity.split():
        algo, _, b64 = entry.partition("-")
        if algo == "sha512":
            return algo, base64.b64decode(b64)
    raise RuntimeError(f"no sha512 in the registry's integrity string {integrity!r}")


def download(url: str, integrity: str, into: Path) -> Path:
    """Stream `url` to a file in `into`, checking its SHA-512 against `integrity` (SRI)."""
    algo, expected = _sri_hasher(integrity)
    digest = hashlib.new(algo)
    path = into / "package.tgz"
    size = 0
    with urllib.request.urlopen(url, timeout=TIMEOUT) as resp, open(path, "wb") as out:
        while chunk := resp.read(1 << 20):
            size += len(chunk)
            if size > MAX_TARBALL:
                raise RuntimeError(f"tarball larger than {MAX_TARBALL} bytes")
            digest.update(chunk)
            out.write(chunk)
    if digest.digest() != expected:
        raise RuntimeError("tarball does not match the registry's integrity (sha512); not unpacked")
    _log(f"downloaded {size / 1e6:.1f} MB, sha512 verified")
    return path


def unpack_dist(tarball: Path, into: Path) -> None:
    """Extract ``package/dist/**`` (regular files and folders only) into `into`."""
    prefix = "package/dist/"
    root = into.resolve()
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if not member.name.startswith(prefix) or member.name == prefix:
                continue
            rel = member.name[len(prefix):]
            target = (root / rel).resolve()
            if root not in target.parents:
                raise RuntimeError(f"tarball entry {member.name!r} leaves the destination")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                raise RuntimeError(f"tarball entry {member.name!r} is not a plain file")
    if not (root / "index.html").is_file():
        raise RuntimeError("the tarball has no package/dist/index.html")


COMPRESSIBLE = (".js", ".mjs", ".css", ".html", ".json", ".svg", ".wasm", ".map", ".txt", ".xml")


def precompress(root: Path) -> int:
    """Write ``name.gz`` beside every compressible file above 1 KiB; returns how many."""
    count = 0
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in COMPRESSIBLE and path.stat().st_size > 1024:
            gz = path.with_name(path.name + ".gz")
            with (open(path, "rb") as src, open(gz, "wb") as raw,
                  gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6,
                                mtime=0) as out):
                shutil.copyfileobj(src, out, 1 << 20)
            count += 1
    return count


def fetch(dest: Path, version: str, force: bool = False) -> Path:
    """Make `dest` hold the verified OHIF `version` build; returns `dest`."""
    if not force and installed_version(dest) == version:
        _log(f"OHIF {version} already in {dest}")
        return dest
    meta = registry_metadata(version)
    dist = meta.get("dist") or {}
    tarball_url, integrity = dist.get("tarball"), dist.get("integrity")
    if not tarball_url or not integrity:
        raise RuntimeError("registry metadata has no dist.tarball / dist.integrity")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _log(f"fetching {PACKAGE}@{version} from {tarball_url}")
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".ohif-download-") as tmp:
        tmpdir = Path(tmp)
        tarball = download(tarball_url, integrity, tmpdir)
        staged = tmpdir / "dist"
        staged.mkdir()
        unpack_dist(tarball, staged)
        tarball.unlink()
        _log(f"pre-compressed {precompress(staged)} files")
        marker = {"package": PACKAGE, "version": version, "integrity": integrity,
                  "tarball": tarball_url}
        (staged / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if dest.exists():
            old = tmpdir / "old"
            dest.rename(old)
        staged.rename(dest)
    _log(f"OHIF {version} ready in {dest}")
    return dest


def main(argv: list[str] | None = None) -> int:
    from archivist.config import OHIF_VERSION, load_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, help="target folder (default: settings.viewer_dir)")
    parser.add_argument("--version", default=OHIF_VERSION, help="@ohif/app version (pinned)")
    parser.add_argument("--force", action="store_true", help="fetch even if already present")
    args = parser.parse_args(argv)
    dest = args.dest or load_settings().viewer_dir
    try:
        fetch(dest, args.version, force=args.force)
    except Exception as exc:  # noqa: BLE001 - one readable line for make, not a traceback
        _log(f"could not fetch {PACKAGE}@{args.version}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
