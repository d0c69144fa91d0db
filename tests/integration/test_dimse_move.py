"""C-MOVE sub-operations over the association Archivist requests (dimse/requestor.py), against a
real DCMTK storescp: every instance arrives, as stored, even when the server's threads fight for
the GIL.

The regression: C-MOVE used pynetdicom's SCU (``AE.associate`` + ``send_c_store``) in a worker
thread. Its association reactor thread can take a C-STORE response off the queue that
``send_c_store`` is waiting on ("Received unexpected C-STORE service message"): the sub-operation
then waits out the DIMSE timeout, the association is aborted and every later sub-operation fails
with RuntimeError. The benchmark saw it in 3 of 9 moves of a 300-instance study, while other work
kept the server busy (reproduced outside the server: pynetdicom's SCU sending to storescp while
six threads keep the GIL busy lost a response within about 100 stores, 3 runs of 3). Such a
load test does not fail reliably inside a test run, so the regression test pins the cause: no
pynetdicom requestor takes part in a C-MOVE any more.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelMove

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.config import load_settings
from archivist.dimse.server import DimseServer
from archivist.testing.datasets import make_instance
from archivist.testing.server import free_port
from conftest import dcmtk_tool

AET = "ARCHIVIST"
N = 20


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "storescp exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail("storescp did not start")


def open_archive(tmp_path: Path, peer_port: int, n: int) -> tuple[Archive, str, list[Path]]:
    settings = load_settings(env={}, overrides={
        "data_dir": tmp_path / "data", "dicom_port": free_port(), "dimse_engine": "asyncio",
        "dimse_timeout": 10, "peers": f"STORESCP=127.0.0.1:{peer_port}"})
    a = Archive.open(settings)
    study, series = generate_uid(), generate_uid()
    originals = []
    for i in range(n):
        p = tmp_path / "src" / f"{i}.dcm"
        p.parent.mkdir(exist_ok=True)
        make_instance(p, study_uid=study, series_uid=series, instance_number=i + 1, rows=16,
                      columns=16)
        copy = tmp_path / "orig" / f"{i}.dcm"
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(p.read_bytes())
        originals.append(copy)
        a.ingest.store_file(p, Origin("import"), consume=True)
    return a, study, originals


def c_move(port: int, study: str) -> Dataset:
    ae = AE(ae_title="MOVER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    assert assoc.is_established
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study
    try:
        responses = list(assoc.send_c_move(ident, "STORESCP",
                                           StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    return responses[-1][0]  # type: ignore[no-any-return]


def data_set_of(path: Path) -> tuple[str, bytes]:
    """(transfer syntax, the encoded data set after the File Meta group)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    raw = path.read_bytes()
    return str(ds.file_meta.TransferSyntaxUID), raw[132 + 12 + int(
        ds.file_meta.FileMetaInformationGroupLength):]


