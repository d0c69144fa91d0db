"""Bad input, slow clients, crashes and concurrency against a real `archivist serve`."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import struct
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification

from archivist.testing.datasets import make_instance
from archivist.testing.procs import rss_kb  # the server's whole process tree
from archivist.testing.rawpdu import associate_rq, rejection
from archivist.testing.server import ServerProcess

AET = "ARCHIVIST"


def echo_time(srv: ServerProcess, calling: str = "ECHOER") -> float:
    """Seconds for a full association + C-ECHO + release; fails if not successful."""
    t0 = time.monotonic()
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    assert status.Status == 0
    return time.monotonic() - t0


def send_raw(port: int, data: bytes, *, read: bool = True, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            return b""
        if not read:
            return b""
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
        return out


class TestMalformedInput:
    def test_catalogue_of_bad_pdus(self, make_server) -> None:  # type: ignore[no-untyped-def]
        server = make_server(env={"ARCHIVIST_ARTIM_TIMEOUT": "2"})
        assert server.proc is not None
        port = server.dicom_port
        before = rss_kb(server.proc.pid)
        valid = associate_rq()
        cases = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                   # HTTP on the DICOM port
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",        # TLS ClientHello
            struct.pack(">BBL", 1, 0, 0xFFFFFFF0) + b"\0" * 65536,  # A-ASSOCIATE-RQ claiming 4 GB
            struct.pack(">BBL", 1, 0, 10) + b"\0" * 10,             # too short to be valid
            struct.pack(">BBL", 4, 0, 100) + b"\0" * 100,           # P-DATA before association
            struct.pack(">BBL", 0x09, 0, 4) + b"\0" * 4,            # unknown PDU type
            valid[:20],                                             # truncated, then FIN
            valid[:6] + b"\xff" * (len(valid) - 6),                 # garbage items
            struct.pack(">BBL", 1, 0, len(valid) - 6) + valid[6:10] + b"\0" * 100,
        ]
        for i, case in enumerate(cases):
            send_raw(port, case)
            if i % 3 == 2:
                assert echo_time(server) < 2
        # After association: a P-DATA declaring 4 GB is refused without reading it.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(valid)
            reply = s.recv(6)
            assert reply[0] == 0x02, "association should be accepted"
            (length,) = struct.unpack(">L", reply[2:6])
            got = 0
            while got < length:
                got += len(s.recv(length - got))
            s.sendall(struct.pack(">BBL", 4, 0, 0xFFFFFFF0) + b"\0" * 1024)
            answer = b""
            try:
                while chunk := s.recv(4096):
                    answer += chunk
            except OSError:
                pass
            assert answer[:1] == b"\x07", "expected an A-ABORT"
        assert echo_time(server) < 2
        grown_mb = (rss_kb(server.proc.pid) - before) / 1024
        assert grown_mb < 32, f"RSS grew by {grown_mb:.0f} MB"
        log = server.log()
        assert "Traceback" not in log

    def test_idle_connections_do_not_block_a_real_echo(self, server: ServerProcess) -> None:
        idle = []
        try:
            for _ in range(200):
                idle.append(socket.create_connection(("127.0.0.1", server.dicom_port)))
            time.sleep(0.5)
            assert echo_time(server) < 2
        finally:
            for s in idle:
                s.close()

    def test_idle_connections_closed_by_artim(self, make_server) -> None:  # type: ignore[no-untyped-def]
        srv = make_server(env={"ARCHIVIST_ARTIM_TIMEOUT": "1"})
        s = socket.create_connection(("127.0.0.1", srv.dicom_port))
        s.settimeout(5)
        t0 = time.monotonic()
        assert s.recv(10) == b""
        assert time.monotonic() - t0 < 4
        s.close()

    def test_allow_list(self, make_server) -> None:  # type: ignore[no-untyped-def]
        srv = make_server("--allow", "GOODAE@127.0.0.1")
        assert echo_time(srv, "GOODAE") < 2
        # Permanent, by the service user, calling AE title not recognized.
        assert rejection(srv.dicom_port, calling="BADAE") == (1, 1, 3)


def send_instances(port: int, files: list[Path], acked: list[tuple[str, str]],
                   lock: threading.Lock, *, dimse_timeout: float = 30) -> None:
    """C-STORE `files` over one association, adding each acknowledged one to `acked`.

    `dimse_timeout` is how long a C-STORE waits for its answer: when the server dies,
    pynetdicom's requestor does not notice while it waits, and waits that long.
    """
    ae = AE(ae_title="LOADER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30  # slow CI: not a test of speed
    ae.dimse_timeout = dimse_timeout
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    except Exception:  # noqa: BLE001 - a refused or cut association ends this client
        return
    if not assoc.is_established:
        return
    try:
        for f in files:
            try:
                rsp = assoc.send_c_store(f)
            except Exception:  # noqa: BLE001 - a refused or cut association ends this client
                return
            if "Status" in rsp and rsp.Status == 0:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
                with lock:
                    acked.append((str(ds.SOPInstanceUID),
                                  hashlib.sha256(f.read_bytes()).hexdigest()))
            elif not assoc.is_established:
                return
    finally:
        if assoc.is_established:
            assoc.release()


def make_files(tmp: Path, n: int, *, size: int = 64) -> list[Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        p = tmp / f"{i:05d}.dcm"
        make_instance(p, study_uid=study, series_uid=series, instance_number=i, rows=size,
                      columns=size)
        out.append(p)
    return out


def index_state(data: Path) -> tuple[dict[str, tuple[str, str]], dict[str, int]]:
    con = sqlite3.connect(data / "index.sqlite")
    try:
        rows = {uid: (key, sha) for uid, key, sha in
                con.execute("SELECT sop_instance_uid, storage_key, sha256 FROM instance")}
        agg = {
            "study_instances": con.execute(
                "SELECT COALESCE(SUM(number_of_study_related_instances),0) FROM study").fetchone()[0],
            "series_instances": con.execute(
                "SELECT COALESCE(SUM(number_of_series_related_instances),0) FROM series").fetchone()[0],
        }
        return rows, agg
    finally:
        con.close()


def blob_keys(data: Path) -> set[str]:
    return {p.name for p in (data / "blobs").glob("*/*/*") if p.is_file()}


class TestConcurrencyAndCrashes:
    def test_sixteen_associations_exact_counts(self, server: ServerProcess,
                                               tmp_path: Path) -> None:
        _config.STORE_SEND_CHUNKED_DATASET = False
        groups = [make_files(tmp_path / f"g{i}", 10, size=16) for i in range(16)]
        acked: list[tuple[str, str]] = []
        lock = threading.Lock()
        threads = [threading.Thread(target=send_instances,
                                    args=(server.dicom_port, g, acked, lock)) for g in groups]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        # pynetdicom's requestor now and then hands a C-STORE-RSP to its own reactor instead
        # of the waiting send_c_store ("Received unexpected C-STORE service message"), which
        # then sees no answer: what was not acknowledged is sent again (a duplicate is kept).
        done = {uid for uid, _ in acked}
        missing = [f for g in groups for f in g
                   if str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) not in done]
        assert len(missing) <= 8, f"{len(missing)} of 160 not acknowledged"
        if missing:
            send_instances(server.dicom_port, missing, acked, lock)
        assert len({uid for uid, _ in acked}) == 160
        rows, agg = index_state(server.data_dir)
        assert len(rows) == 160
        assert agg == {"study_instances": 160, "series_instances": 160}
        assert blob_keys(server.data_dir) == {k for k, _ in rows.values()}

    def test_restart_keeps_everything(self, make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
        srv = make_server()
        files = make_files(tmp_path / "r", 5, size=16)
        acked: list[tuple[str, str]] = []
        send_instances(srv.dicom_port, files, acked, threading.Lock())
        assert srv.stop() == 0
        srv2 = make_server(data=srv.data_dir)
        rows, _ = index_state(srv2.data_dir)
        assert {u for u, _ in acked} == set(rows)
        assert echo_time(srv2) < 2

    def test_kill_during_ingest_loses_nothing_acknowledged(self, make_server,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
        srv = make_server()
        groups = [make_files(tmp_path / f"k{i}", 40, size=64) for i in range(4)]
        acked: list[tuple[str, str]] = []
        lock = threading.Lock()
        # A sender waiting for an answer when the server is killed waits its whole DIMSE
        # timeout (pynetdicom does not wake it): 5 s, not 30. One that timed out before the kill
        # (a very loaded machine) only stops sending; what it had acknowledged is checked.
        threads = [threading.Thread(target=send_instances, args=(srv.dicom_port, g, acked, lock),
                                    kwargs={"dimse_timeout": 5}) for g in groups]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        srv.kill()
        for t in threads:
            t.join(60)
        assert 0 < len(acked) < 160, len(acked)
        srv2 = make_server(data=srv.data_dir)
        rows, agg = index_state(srv2.data_dir)
        for uid, sha in acked:
            # The stored blob is our File Meta + the data set as sent: compare the digests the
            # index recorded with the bytes on disk, and the data set with what was sent.
            assert uid in rows, f"acknowledged instance {uid} lost"
            key, stored_sha = rows[uid]
            blob = srv2.data_dir / "blobs" / key[:2] / key[2:4] / key
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == stored_sha
        del sha
        assert blob_keys(srv2.data_dir) == {k for k, _ in rows.values()}, "orphan blobs"
        assert agg["study_instances"] == len(rows) == agg["series_instances"]
        assert not list((srv2.data_dir / "tmp").glob("*"))


@pytest.mark.timeout(300)
class TestLargeObject:
    def test_500_mb_instance_streams_to_disk(self, server: ServerProcess, tmp_path: Path) -> None:
        assert server.proc is not None
        path = tmp_path / "big.dcm"
        # 500 frames of 512x512 16-bit: 262 MB... doubled to reach about 500 MB.
        import numpy as np
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian
        from pydicom.uid import MultiFrameGrayscaleWordSecondaryCaptureImageStorage as SC

        frames = 1000
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SC
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = SC, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.PatientName, ds.PatientID, ds.Modality = "BIG^OBJECT", "BIG", "OT"
        ds.Rows = ds.Columns = 512
        ds.NumberOfFrames = frames
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = b""
        ds.save_as(path, enforce_file_format=True)
        # Append the pixel data directly so the test itself stays small in memory.
        raw = path.read_bytes()
        assert raw.endswith(b"\xe0\x7f\x10\x00OW\x00\x00\x00\x00\x00\x00")
        nbytes = 512 * 512 * 2 * frames
        with open(path, "wb") as fh:
            fh.write(raw[:-4] + struct.pack("<L", nbytes))
            chunk = np.zeros(512 * 512, dtype=np.uint16).tobytes()
            fh.writelines(chunk for _ in range(frames))
        before = rss_kb(server.proc.pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], rss_kb(server.proc.pid))  # type: ignore[union-attr]
                except (OSError, AssertionError):
                    pass
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            ae = AE(ae_title="BIGSCU")
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
            ae.add_requested_context(SC, ["1.2.840.10008.1.2.1"])
            assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=AET)
            rsp = assoc.send_c_store(path)
            assoc.release()
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = False
            done.set()
            sampler.join()
        assert rsp.Status == 0
        growth_mb = (peak[0] - before) / 1024
        assert growth_mb < 200, f"peak RSS grew by {growth_mb:.0f} MB"
        rows, _ = index_state(server.data_dir)
        assert len(rows) == 1
