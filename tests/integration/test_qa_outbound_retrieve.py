"""The archive as the sending side of C-GET and C-MOVE, against real peers (QA "outbound").

- DCMTK ``getscu +xd`` proposes, for each Storage SOP Class, one context listing Deflated
  Explicit VR Little Endian first; the archive accepts the first syntax it knows, so every
  sub-operation has to go out deflated. They all failed ("no accepted context"): the re-encoding
  choice knew the uncompressed and the encodable compressed syntaxes, not deflate. Every object
  now arrives, deflated, with its pixels unchanged.
- A C-MOVE's final response waited for the destination's A-RELEASE-RP: a destination that never
  answers the release held it back for ``acse_timeout`` (30 s), past the 30 s DIMSE timeout of
  pynetdicom's SCU, although every object had been stored. The final response now goes out once
  the last sub-operation is answered; the sub-association is released meanwhile.
- A C-CANCEL of a C-MOVE whose destination accepts the connection but does not answer the
  A-ASSOCIATE-RQ was ignored until ``acse_timeout`` (30 s), then answered 0xA702 instead of Cancel
  (PS3.4 C.4.2.3.1); it is now answered 0xFE00 at once.
- A C-MOVE whose destination refuses some objects (a pynetdicom storage SCP answering 0xA700)
  left nothing in the log but "C-MOVE from A to B: N instances": which objects were refused, with
  which status, and how the move ended are now logged, as is a canceled move.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.net import wait_listening
from archivist.testing.server import ServerProcess, free_port
from conftest import dcmtk_tool

pytestmark = pytest.mark.timeout(240)

AET = "ARCHIVIST"
DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}
DEFLATED = "1.2.840.10008.1.2.1.99"

# A storage SCP (pynetdicom) that answers every second C-STORE with 0xA700 (Out of Resources).
REFUSING_SCP = """
import sys
from pynetdicom import AE, evt, AllStoragePresentationContexts
ae = AE(ae_title="QAREFUSE")
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
seen = []
def on_store(event):
    seen.append(event.request.AffectedSOPInstanceUID)
    return 0xA700 if len(seen) % 2 == 0 else 0x0000
print("ready", flush=True)
ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[(evt.EVT_C_STORE, on_store)])
"""

# A storage SCP (pynetdicom) that accepts everything and never answers an A-RELEASE-RQ.
SILENT_RELEASE_SCP = """
import sys, time
from pynetdicom import AE, evt, AllStoragePresentationContexts, acse
send_release = acse.ACSE.send_release
def held(self, is_response=False):
    if is_response:
        time.sleep(120)
    return send_release(self, is_response)
acse.ACSE.send_release = held
ae = AE(ae_title="QASILENT")
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
print("ready", flush=True)
ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[(evt.EVT_C_STORE, lambda e: 0)])
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    """One study of four CT images with distinct 16-bit pixels, stored with storescu."""
    root = tmp_path_factory.mktemp("qaout")
    dest_port, silent_port, mute_port = free_port(), free_port(), free_port()
    srv = ServerProcess(root / "data", extra_args=["--peer", f"QAREFUSE=127.0.0.1:{dest_port}",
                                                   "--peer", f"QASILENT=127.0.0.1:{silent_port}",
                                                   "--peer", f"QAMUTE=127.0.0.1:{mute_port}"])
    srv.start()
    study, series = new_uid(), new_uid()
    files, pixels = [], {}
    rng = np.random.default_rng(11)
    for i in range(4):
        path = root / f"{i}.dcm"
        ds = make_instance(path, study_uid=study, series_uid=series, patient_id="QAOUT",
                           instance_number=i + 1, rows=16, columns=12, modality="CT")
        arr = rng.integers(0, 4000, (16, 12)).astype(np.uint16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelData = arr.tobytes()
        ds.save_as(path, enforce_file_format=True)
        pixels[str(ds.SOPInstanceUID)] = arr
        files.append(str(path))
    r = subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1", str(srv.dicom_port),
                        *files], check=False, capture_output=True, text=True, timeout=120,
                       env=DCMTK_ENV)
    assert r.returncode == 0, r.stderr
    yield srv, {"study": study, "pixels": pixels, "dest_port": dest_port,
                "silent_port": silent_port, "mute_port": mute_port, "root": root}
    srv.stop()


