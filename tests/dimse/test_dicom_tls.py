"""DICOM over TLS (``dicom_tls_*``) on a real ``archivist serve``, with DCMTK's tools speaking
TLS (``+tls``): mutual authentication with a CA made by openssl, plain TCP and foreign
certificates refused, and a C-MOVE to a peer that speaks TLS only."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess, free_port

TOOLS = ("/usr/bin/echoscu", "/usr/bin/storescu", "/usr/bin/storescp")
pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or not all(os.path.exists(t) for t in TOOLS),
    reason="openssl and DCMTK needed")
ENV = {**os.environ, "TCP_NODELAY": "1"}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed(folder: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, crt = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
             str(key), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
             "-CAcreateserial", "-days", "2", "-out", str(crt))
    return key, crt


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = (folder / "ca.key", folder / "ca.crt")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=Test CA", "-keyout", str(ca[0]), "-out", str(ca[1]))
    out = {"ca": ca[1]}
    for name in ("archive", "modality", "peer"):
        out[f"{name}.key"], out[f"{name}.crt"] = _signed(folder, name, ca)
    out["stranger.key"], out["stranger.crt"] = folder / "s.key", folder / "s.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=stranger", "-keyout", str(out["stranger.key"]), "-out",
             str(out["stranger.crt"]))
    return out


@pytest.fixture(scope="module")
def server(pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ServerProcess, int, Path]]:
    tmp = tmp_path_factory.mktemp("tls")
    peer_port = free_port()
    received = tmp / "received"
    received.mkdir()
    peer = subprocess.Popen(
        ["/usr/bin/storescp", "+tls", str(pki["peer.key"]), str(pki["peer.crt"]), "+cf",
         str(pki["ca"]), "-aet", "TLSPEER", "-od", str(received), str(peer_port)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = ServerProcess(tmp / "data", env={
        "ARCHIVIST_DICOM_TLS_CERT": str(pki["archive.crt"]),
        "ARCHIVIST_DICOM_TLS_KEY": str(pki["archive.key"]),
        "ARCHIVIST_DICOM_TLS_CA": str(pki["ca"]),
        "ARCHIVIST_PEERS": f"TLSPEER=127.0.0.1:{peer_port}",
        "ARCHIVIST_DICOM_TLS_PEERS": "TLSPEER"})
    srv.start()
    yield srv, peer_port, received
    srv.stop()
    peer.terminate()


def _tls(pki: dict[str, Path], who: str = "modality") -> list[str]:
    return ["+tls", str(pki[f"{who}.key"]), str(pki[f"{who}.crt"]), "+cf", str(pki["ca"])]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), env=ENV, capture_output=True, text=True, timeout=60,
                          check=False)


def test_echo_and_store_over_tls(server, pki: dict[str, Path], tmp_path: Path) -> None:
    srv, _, _ = server
    port = str(srv.dicom_port)
    assert _run("/usr/bin/echoscu", *_tls(pki), "-aec", "ARCHIVIST", "127.0.0.1",
                port).returncode == 0
    make_instance(tmp_path / "a.dcm", study_uid=new_uid())
    done = _run("/usr/bin/storescu", *_tls(pki), "-aec", "ARCHIVIST", "127.0.0.1", port,
                str(tmp_path / "a.dcm"))
    assert done.returncode == 0, done.stdout + done.stderr
    with urllib.request.urlopen(f"{srv.url}/api/stats", timeout=20) as resp:
        assert json.loads(resp.read())["counts"]["instance"] >= 1


def test_plain_tcp_and_foreign_certificates_are_refused(server, pki: dict[str, Path]) -> None:
    srv, _, _ = server
    port = str(srv.dicom_port)
    assert _run("/usr/bin/echoscu", "-to", "5", "-ta", "5", "-aec", "ARCHIVIST", "127.0.0.1",
                port).returncode != 0
    assert _run("/usr/bin/echoscu", *_tls(pki, "stranger"), "-aec", "ARCHIVIST",
                "127.0.0.1", port).returncode != 0
    # ... and the archive still serves a proper caller.
    assert _run("/usr/bin/echoscu", *_tls(pki), "-aec", "ARCHIVIST", "127.0.0.1",
                port).returncode == 0


def test_c_move_to_a_tls_peer(server, pki: dict[str, Path], tmp_path: Path) -> None:
    srv, _, received = server
    study = new_uid()
    for n in range(2):
        make_instance(tmp_path / f"{n}.dcm", study_uid=study, instance_number=n + 1)
    assert _run("/usr/bin/storescu", *_tls(pki), "-aec", "ARCHIVIST", "127.0.0.1",
                str(srv.dicom_port), str(tmp_path / "0.dcm"),
                str(tmp_path / "1.dcm")).returncode == 0
    # Debian's movescu has no TLS: pynetdicom's requestor over TLS asks for the move.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(str(pki["ca"]))
    context.load_cert_chain(str(pki["modality.crt"]), str(pki["modality.key"]))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST",
                         tls_args=(context, None))
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    try:
        statuses = [int(status.Status) for status, _ in assoc.send_c_move(
            identifier, "TLSPEER", StudyRootQueryRetrieveInformationModelMove) if status]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    deadline = time.monotonic() + 10
    while len(list(received.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(list(received.iterdir())) == 2
