"""An S3-compatible server for tests: moto's (``moto_server``, a dev dependency) on a free
loopback port, with a fresh bucket per caller (:func:`new_bucket`)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from archivist.store.s3 import S3BlobStore
from archivist.testing.datasets import new_uid
from archivist.testing.server import free_port

__all__ = ["MOTO", "moto_server", "new_bucket"]

MOTO = Path(sys.executable).parent / "moto_server"


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """Run moto's S3 server until the block ends; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_dir / "moto.log", "wb") as log:
        proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(endpoint, timeout=2).close()
                    break
                except urllib.error.HTTPError:
                    break  # it answers
                except OSError:
                    time.sleep(0.2)
            yield endpoint
        finally:
            proc.terminate()
            proc.wait(10)


def new_bucket(endpoint: str, tmp: Path, prefix: str = "archive") -> tuple[str, S3BlobStore]:
    """A new bucket (its name, and a store on it for looking inside)."""
    name = f"{prefix}-{new_uid()[-12:].replace('.', '')}"
    store = S3BlobStore(endpoint, name, region="us-east-1", access_key="test",
                        secret_key="test", cache=tmp / "probe-cache", tmp=tmp / "probe-tmp")
    status, _ = store._request("PUT", None)  # CreateBucket
    if status != 200:
        raise RuntimeError(f"bucket {name} not created: {status}")
    return name, store