def test_getscu_preferring_deflate_receives_every_object(archive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv, data = archive
    out = tmp_path / "got"
    out.mkdir()
    r = subprocess.run([dcmtk_tool("getscu"), "-v", "-S", "+xd", "-aec", AET, "-od", str(out),
                        "-k", "QueryRetrieveLevel=STUDY", "-k",
                        f"StudyInstanceUID={data['study']}", "127.0.0.1", str(srv.dicom_port)],
                       check=False, capture_output=True, text=True, timeout=120, env=DCMTK_ENV)
    text = r.stdout + r.stderr
    assert "Number of Failed Suboperations    : 0" in text, text
    received = {}
    for path in out.iterdir():
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == DEFLATED
        received[str(ds.SOPInstanceUID)] = ds.pixel_array
    assert received.keys() == data["pixels"].keys()
    for uid, arr in data["pixels"].items():
        assert np.array_equal(received[uid], arr), uid


def _move_to(srv: ServerProcess, script: str, port: int, destination: str, study: str
             ) -> tuple[list[tuple[Dataset, Dataset | None]], float]:
    """Run `script` (a storage SCP on `port`), C-MOVE `study` to it with pynetdicom:
    (responses, seconds until the final one)."""
    scp = subprocess.Popen([sys.executable, "-c", script, str(port)], stdout=subprocess.PIPE,
                           text=True, env={**os.environ})
    try:
        assert scp.stdout is not None and scp.stdout.readline().strip() == "ready"
        wait_listening(port, scp, what="the storage SCP")  # "ready" comes before it binds
        ae = AE(ae_title="QAMOVER")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
        assert assoc.is_established
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = study
        started = time.monotonic()
        try:
            responses = list(assoc.send_c_move(ident, destination,
                                               StudyRootQueryRetrieveInformationModelMove))
            seconds = time.monotonic() - started
        finally:
            assoc.release()
    finally:
        scp.kill()
        scp.wait(10)
    return responses, seconds


def test_final_move_response_does_not_wait_for_the_destination_release(archive) -> None:  # type: ignore[no-untyped-def]
    srv, data = archive
    responses, seconds = _move_to(srv, SILENT_RELEASE_SCP, data["silent_port"], "QASILENT",
                                  data["study"])
    final = responses[-1][0]
    assert (final.Status, final.NumberOfCompletedSuboperations) == (0, 4)
    # Held for the release it would come after acse_timeout (30 s); 20 s leaves a loaded
    # machine room without letting that through.
    assert seconds < 20, f"final C-MOVE response after {seconds:.1f} s"


def test_cancel_while_the_destination_does_not_answer_the_association(archive) -> None:  # type: ignore[no-untyped-def]
    srv, data = archive
    # A destination that accepts TCP connections and never says a word.
    listener = socket.create_server(("127.0.0.1", data["mute_port"]))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    try:
        ae = AE(ae_title="QACANCEL")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
        assert assoc.is_established
        context_id = assoc.accepted_contexts[0].context_id
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = data["study"]
        threading.Timer(1.0, lambda: assoc.send_c_cancel(9, context_id)).start()
        started = time.monotonic()
        try:
            final = list(assoc.send_c_move(ident, "QAMUTE",
                                           StudyRootQueryRetrieveInformationModelMove,
                                           msg_id=9))[-1][0]
            seconds = time.monotonic() - started
        finally:
            assoc.release()
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert final.Status == 0xFE00
    assert (final.NumberOfRemainingSuboperations, final.NumberOfCompletedSuboperations) == (4, 0)
    assert seconds < 20, f"Cancel answered after {seconds:.1f} s"  # ignored: 30 s and more


def test_move_to_a_refusing_destination_is_logged(archive) -> None:  # type: ignore[no-untyped-def]
    srv, data = archive
    responses, _ = _move_to(srv, REFUSING_SCP, data["dest_port"], "QAREFUSE", data["study"])
    final, failed_list = responses[-1]
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 2)
    refused = failed_list.FailedSOPInstanceUIDList
    assert len(refused) == 2
    deadline = time.monotonic() + 30
    while "C-MOVE from QAMOVER to QAREFUSE ended" not in srv.log() and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    log = srv.log()
    for uid in refused:
        assert f"C-MOVE to QAREFUSE: C-STORE of {uid} answered 0xA700 (failure)" in log, log
    assert ("C-MOVE from QAMOVER to QAREFUSE ended 0xB000: 2 completed, 2 failed, 0 warning, "
            "0 not performed") in log, log