def start_storescp(port: int, out: Path, *options: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([dcmtk_tool("storescp"), *options, "-aet", "STORESCP",
                             "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc


@pytest.mark.usefixtures("dcmtk")
class TestMoveWithoutPynetdicomRequestor:
    def test_sub_operations_do_not_run_on_a_pynetdicom_requestor(self, tmp_path: Path) -> None:
        """The destination is an in-process pynetdicom storage SCP and the C-MOVE comes from
        DCMTK movescu, so a pynetdicom association in requestor mode alive while an instance
        arrives can only be the server's: the SCU whose reactor races ``send_c_store``."""
        from pynetdicom import evt
        from pynetdicom.association import Association

        peer_port = free_port()
        archive, study, _ = open_archive(tmp_path, peer_port, N)
        seen_requestors: list[int] = []
        received: list[str] = []

        def on_store(event: Any) -> int:
            seen_requestors.append(sum(
                1 for t in threading.enumerate()
                if isinstance(t, Association) and t.is_requestor))
            received.append(str(event.request.AffectedSOPInstanceUID))
            return 0

        dest = AE(ae_title="STORESCP")
        dest.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        scp = dest.start_server(("127.0.0.1", peer_port), block=False,
                                evt_handlers=[(evt.EVT_C_STORE, on_store)])
        server = DimseServer(archive)
        server.start()
        try:
            assert server.wait_listening()
            r = subprocess.run([dcmtk_tool("movescu"), "-S", "-aec", AET, "-aem", "STORESCP",
                                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                                "127.0.0.1", str(server.port)],
                               capture_output=True, text=True, timeout=120, check=False)
        finally:
            server.stop()
            archive.close()
            scp.shutdown()
        assert r.returncode == 0, r.stderr
        assert len(set(received)) == N
        assert max(seen_requestors) == 0


@pytest.mark.usefixtures("dcmtk")
class TestMoveSendsWhatIsStored:
    def test_stored_syntax_bytes_unchanged_and_implicit_only_peer_gets_implicit(
            self, tmp_path: Path) -> None:
        peer_port = free_port()
        archive, study, originals = open_archive(tmp_path, peer_port, 3)
        server = DimseServer(archive)
        server.start()
        try:
            assert server.wait_listening()
            expected = {pydicom.dcmread(p).SOPInstanceUID: data_set_of(p) for p in originals}
            assert {ts for ts, _ in expected.values()} == {"1.2.840.10008.1.2.1"}
            for options, want_ts in (((), "1.2.840.10008.1.2.1"),
                                     (("+xi",), "1.2.840.10008.1.2")):
                out = tmp_path / f"received{len(options)}"
                out.mkdir()
                scp = start_storescp(peer_port, out, *options)
                try:
                    final = c_move(server.port, study)
                finally:
                    scp.terminate()
                    scp.wait(10)
                assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 3
                got = list(out.iterdir())
                assert len(got) == 3
                for path in got:
                    ds = pydicom.dcmread(path)
                    ts, data = data_set_of(path)
                    assert ts == want_ts
                    if want_ts == "1.2.840.10008.1.2.1":
                        assert data == expected[ds.SOPInstanceUID][1]  # byte for byte
                    else:
                        original = pydicom.dcmread(originals[0])
                        assert ds.PatientName == original.PatientName
                        assert ds.PixelData is not None and len(ds.PixelData) == 256
        finally:
            server.stop()
            archive.close()

    def test_unreachable_destination_is_a702(self, tmp_path: Path) -> None:
        # A configured destination that does not answer is not "unknown" (0xA801): every
        # sub-operation fails (PS3.4 C.4.2.1.5 0xA702, as DCMTK dcmqrscp and dcm4chee answer).
        archive, study, _ = open_archive(tmp_path, free_port(), 2)
        server = DimseServer(archive)
        server.start()
        try:
            assert server.wait_listening()
            final = c_move(server.port, study)
        finally:
            server.stop()
            archive.close()
        assert final.Status == 0xA702
        assert final.NumberOfFailedSuboperations == 2
        assert final.NumberOfCompletedSuboperations == 0


@pytest.mark.usefixtures("dcmtk")
class TestStockStorescpPeer:
    def test_move_to_storescp_without_tcp_nodelay_does_not_stall(self, tmp_path: Path) -> None:
        """DCMTK's storescp as Debian ships it (no TCP_NODELAY in its environment) answers each
        C-STORE in two writes and holds the second until the first is acknowledged: with the
        kernel's delayed ACK every sub-operation waited ~40 ms (300 CT objects: 13.3 s, Orthanc
        too), until our requestor acknowledged at once (TCP_QUICKACK). 60 objects: at least
        2.4 s stalled, well under 1 s without the stall."""
        import os

        peer_port = free_port()
        n = 60
        archive, study, _ = open_archive(tmp_path, peer_port, n)
        out = tmp_path / "received"
        out.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
        scp = subprocess.Popen([dcmtk_tool("storescp"), "-aet", "STORESCP", "-od", str(out),
                                str(peer_port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)
        server = DimseServer(archive)
        try:
            wait_port(peer_port, scp)
            server.start()
            assert server.wait_listening()
            c_move(server.port, study)  # the first association warms everything up
            for p in out.iterdir():
                p.unlink()
            started = time.monotonic()
            final = c_move(server.port, study)
            seconds = time.monotonic() - started
        finally:
            server.stop()
            archive.close()
            scp.terminate()
            scp.wait(10)
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == n
        assert len(list(out.iterdir())) == n
        assert seconds < 1.6, f"{n} sub-operations took {seconds:.2f} s: the delayed-ACK stall"
