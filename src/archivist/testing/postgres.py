"""A throw-away PostgreSQL server for tests: a cluster made with Debian's ``initdb`` in a
temporary folder, started on a free loopback port, one new database per caller, removed at stop.

Run as root (CI), the server runs as the ``postgres`` user the Debian package creates, since
PostgreSQL refuses to run as root. :func:`available` says whether the binaries are there.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from archivist.testing.server import free_port

__all__ = ["PostgresServer", "available"]


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name)
                      if Path(p).parent.parent.name.isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def available() -> bool:
    """Whether PostgreSQL's server binaries are installed (and, as root, a user to run them)."""
    if _bindir() is None:
        return False
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
    return True


class PostgresServer:
    """``start()``, then :meth:`new_database` for each test's index; ``stop()`` removes all."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.bindir = bindir
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="archivist-pg-"))
        self.data = self.folder / "cluster"
        self._user: list[str] = []
        self._counter = itertools.count(1)
        self._options = ""

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._user, *args], capture_output=True, text=True,
                              timeout=120, check=check, cwd=self.folder)

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "archivist",
                  "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=200")
        self._options = options
        done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
                         "-l", str(self.folder / "log"), "-w", "-t", "60", "start", check=False)
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {done.stdout}{done.stderr}"
                               f"{self.log()[-2000:]}")
        return self

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / "log").read_text(errors="replace")
        return ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://archivist@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database; returns its URL (``postgresql://...``)."""
        name = f"archive{next(self._counter)}"
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "archivist", name)
        return self.url(name)

    def pause(self) -> None:
        """Stop the server, keeping its databases (:meth:`resume` starts it again): an
        outage."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                  "stop", check=False)

    def resume(self) -> None:
        done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o",
                         self._options, "-l", str(self.folder / "log"), "-w", "-t", "60",
                         "start", check=False)
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start again: {done.stdout}{done.stderr}")

    def stop(self) -> None:
        self.pause()
        shutil.rmtree(self.folder, ignore_errors=True)
