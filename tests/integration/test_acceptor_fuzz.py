"""Fuzzing the DIMSE acceptor with malformed PDUs: no crash, no hang, nothing stored is lost.

Over 500 cases from a fixed seed: truncated headers, wrong lengths, wrong PDU types, P-DATA
before association, fragments out of order, PDVs on unknown contexts, bad item lengths, garbage
command sets, and random mutations of valid A-ASSOCIATE-RQ and P-DATA-TF PDUs. Each case runs
on its own connection; the server must close it within a few seconds of the client's FIN.
"""

from __future__ import annotations

import hashlib
import random
import socket
import sqlite3
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage, Verification

from archivist.testing.datasets import make_instance
from archivist.testing.procs import rss_kb  # the server's whole process tree
from archivist.testing.rawpdu import associate_rq, recv_pdu
from archivist.testing.server import ServerProcess

AET = "ARCHIVIST"
VERIFICATION = "1.2.840.10008.1.1"
SEED = 20261124
CASES = 520
ENGINE = {"ARCHIVIST_DIMSE_ENGINE": "asyncio"}


def echo_command(message_id: int = 1, field: int = 0x0030, with_data: bool = False) -> bytes:
    cs = Dataset()
    cs.CommandGroupLength = 0
    cs.AffectedSOPClassUID = VERIFICATION
    cs.CommandField = field
    cs.MessageID = message_id
    cs.CommandDataSetType = 0x0001 if with_data else 0x0101
    cs.CommandGroupLength = len(encode(cs, True, True)) - 12
    return bytes(encode(cs, True, True))


def pdv(data: bytes, control: int = 0x03, context: int = 1, length: int | None = None) -> bytes:
    return struct.pack(">LBB", len(data) + 2 if length is None else length, context,
                       control) + data


