"""The servers under test, each started on loopback with a fresh data directory and stopped by PID.

- :class:`ArchivistTarget`: ``python -m archivist.cli.main serve`` (what ``make serve`` runs).
- :class:`OrthancTarget`: Debian's Orthanc with its SQLite index, ``SyncStorageArea`` and the
  DICOMweb plugin, from a generated ``orthanc.json`` (otherwise Orthanc's defaults).
- :class:`StorescpTarget`: DCMTK ``storescp --fork`` writing files (the C++ ceiling).
- :class:`PynetdicomTarget`: :mod:`bench.pynetdicom_scp` (the Python ceiling for one process).

Every target is started in its own session so that ``stop`` can end exactly the process group it
started (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parent.parent
ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SCU_AET = "BENCHSCU"
PEER_AET = "STORESCP"
#: A second C-MOVE destination: storescp as Debian starts it, without TCP_NODELAY.
STOCK_PEER_AET = "STOCKSCP"


def dcmtk(tool: str) -> str:
    """Absolute path of a DCMTK tool. pynetdicom installs Python apps with the same names
    (storescu, storescp, ...) in the virtualenv's bin, first on PATH under ``uv run``: skip it."""
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and os.path.abspath(d) != venv_bin]
    found = shutil.which(tool, path=os.pathsep.join([*dirs, "/usr/bin"]))
    if found is None:
        raise RuntimeError(f"{tool} (DCMTK) not found: apt-get install dcmtk")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(200 <= r.status < 300)
    except OSError:
        return False


def http_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


class Target:
    """A server under test. Subclasses say how to start it and how to count what it stored."""

    name = "target"
    aet = "ANY-SCP"
    #: DICOMweb root path (None: the target has no DICOMweb).
    dicomweb_root: str | None = None
    #: Answers C-FIND / C-MOVE / C-GET.
    query_retrieve = False
    #: Environment the server gets on top of the harness's own.
    extra_env: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.dicom_port = 0
        self.http_port = 0
        self.peer_port = 0
        #: The port of the STOCK_PEER_AET destination (0: none configured).
        self.stock_peer_port = 0

    # -- to implement ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return port_open(self.dicom_port)

    def stored_count(self) -> int:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def version(self) -> str:
        return ""

    def available(self) -> str | None:
        """None when the target can run here, else why not."""
        return None

    def prepare(self, workdir: Path, peer_port: int) -> None:
        """Fresh ports and an empty `workdir` (removed first if it exists)."""
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        self.workdir = workdir
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.peer_port = peer_port

    def start(self, timeout: float = 60.0) -> None:
        """Start on the prepared workdir and ports; returns once it accepts connections."""
        assert self.workdir is not None
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - closed after Popen
        # Settings come from the command line only: no ARCHIVIST_* of the caller leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVIST_")}
        env["TCP_NODELAY"] = "1"  # DCMTK reads it (storescp); the others ignore it
        env.update(self.extra_env)
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir, env=env,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process we started; SIGKILL its process group if it does not exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of the group we started
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same data (for "cold" measurements)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        if self.workdir is None or not (self.workdir / "server.log").exists():
            return ""
        text = (self.workdir / "server.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def cleanup(self) -> None:
        if self.workdir is not None and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)


class ArchivistTarget(Target):
    name = "archivist"
    aet = "ARCHIVIST"
    dicomweb_root = "/dicomweb"
    query_retrieve = True

    def __init__(self) -> None:
        super().__init__()
        #: One :meth:`build` per start.
        self.builds: list[dict[str, str]] = []

    def command(self) -> list[str]:
        assert self.workdir is not None
        return [sys.executable, "-m", "archivist.cli.main", "serve",
                "--data", str(self.workdir / "data"), "--aet", self.aet,
                "--dicom-port", str(self.dicom_port), "--http-port", str(self.http_port),
                "--peer", f"{PEER_AET}=127.0.0.1:{self.peer_port}",
                *(["--peer", f"{STOCK_PEER_AET}=127.0.0.1:{self.stock_peer_port}"]
                  if self.stock_peer_port else [])]

    def ready(self) -> bool:
        return http_ok(f"{self.http_base}/healthz")

    def start(self, timeout: float = 60.0) -> None:
        super().start(timeout)
        self.builds.append(self.build())

    def build(self) -> dict[str, str]:
        """What exactly is running: HEAD, a digest of uncommitted changes under src/ (the tree is
        shared with other engineers and may change during a run) and the DIMSE engine."""
        import hashlib

        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(REPO), *args], check=False,
                                  capture_output=True, text=True).stdout

        diff = git("diff", "HEAD", "--", "src")
        untracked = git("ls-files", "--others", "--exclude-standard", "src")
        probe = ("from archivist.config import load_settings, event_loop_kind; "
                 "s = load_settings(); print(f'{s.dimse_engine} on {event_loop_kind(s)}')")
        engine = subprocess.run(
            [sys.executable, "-c", probe],
            check=False, capture_output=True, text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("ARCHIVIST_")}
            | self.extra_env).stdout.strip()
        return {
            "time": time.strftime("%H:%M:%S"),
            "head": git("rev-parse", "--short", "HEAD").strip(),
            "src_tree": git("rev-parse", "--short", "HEAD:src").strip(),
            "src_changes": (hashlib.sha256((diff + untracked).encode()).hexdigest()[:10]
                            if diff or untracked else "none"),
            "dimse_engine": engine or "?",
        }

    def stored_count(self) -> int:
        body = http_json(f"{self.http_base}/api/stats")
        assert isinstance(body, dict)
        return int(body["counts"]["instance"])

    def version(self) -> str:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             check=False, capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "src"],
                               check=False, capture_output=True, text=True).stdout.strip()
        return f"git {out.stdout.strip()}" + (" (src has uncommitted changes)" if dirty else "")


