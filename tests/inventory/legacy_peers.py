"""Legacy archives for the migration tests: DCMTK dcmqrscp and Orthanc (Debian packages), each
started on free loopback ports with its own temporary configuration and storage, and filled with
DCMTK storescu. Also a TCP proxy that drops a connection part-way (fault injection)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import free_port


def tool(name: str, package: str) -> str:
    venv_bin = os.path.dirname(sys.executable)
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and os.path.abspath(d) != venv_bin] + ["/usr/sbin", "/usr/bin"]
    found = shutil.which(name, path=os.pathsep.join(dirs))
    if found is None:
        pytest.fail(f"{name} is required: apt-get install {package}")
    return found


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited early:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"peer did not listen on {port}:\n{log.read_text(errors='replace')}")


def dcmtk_env() -> dict[str, str]:
    """The environment for DCMTK tools and Orthanc (built on DCMTK): Debian's DCMTK keeps
    Nagle's algorithm on unless TCP_NODELAY=1, and then every message it sends as two PDUs
    (command, data set) waits for the peer's delayed ACK: about 90 ms an instance, 18 s
    instead of 0.3 s to feed 200 instances to Orthanc."""
    return {**os.environ, "TCP_NODELAY": "1"}


def make_files(folder: Path, *, studies: int, series: int, instances: int,
               prefix: str = "MIG") -> list[str]:
    """Generated CT objects; returns their SOP Instance UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    uids = []
    for s in range(studies):
        study_uid = new_uid()
        for e in range(series):
            series_uid = new_uid()
            for i in range(instances):
                ds = make_instance(folder / f"{s:04d}-{e:02d}-{i:03d}.dcm", study_uid=study_uid,
                                   series_uid=series_uid, patient_id=f"{prefix}{s % 7}",
                                   patient_name=f"{prefix}^{s % 7}", series_number=e + 1,
                                   instance_number=i + 1, accession_number=f"A{s}")
                uids.append(str(ds.SOPInstanceUID))
    return uids


def store(folder: Path, aet: str, port: int) -> None:
    subprocess.run([tool("storescu", "dcmtk"), "-aet", "LOADER", "-aec", aet, "+sd", "+r",
                    "-nh", "127.0.0.1", str(port), str(folder)], check=True,
                   capture_output=True, timeout=600, env=dcmtk_env())


@dataclass
class Peer:
    """A running legacy archive."""

    aet: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Kill it and what it forked (its session): its own shutdown is not under test, and
        Orthanc's takes 2-3 s after a SIGTERM."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def start_dcmqrscp(tmp: Path, *, dest_aet: str, dest_port: int) -> Peer:
    """dcmqrscp serving one read-write storage area; `dest_aet` is a known move destination."""
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / "db"
    db.mkdir(exist_ok=True)
    port = free_port()
    cfg = tmp / "dcmqrscp.cfg"
    cfg.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 65536\nMaxAssociations = 16\n"
        "HostTable BEGIN\n"
        f"dest = ({dest_aet}, 127.0.0.1, {dest_port})\n"
        "HostTable END\nVendorTable BEGIN\nVendorTable END\n"
        "AETable BEGIN\n"
        f"LEGACYQR {db} RW (100000, 4096mb) ANY\n"
        "AETable END\n")
    log = tmp / "dcmqrscp.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([tool("dcmqrscp", "dcmtk"), "-c", str(cfg), str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dcmtk_env())
    wait_port(port, proc, log)
    return Peer("LEGACYQR", port, proc, log)


def start_orthanc(tmp: Path, *, dest_aet: str, dest_port: int) -> Peer:
    """Orthanc with its own storage, no HTTP authentication, `dest_aet` as a modality."""
    tmp.mkdir(parents=True, exist_ok=True)
    port, http = free_port(), free_port()
    cfg = tmp / "orthanc.json"
    cfg.write_text(json.dumps({
        "Name": "legacy", "StorageDirectory": str(tmp / "storage"),
        "IndexDirectory": str(tmp / "storage"), "DicomAet": "ORTHANC", "DicomPort": port,
        "HttpPort": http, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False, "DicomModalities": {
            "dest": [dest_aet, "127.0.0.1", dest_port]},
        "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True, "Plugins": [],
        "StorageCompression": False, "HttpServerEnabled": True,
    }))
    log = tmp / "orthanc.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([tool("Orthanc", "orthanc"), str(cfg)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=dcmtk_env())
    wait_port(port, proc, log)
    return Peer("ORTHANC", port, proc, log, {"http": http})


class DroppingProxy:
    """Forwards loopback TCP to `target`; the first `drops` associations that propose `marker`
    (an abstract syntax UID) are cut after the peer has sent `after` bytes on them (a source
    that drops the association mid-study)."""

    def __init__(self, target: int, *, after: int, drops: int = 1,
                 marker: bytes = b"1.2.840.10008.5.1.4.1.2.2.3") -> None:
        self.target = target
        self.marker = marker
        self.after = after
        self.drops = drops
        self.dropped = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            try:
                client.settimeout(10)
                first = client.recv(65536)
                client.settimeout(None)
            except OSError:
                client.close()
                upstream.close()
                continue
            upstream.sendall(first)
            cut = self.marker in first and self.dropped < self.drops
            if cut:
                self.dropped += 1
            threading.Thread(target=self._pipe, args=(client, upstream, None),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client,
                                                      self.after if cut else None),
                             daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: max(0, limit - sent)])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
