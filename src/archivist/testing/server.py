"""Run a real ``archivist serve`` process on free loopback ports (for tests and benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _PortTaken(Exception):
    """The server could not listen: a port free_port() found was taken since."""


@dataclass
class ServerProcess:
    """A running ``archivist serve``; use :meth:`start` and :meth:`stop` (or ``kill``)."""

    data_dir: Path
    aet: str = "ARCHIVIST"
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    dicom_port: int = 0
    http_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, timeout: float = 120.0) -> ServerProcess:
        """Start and wait until ``/healthz`` answers 200 (or the process exits: RuntimeError).

        The timeout is generous on purpose: on a loaded 2-core machine a server takes ~18 s to
        become healthy (~25 s with two workers, each importing the whole stack), and a wait on
        a real condition costs nothing when the server is quick.
        """
        chosen = not self.dicom_port and not self.http_port
        for attempt in range(3):
            try:
                return self._start(timeout)
            except _PortTaken:
                # free_port() only found the ports free: another test process may have bound
                # one since. Ports we chose are chosen again; given ones are the caller's.
                if not chosen or attempt == 2:
                    raise RuntimeError(f"archivist serve exited early:\n{self.log()}") from None
                self.dicom_port = self.http_port = 0
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> ServerProcess:
        self.dicom_port = self.dicom_port or free_port()
        self.http_port = self.http_port or free_port()
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-serve.log"
        already = self.log_path.stat().st_size if self.log_path.exists() else 0
        cmd = [
            sys.executable, "-m", "archivist.cli.main", "serve", "--data", str(self.data_dir),
            "--aet", self.aet, "--dicom-port", str(self.dicom_port),
            "--http-port", str(self.http_port), *self.extra_args,
        ]
        env = dict(os.environ)
        env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it; ours is closed below
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "Address already in use" in self.log()[already:]:
                    raise _PortTaken
                raise RuntimeError(f"archivist serve exited early:\n{self.log()}")
            if self.healthy():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"archivist serve did not become healthy:\n{self.log()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.proc = None