class ArchivistAsyncioTarget(ArchivistTarget):
    """The same server on the standard library's asyncio event loop instead of uvloop
    (``event_loop = "asyncio"``), to measure what uvloop buys in one run."""

    name = "archivist-asyncio"
    extra_env: ClassVar[dict[str, str]] = {"ARCHIVIST_EVENT_LOOP": "asyncio"}


class OrthancTarget(Target):
    name = "orthanc"
    aet = "ORTHANC"
    dicomweb_root = "/dicom-web"
    query_retrieve = True

    def available(self) -> str | None:
        if not shutil.which("Orthanc"):
            return "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)"
        if not ORTHANC_DICOMWEB_PLUGIN.exists():
            return f"{ORTHANC_DICOMWEB_PLUGIN} missing (apt-get install orthanc-dicomweb)"
        return None

    def config(self) -> dict[str, object]:
        """Orthanc's defaults, except ports, folders, the plugin, and who may query/retrieve."""
        assert self.workdir is not None
        return {
            "Name": "bench",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "SyncStorageArea": True,
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": {
                PEER_AET: [PEER_AET, "127.0.0.1", self.peer_port],
                SCU_AET: [SCU_AET, "127.0.0.1", self.peer_port],
                **({STOCK_PEER_AET: [STOCK_PEER_AET, "127.0.0.1", self.stock_peer_port]}
                   if self.stock_peer_port else {}),
            },
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
        }

    def command(self) -> list[str]:
        assert self.workdir is not None
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        return ["Orthanc", str(path)]

    def ready(self) -> bool:
        return port_open(self.dicom_port) and http_ok(f"{self.http_base}/system")

    def stored_count(self) -> int:
        body = http_json(f"{self.http_base}/statistics")
        assert isinstance(body, dict)
        return int(body["CountInstances"])

    def version(self) -> str:
        try:
            body = http_json(f"{self.http_base}/system")
            assert isinstance(body, dict)
            plugins = http_json(f"{self.http_base}/plugins/dicom-web")
            assert isinstance(plugins, dict)
            return f"Orthanc {body.get('Version')}, DICOMweb plugin {plugins.get('Version')}"
        except (OSError, AssertionError, ValueError):
            return _dpkg_version("orthanc")


class _FileWritingTarget(Target):
    """A storage-only SCP that writes each received object to its own file."""

    def stored_count(self) -> int:
        assert self.workdir is not None
        return sum(1 for p in (self.workdir / "out").rglob("*") if p.is_file())


class StorescpTarget(_FileWritingTarget):
    name = "storescp"
    aet = "STORESCP"

    def available(self) -> str | None:
        try:
            dcmtk("storescp")
        except RuntimeError as exc:
            return str(exc)
        return None

    def command(self) -> list[str]:
        assert self.workdir is not None
        (self.workdir / "out").mkdir(exist_ok=True)
        return [dcmtk("storescp"), "--fork", "-aet", self.aet, "-od", str(self.workdir / "out"),
                str(self.dicom_port)]

    def version(self) -> str:
        return _dpkg_version("dcmtk")


class PynetdicomTarget(_FileWritingTarget):
    name = "pynetdicom"
    aet = "PYNETDICOM"

    def command(self) -> list[str]:
        assert self.workdir is not None
        return [sys.executable, "-m", "bench.pynetdicom_scp", str(self.dicom_port),
                str(self.workdir / "out")]

    def start(self, timeout: float = 60.0) -> None:
        os.environ.setdefault("PYTHONPATH", "")
        if str(REPO) not in os.environ["PYTHONPATH"].split(os.pathsep):
            os.environ["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(REPO), os.environ["PYTHONPATH"]) if p)
        super().start(timeout)

    def version(self) -> str:
        import pynetdicom

        return f"pynetdicom {pynetdicom.__version__}"


def _dpkg_version(package: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                         check=False, capture_output=True, text=True)
    return f"{package} {out.stdout.strip()}" if out.returncode == 0 else ""


ALL_TARGETS: dict[str, type[Target]] = {
    "archivist": ArchivistTarget,
    "archivist-asyncio": ArchivistAsyncioTarget,
    "orthanc": OrthancTarget,
    "storescp": StorescpTarget,
    "pynetdicom": PynetdicomTarget,
}


class PeerStorescp:
    """The DCMTK peer that C-MOVE sends to (AE ``STORESCP``), writing into a folder; with
    `nodelay` False, as Debian starts it (AE ``STOCKSCP``, no TCP_NODELAY: it then answers each
    C-STORE in two writes, the second held until the first is acknowledged)."""

    def __init__(self, folder: Path, *, nodelay: bool = True) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.nodelay = nodelay
        self.aet = PEER_AET if nodelay else STOCK_PEER_AET

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder.parent / f"peer-{self.aet.lower()}.log", "ab")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
        if self.nodelay:
            env["TCP_NODELAY"] = "1"
        self.proc = subprocess.Popen(
            [dcmtk("storescp"), "-aet", self.aet, "-od", str(self.folder), str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 20
        while not port_open(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the C-MOVE peer storescp did not start")
            time.sleep(0.05)

    def received(self) -> int:
        return sum(1 for p in self.folder.iterdir() if p.is_file())

    def clear(self) -> None:
        for p in self.folder.iterdir():
            if p.is_file():
                p.unlink()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
