"""QA (life cycle): the data directory's file system, and what a killed worker leaves there.

- A data directory the archive cannot write (a read-only mount) made every worker fail with a
  traceback, started again and again, until the supervisor gave up: ``serve`` now says so in
  one line and exits 1 before it binds or starts anything. An archive whose disk is full
  (restarted after it filled up) says so in one line too.
- A second ``serve`` on the same data directory is refused (the two handed each other's
  STOW-RS parts through the same exchange sockets).
- A worker killed (SIGKILL, the OOM killer) in the middle of a C-STORE left the data set it
  was receiving in ``tmp`` until the whole archive restarted (the start-up sweep only runs
  when no process uses the data directory). The supervisor now removes what the worker left
  when it reaps it, as the STOW-RS part files of dead workers are removed.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.fs import mount_tmpfs, unmount
from archivist.testing.server import ServerProcess, free_port

pytestmark = pytest.mark.timeout(180)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    reason = mount_tmpfs(mount_point, "1m")
    if reason is not None:
        pytest.skip(reason)
    try:
        (mount_point / "data").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True,
                       capture_output=True, timeout=10)
        yield mount_point
    finally:
        unmount(mount_point)


@pytest.mark.parametrize("data", ["data", "new/data"])
def test_a_read_only_data_directory_is_refused_in_one_line(read_only_dir: Path,
                                                           data: str) -> None:
    where = read_only_dir / data
    done = subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "serve", "--data", str(where),
         "--dicom-port", str(free_port()), "--http-port", str(free_port()), "--workers", "2"],
        capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out, out
    assert f"error: cannot write in the data directory {where}: Read-only file system" in out


def test_an_archive_on_a_full_disk_says_so_in_one_line(tmp_path: Path) -> None:
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    reason = mount_tmpfs(mount_point, "1m")
    if reason is not None:
        pytest.skip(reason)
    try:
        with open(mount_point / "filler", "wb") as fh, contextlib.suppress(OSError):
            while True:
                fh.write(bytes(64 * 1024))
                fh.flush()
        where = mount_point / "data"
        done = subprocess.run(
            [sys.executable, "-m", "archivist.cli.main", "serve", "--data", str(where),
             "--dicom-port", str(free_port()), "--http-port", str(free_port()),
             "--workers", "1"], capture_output=True, text=True, timeout=120, check=False)
    finally:
        unmount(mount_point)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out, out
    assert f"error: cannot open the archive in {where}: " in out
    assert "(its file system is full)" in out


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _associate(port: int) -> socket.socket:
    """An association proposing CT Image Storage, opened by hand (so a C-STORE can stop
    half-way, as a worker killed under it sees it)."""
    pc = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, CT_IMAGE.encode())
               + _item(0x40, EXPLICIT_LE.encode()))
    user = _item(0x50, _item(0x51, struct.pack(">L", 65536)) + _item(0x52, b"1.2.3.4"))
    body = (struct.pack(">HH", 1, 0) + b"ARCHIVIST".ljust(16) + b"HALFWAY".ljust(16)
            + bytes(32) + _item(0x10, b"1.2.840.10008.3.1.1.1") + pc + user)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(struct.pack(">BBL", 1, 0, len(body)) + body)
    head = sock.recv(6, socket.MSG_WAITALL)
    assert head[0] == 2, head  # A-ASSOCIATE-AC
    sock.recv(struct.unpack(">L", head[2:])[0], socket.MSG_WAITALL)
    return sock


def _c_store_pdus(path: Path) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE-RQ for the data set of the file at `path`."""
    from pydicom import dcmread

    ds = dcmread(path)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = CT_IMAGE
    primitive.AffectedSOPInstanceUID = ds.SOPInstanceUID
    primitive.Priority = 2
    primitive.DataSet = io.BytesIO(buf.getvalue())
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    out = []
    for primitive_pdata in message.encode_msg(1, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive_pdata)
        out.append(pdu.encode())
    return out


def _holder(parent: int, path: Path) -> int | None:
    """The child of `parent` (a worker) that has `path` open."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == str(path):
                    return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("lifecycle-storage") / "data",
                           extra_args=["--workers", "2"])
    server.start()
    try:
        yield server
    finally:
        assert server.stop() == 0


def test_a_second_serve_on_the_same_data_directory_is_refused(srv: ServerProcess) -> None:
    assert srv.proc is not None
    for workers in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-m", "archivist.cli.main", "serve", "--data", str(srv.data_dir),
             "--dicom-port", str(free_port()), "--http-port", str(free_port()),
             "--workers", workers], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr.strip() == (
            f"error: another 'archivist serve' (pid {srv.proc.pid}) is using the data "
            f"directory {srv.data_dir}; stop it first, or give this one another --data")
    assert srv.healthy()


def test_what_a_worker_killed_in_a_c_store_was_receiving_is_removed(
        srv: ServerProcess, tmp_path: Path) -> None:
    data = srv.data_dir
    assert srv.proc is not None
    big = tmp_path / "big.dcm"
    make_instance(big, study_uid=new_uid(), rows=1024, columns=1024, frames=3)  # 3 MB
    pdus = _c_store_pdus(big)
    tmp = data / "tmp"
    with _associate(srv.dicom_port) as sock:
        sock.sendall(b"".join(pdus[: len(pdus) // 2]))  # half of it, then nothing
        deadline = time.monotonic() + 30
        holder = None
        while holder is None and time.monotonic() < deadline:
            for f in tmp.iterdir():
                holder = _holder(srv.proc.pid, f)
            time.sleep(0.05)
        assert holder is not None, "no worker is writing the data set to a file"
        os.kill(holder, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and srv.log().count("listening dicom=") < 3:
            time.sleep(0.1)
    assert srv.log().count("listening dicom=") >= 3, srv.log()  # replaced
    assert sorted(p.name for p in tmp.iterdir()) == []
    assert f"temporary files of worker process {holder}" in srv.log()


def test_only_the_temporary_files_of_the_ended_process_are_swept(tmp_path: Path) -> None:
    from archivist.store.blob import sweep_temp_of, temp_prefix

    dead = 2**22 + 17  # above the default pid_max: no process has it
    mine = temp_prefix("blob")
    names = [f"blob-{dead}_{'a' * 32}.part", f"dimse-{dead}_k3j2_x9.dcm",  # the dead one's
             f"{mine}{'b' * 32}.part", f"dimse-{os.getpid()}_abc.dcm",  # a living one's
             f"stow-{dead}_abc.part",  # STOW-RS parts: the workers' own sweep
             "tmpabc123.dcm"]  # archivist import's, in its own process
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert sweep_temp_of(tmp_path, dead) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])