def pdu(kind: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBL", kind, 0, len(body) if length is None else length) + body


def p_data(*items: bytes, length: int | None = None) -> bytes:
    return pdu(4, b"".join(items), length)


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        pos = rng.randrange(len(buf)) if buf else 0
        if op == 0 and buf:
            buf[pos] = rng.randrange(256)
        elif op == 1 and buf:
            del buf[pos:pos + rng.randint(1, 16)]
        elif op == 2:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif buf:
            buf[pos] ^= 1 << rng.randrange(8)
    return bytes(buf)


def build_cases(rng: random.Random) -> list[tuple[str, bool, bytes]]:
    """(kind, associate first, bytes) triples."""
    rq = associate_rq(calling="FUZZER")
    echo = echo_command()
    cases: list[tuple[str, bool, bytes]] = []
    for n in range(1, 6):
        cases.append(("truncated header", False, rq[:n]))
        cases.append(("truncated header after association", True, p_data(pdv(echo))[:n]))
    for length in (0, 1, 10, 67, len(rq) - 6 + 1000, 0x10000 + 1, 0xFFFFFFFF):
        cases.append(("A-ASSOCIATE-RQ wrong length", False, pdu(1, rq[6:], length)))
    for kind in [0x00, *range(0x08, 0x100, 7)]:
        cases.append(("unknown PDU type", False, pdu(kind, b"\0" * 16)))
        cases.append(("unknown PDU type after association", True, pdu(kind, b"\0" * 16)))
    for kind in (0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
        cases.append(("PDU before association", False, pdu(kind, b"\0" * 4)))
    for kind in (0x01, 0x02, 0x03, 0x06):
        cases.append(("unexpected PDU after association", True, pdu(kind, rq[6:])))
    cases += [
        ("P-DATA before association", False, p_data(pdv(echo))),
        ("data before command", True, p_data(pdv(b"\0" * 32, control=0x02))),
        ("command after complete command", True, p_data(pdv(echo), pdv(echo[:8], control=0x01))),
        ("data set on another context", True,
         p_data(pdv(echo_command(with_data=True))) + p_data(pdv(b"\0" * 8, 0x02, context=3))),
        ("second command before the data set", True,
         p_data(pdv(echo_command(with_data=True))) + p_data(pdv(echo))),
        ("PDV on unknown context", True, p_data(pdv(echo, context=5))),
        ("PDV item length 0", True, p_data(pdv(echo, length=0))),
        ("PDV item length 1", True, p_data(pdv(echo, length=1))),
        ("PDV longer than the PDU", True, p_data(pdv(echo, length=len(echo) + 100))),
        ("P-DATA length over the maximum", True, p_data(pdv(echo), length=0xFFFFFFF0)),
        ("empty P-DATA", True, p_data()),
        ("A-RELEASE-RQ of wrong length", True, pdu(5, b"\0" * 8)),
        ("unknown command field", True, p_data(pdv(echo_command(field=0x0999)))),
        ("command set of garbage", True, p_data(pdv(bytes(range(256)) * 4))),
    ]
    base_pdata = p_data(pdv(echo))
    while len(cases) < CASES:
        r = rng.random()
        if r < 0.35:
            cases.append(("mutated A-ASSOCIATE-RQ", False, mutate(rng, rq)))
        elif r < 0.7:
            cases.append(("mutated P-DATA", True, mutate(rng, base_pdata)))
        elif r < 0.85:
            body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
            cases.append(("random command set", True, p_data(pdv(body))))
        else:
            cut = rng.randint(1, len(base_pdata) - 1)
            cases.append(("fragment split then FIN", True, base_pdata[:cut]))
    return cases


def run_case(port: int, associate: bool, data: bytes) -> tuple[bool, float]:
    """Send one case; True when the server closed the connection (not the client timing out)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        try:
            if associate:
                s.sendall(associate_rq(calling="FUZZER"))
                kind, _ = recv_pdu(s)
                if kind != 0x02:
                    return True, time.monotonic() - t0
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        except TimeoutError:
            return False, time.monotonic() - t0
    return True, time.monotonic() - t0


def echo_ok(port: int) -> bool:
    ae = AE(ae_title="ECHOER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status and status.Status == 0)


@pytest.mark.timeout(300)
def test_five_hundred_malformed_pdus(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv: ServerProcess = make_server(env={"ARCHIVIST_ARTIM_TIMEOUT": "3", **ENGINE})
    assert srv.proc is not None
    # Objects stored before the fuzzing must come out of it intact.
    ae = AE(ae_title="LOADER")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
    assert assoc.is_established
    study, series = generate_uid(), generate_uid()
    digests = {}
    for i in range(10):
        path = tmp_path / f"{i}.dcm"
        ds = make_instance(path, study_uid=study, series_uid=series, instance_number=i)
        assert assoc.send_c_store(path).Status == 0
        digests[str(ds.SOPInstanceUID)] = None
    assoc.release()
    before = rss_kb(srv.proc.pid)

    cases = build_cases(random.Random(SEED))
    assert len(cases) >= 500
    kinds = {k for k, _, _ in cases}
    assert len(kinds) >= 20
    port = srv.dicom_port
    hung: list[str] = []
    with ThreadPoolExecutor(8) as pool:
        for start in range(0, len(cases), 64):
            chunk = cases[start:start + 64]
            results = list(pool.map(lambda c: run_case(port, c[1], c[2]), chunk))
            for (kind, _, _), (closed, seconds) in zip(chunk, results):
                if not closed or seconds > 6:
                    hung.append(f"{kind} ({seconds:.1f} s)")
            assert srv.proc.poll() is None, "the server died"
            assert echo_ok(port), f"no C-ECHO after case {start + len(chunk)}"
    assert not hung, hung[:10]

    grown_mb = (rss_kb(srv.proc.pid) - before) / 1024
    assert grown_mb < 64, f"RSS grew by {grown_mb:.0f} MB"
    log = srv.log()
    assert "Traceback" not in log
    con = sqlite3.connect(srv.data_dir / "index.sqlite")
    try:
        rows = dict(con.execute("SELECT sop_instance_uid, storage_key FROM instance"))
        shas = dict(con.execute("SELECT sop_instance_uid, sha256 FROM instance"))
    finally:
        con.close()
    assert set(rows) == set(digests)
    for uid, key in rows.items():
        blob = srv.data_dir / "blobs" / key[:2] / key[2:4] / key
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == shas[uid]
    assert not list((srv.data_dir / "tmp").glob("*")), "temporary files left behind"
