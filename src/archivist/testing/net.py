"""Waiting for a peer process (DCMTK's storescp, a pynetdicom SCP...) to listen.

A test that starts a peer and then sleeps a fixed time before the archive connects to it fails on
a loaded machine where the peer takes longer to start. This waits for the real condition: a
socket in LISTEN state on the port (read from /proc/net/tcp*, so the peer sees no connection
at all), or, where /proc is absent, a TCP connection that is accepted.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def _listening_ports() -> set[int] | None:
    """Ports with a listening TCP socket (IPv4 or IPv6); None where /proc/net is not there."""
    ports: set[int] = set()
    found = False
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        try:
            lines = path.read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == _LISTEN:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if found else None


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    ports = _listening_ports()
    if ports is not None:
        return port in ports
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_listening(port: int, proc: subprocess.Popen | None = None, *,  # type: ignore[type-arg]
                   what: str = "the peer", timeout: float = 60.0,
                   host: str = "127.0.0.1") -> None:
    """Return once something listens on `port`; AssertionError if `proc` exits first or
    nothing listens within `timeout` seconds (generous: returns as soon as it listens; `proc`
    is killed then, not left behind by the failing test)."""
    deadline = time.monotonic() + timeout
    while not is_listening(port, host):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited ({proc.returncode}) before listening on {port}")
        if time.monotonic() >= deadline:
            if proc is not None:
                proc.kill()
                proc.wait(10)
            raise AssertionError(f"{what} did not listen on {port} within {timeout:g} s")
        time.sleep(0.05)
