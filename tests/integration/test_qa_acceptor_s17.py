"""QA round 17 against the event-driven DIMSE acceptor (issue 11's promises), black-box: a real
``archivist serve`` driven by raw sockets, pynetdicom and DCMTK.

Findings (each test named below failed before its fix):

- A requestor that stops reading the pending responses of a C-FIND (or C-MOVE) held its
  association, and the index cursor of the query, for ever: while an operation runs the
  association's timer took the operation for activity, and the write waited for the socket to
  drain without a limit. The server now aborts an association none of whose bytes the peer
  takes for ``dimse_timeout`` (:func:`test_find_requestor_that_stops_reading_is_aborted`).
- A C-STORE whose data set is larger than ``max_object_size`` aborted the association (as a
  protocol error, A-ABORT "invalid PDU parameter"), so the objects the modality had queued after
  it on that association were never sent. It is now read to its end and discarded, answered
  0xA700 (Refused: Out of Resources, PS3.4 B.2.3) with an Error Comment, and the association
  goes on (:func:`test_store_over_the_maximum_object_size_is_refused_with_a_status`).
- A C-GET sub-operation whose object takes longer to go out than ``dimse_timeout`` (a large
  object, a slow link) had its association aborted while the requestor was reading it: the
  association's timer counted the wait for the C-STORE-RSP from the requestor's last PDU. A
  write in progress now counts as activity (one the peer takes nothing of is aborted, above);
  the wait for the response starts when the request has gone
  (:func:`test_c_get_to_a_slow_reader_is_not_cut_while_it_reads`).
- A request sent past the window of 1 that waited for room in the queue when the association
  ended (the peer reset, or was aborted as not reading) was in no place the cleanup looks: a
  C-STORE's temporary file stayed in ``<data>/tmp`` for the life of the process
  (:func:`test_c_store_waiting_behind_a_stalled_c_find_leaves_no_temporary_file`).
- A requestor resetting the connection while a C-FIND's responses were being produced put an
  ERROR with a traceback in the log ("DIMSE request failed", then "aborting association:
  internal error"): uvloop refuses a write on the closed transport with a RuntimeError. It is
  now the lost connection it is (:func:`test_requestor_resetting_during_a_c_find`).
- An A-ASSOCIATE-RQ whose Protocol Version lacks bit 0 was accepted; PS3.8 9.3.2 has the
  receiver test that bit and reject it as protocol-version-not-supported (A-ASSOCIATE-RJ 1/2/2)
  (:func:`test_protocol_version`).

Checked and found as promised (tests below so they stay so): PDV fragmentation (command sets
over several PDVs in one PDU and over one-byte PDUs, data sets in 100-byte PDVs, DCMTK with
its smallest Maximum Length), a data set before its command, interleaved C-STOREs, pipelined
requests beyond the window of 1, a peer that resets, aborts, closes or asks to release in the
middle of a C-STORE (nothing stored, nothing left in the temporary directory), an A-RELEASE-RQ
while a C-FIND streams, C-CANCEL and A-ABORT in the middle of a C-MOVE's sub-operations, an
A-ASSOCIATE-RQ trickled a byte at a time (closed by ARTIM) and an idle association (aborted
after the network timeout) on two worker processes.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.dsutils import encode

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.rawpdu import (
    command,
    message_from,
    proposal,
    read_message,
    read_pdu,
)
from archivist.testing.server import ServerProcess, free_port
from conftest import dcmtk_tool

pytestmark = pytest.mark.timeout(120)

AET = "ARCHIVIST"
VERIFICATION = "1.2.840.10008.1.1"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
MWL_FIND = "1.2.840.10008.5.1.4.31"
EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
HEADER = struct.Struct(">BBL")
DIMSE_TIMEOUT = 3
MAX_OBJECT_SIZE = 3_000_000
#: The worklist entry has this many scheduled steps, each answered with a 10 KB comment:
#: ~12 MB of C-FIND responses, more than loopback socket buffers hold.
WORKLIST_STEPS = 1200
#: Where the module's server sends C-MOVE sub-operations (a test listens there when it needs to).
DEST_PORT = free_port()


# -- a hand-built DICOM UL client ---------------------------------------------------------------

#: An A-ASSOCIATE-RQ PDU (contexts get IDs 1, 3, 5...).
associate_rq = functools.partial(proposal, called=AET, calling="QA17")






def associate(port: int, contexts: list[tuple[str, list[str]]], *,
              sock: socket.socket | None = None, **kw: Any) -> socket.socket:
    s = sock or socket.socket()
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    s.sendall(associate_rq(contexts, **kw))
    kind, body = read_pdu(s)
    assert kind == 0x02, f"association not accepted: {kind} {body[:4].hex()}"
    return s




def pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">LBB", len(data) + 2, context_id, control) + data


def p_data(*items: bytes) -> bytes:
    body = b"".join(items)
    return HEADER.pack(0x04, 0, len(body)) + body


def message(context_id: int, cmd: bytes, data: bytes | None = None) -> bytes:
    """A message as P-DATA-TF PDUs: the command, then the data set, each one PDV."""
    out = p_data(pdv(context_id, 0x03, cmd))
    if data is not None:
        out += p_data(pdv(context_id, 0x02, data))
    return out




def echo(sock: socket.socket, context_id: int = 1, message_id: int = 99) -> int:
    sock.sendall(message(context_id, command({
        "AffectedSOPClassUID": VERIFICATION, "CommandField": 0x0030, "MessageID": message_id,
        "CommandDataSetType": 0x0101})))
    _, cs, _ = read_message(sock)
    return int(cs.Status)


def store_command(sop_instance: str, message_id: int = 1) -> bytes:
    return command({"AffectedSOPClassUID": SC_CLASS, "CommandField": 0x0001, "MessageID": message_id,
                    "Priority": 0, "CommandDataSetType": 0x0000,
                    "AffectedSOPInstanceUID": sop_instance})


class SC:
    """A new Secondary Capture object in a study of its own (Explicit VR Little Endian)."""

    def __init__(self, tmp: Path, *, rows: int = 16, frames: int = 1) -> None:
        self.study, uid = new_uid(), new_uid()
        #: The Part 10 file
        self.path = path = tmp / f"{uid}.dcm"
        ds = make_instance(path, study_uid=self.study, sop_uid=uid, sop_class_uid=SC_CLASS,
                           modality="OT", rows=rows, columns=rows, frames=frames)
        self.series, self.uid = str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        raw = path.read_bytes()
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == EXPLICIT
        #: The data set as a C-STORE carries it (no File Meta)
        self.data = raw[132 + 12 + int(meta.FileMetaInformationGroupLength):]

    def stored(self, srv: ServerProcess) -> bytes | None:
        """The object as the archive keeps it (Part 10, WADO-URI as stored), or None."""
        r = requests.get(f"{srv.url}/wado", timeout=30, params={
            "requestType": "WADO", "studyUID": self.study, "seriesUID": self.series,
            "objectUID": self.uid, "contentType": "application/dicom"})
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.content


def temporary_files(srv: ServerProcess) -> list[str]:
    tmp = srv.data_dir / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def wait_for_spill(srv: ServerProcess, what: str, seconds: float = 5) -> None:
    """Until a data set being received has gone to a temporary file (`what`: else)."""
    deadline = time.monotonic() + seconds
    while not temporary_files(srv) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert temporary_files(srv), what


def wait_for_no_temporary_files(srv: ServerProcess, seconds: float = 5) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := temporary_files(srv)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def tracebacks(srv: ServerProcess) -> int:
    return srv.log().count("Traceback")


STALLED = "peer does not read"  # the server's log line when it aborts a requestor not reading


def wait_for_stall_aborts(srv: ServerProcess, count: int, seconds: float = 30) -> None:
    """Wait until the log has `count` aborts of requestors that do not read (or `seconds`)."""
    deadline = time.monotonic() + seconds
    while srv.log().count(STALLED) < count and time.monotonic() < deadline:
        time.sleep(0.2)


# -- fixtures ----------------------------------------------------------------------------------


def write_worklist(folder: Path) -> None:
    """One worklist entry with WORKLIST_STEPS scheduled steps: a C-FIND answers once per step,
    each answer with the entry's 10 KB Patient Comments when asked for them."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MWL_FIND
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName = "WORKLIST^MANY"
    ds.PatientID = "WL17"
    ds.PatientComments = "C" * 10_000
    ds.StudyInstanceUID = generate_uid()
    steps = []
    for i in range(WORKLIST_STEPS):
        step = Dataset()
        step.ScheduledStationAETitle = "QA17"
        step.Modality = "OT"
        step.ScheduledProcedureStepStartDate = "20261207"
        step.ScheduledProcedureStepID = f"SPS{i}"
        steps.append(step)
    ds.ScheduledProcedureStepSequence = Sequence(steps)
    ds.save_as(folder / "many.wl", enforce_file_format=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("qa17")
    write_worklist(base / "worklist")
    srv = ServerProcess(base / "data", extra_args=[
        "--workers", "1", "--peer", f"QADEST=127.0.0.1:{DEST_PORT}"], env={
        "ARCHIVIST_DIMSE_TIMEOUT": str(DIMSE_TIMEOUT),
        "ARCHIVIST_MAX_OBJECT_SIZE": str(MAX_OBJECT_SIZE),
        "ARCHIVIST_WORKLIST_DIR": str(base / "worklist")})
    srv.start()
    yield srv
    srv.stop()


# -- findings ----------------------------------------------------------------------------------


def worklist_query() -> bytes:
    ds = Dataset()
    ds.PatientComments = ""
    ds.PatientName = ""
    step = Dataset()
    step.ScheduledProcedureStepID = ""
    step.ScheduledStationAETitle = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return bytes(encode(ds, False, True))  # type: ignore[arg-type]


def test_find_requestor_that_stops_reading_is_aborted(server: ServerProcess) -> None:
    """A C-FIND requestor that reads the first response and then nothing more: the server's
    writes stop draining. It used to wait for ever (holding the association and the query);
    now, with nothing taken for dimse_timeout, the association is aborted and the server
    goes on serving others meanwhile."""
    stalled = server.log().count(STALLED)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock = associate(server.dicom_port, [(MWL_FIND, [EXPLICIT])], sock=sock)
    sock.sendall(message(1, command({
        "AffectedSOPClassUID": MWL_FIND, "CommandField": 0x0020, "MessageID": 1, "Priority": 0,
        "CommandDataSetType": 0x0000}), worklist_query()))
    _, cs, identifier = read_message(sock)
    assert cs.Status == 0xFF00 and len(identifier) > 10_000
    # Others are served while this requestor reads nothing.
    other = associate(server.dicom_port, [(VERIFICATION, [IMPLICIT])])
    assert echo(other) == 0
    other.close()
    # Stop reading: the responses fill the socket buffers, the server's writes stall; it must
    # give up on them dimse_timeout after that (the first response takes a second or two
    # to come: the 1,200 steps are matched first).
    wait_for_stall_aborts(server, stalled + 1)
    # Then read what comes: the end of the stream must be an A-ABORT, not the final response.
    sock.settimeout(10)
    got, tail, closed_at = 0, b"", None
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        except TimeoutError:  # the association stays open
            break
        if not chunk:
            closed_at = time.monotonic()
            break
        got += len(chunk)
        tail = (tail + chunk)[-64:]
    sock.close()
    assert got < WORKLIST_STEPS * 10_000, \
        "every response was sent: the server waited for the reader as long as it took"
    assert tail[-10:-4] == HEADER.pack(0x07, 0, 4), "no A-ABORT"
    assert closed_at is not None, "the connection stayed open"
    assert server.log().count(STALLED) == stalled + 1


def test_store_over_the_maximum_object_size_is_refused_with_a_status(
        server: ServerProcess, tmp_path: Path) -> None:
    """An object larger than max_object_size gets a C-STORE-RSP of 0xA700 with an Error
    Comment, nothing of it is kept, and the next object on the same association is stored
    (it used to be an A-ABORT: the rest of the modality's batch was never sent)."""
    big, small = SC(tmp_path, rows=512, frames=12), SC(tmp_path)  # ~3.1 MB and ~300 bytes
    assert len(big.data) > MAX_OBJECT_SIZE
    before = tracebacks(server)
    sock = associate(server.dicom_port, [(SC_CLASS, [EXPLICIT])], max_length=65536)
    # The big one in 60 KB PDVs, as a modality sends it.
    sock.sendall(p_data(pdv(1, 0x03, store_command(big.uid, 1))))
    step = 60_000
    for i in range(0, len(big.data), step):
        last = i + step >= len(big.data)
        sock.sendall(p_data(pdv(1, 0x02 if last else 0x00, big.data[i:i + step])))
    cx, cs, _ = read_message(sock)
    assert cx == 1, f"no C-STORE-RSP: PDU {-cx} {cs!r}"
    assert cs.MessageIDBeingRespondedTo == 1 and cs.Status == 0xA700, hex(cs.Status)
    assert "larger than" in str(cs.get("ErrorComment", ""))
    sock.sendall(message(1, store_command(small.uid, 2), small.data))
    _, cs, _ = read_message(sock)
    assert cs.MessageIDBeingRespondedTo == 2 and cs.Status == 0x0000
    sock.sendall(struct.pack(">BBLL", 0x05, 0, 4, 0))
    assert read_pdu(sock)[0] == 0x06
    sock.close()
    assert big.stored(server) is None
    kept = small.stored(server)
    assert kept is not None and kept.endswith(small.data)
    assert wait_for_no_temporary_files(server) == []
    assert tracebacks(server) == before


# -- checked, as promised ----------------------------------------------------------------------


def test_fragmented_pdvs_are_reassembled(server: ServerProcess, tmp_path: Path) -> None:
    """A command set in three PDVs of one PDU, a data set in 100-byte PDVs seven to a PDU; a
    command set in one-byte PDUs; command and data set in one PDU: each stored as sent."""
    a, b, c = SC(tmp_path), SC(tmp_path), SC(tmp_path)
    sock = associate(server.dicom_port, [(VERIFICATION, [IMPLICIT]), (SC_CLASS, [EXPLICIT])])
    cmd = store_command(a.uid, 1)
    sock.sendall(p_data(pdv(3, 0x01, cmd[:10]), pdv(3, 0x01, cmd[10:30]), pdv(3, 0x03, cmd[30:])))
    pieces = [a.data[i:i + 100] for i in range(0, len(a.data), 100)]
    items = [pdv(3, 0x02 if i == len(pieces) - 1 else 0x00, f) for i, f in enumerate(pieces)]
    for i in range(0, len(items), 7):
        sock.sendall(p_data(*items[i:i + 7]))
    _, cs, _ = read_message(sock)
    assert (cs.MessageIDBeingRespondedTo, cs.Status) == (1, 0)
    cmd = store_command(b.uid, 2)
    for i in range(len(cmd)):
        sock.sendall(p_data(pdv(3, 0x03 if i == len(cmd) - 1 else 0x01, cmd[i:i + 1])))
    sock.sendall(p_data(pdv(3, 0x02, b.data)))
    _, cs, _ = read_message(sock)
    assert (cs.MessageIDBeingRespondedTo, cs.Status) == (2, 0)
    sock.sendall(p_data(pdv(3, 0x03, store_command(c.uid, 3)), pdv(3, 0x02, c.data)))
    _, cs, _ = read_message(sock)
    assert (cs.MessageIDBeingRespondedTo, cs.Status) == (3, 0)
    sock.close()
    for obj in (a, b, c):
        kept = obj.stored(server)
        assert kept is not None and kept.endswith(obj.data)


def test_requests_beyond_the_window_are_answered_in_order(server: ServerProcess,
                                                          tmp_path: Path) -> None:
    """The window negotiated is 1 (PS3.7 D.3.3.3), but a requestor that sends two C-STOREs and
    a C-ECHO without waiting gets each answered, in order."""
    a, b = SC(tmp_path), SC(tmp_path)
    sock = associate(server.dicom_port, [(VERIFICATION, [IMPLICIT]), (SC_CLASS, [EXPLICIT])])
    sock.sendall(message(3, store_command(a.uid, 11), a.data)
                 + message(3, store_command(b.uid, 12), b.data)
                 + message(1, command({"AffectedSOPClassUID": VERIFICATION,
                                       "CommandField": 0x0030, "MessageID": 13,
                                       "CommandDataSetType": 0x0101})))
    answers = [read_message(sock)[1] for _ in range(3)]
    sock.close()
    assert [(int(cs.MessageIDBeingRespondedTo), int(cs.Status)) for cs in answers] == \
        [(11, 0), (12, 0), (13, 0)]


@pytest.mark.parametrize("case", ["interleaved", "data first"])
def test_messages_out_of_order_abort(server: ServerProcess, tmp_path: Path, case: str) -> None:
    """PDVs of two messages interleaved (PS3.8 E.2), or a data set before any command: A-ABORT,
    nothing stored, no traceback, and the server goes on."""
    a, b = SC(tmp_path), SC(tmp_path)
    before = tracebacks(server)
    sock = associate(server.dicom_port, [(SC_CLASS, [EXPLICIT])])
    if case == "interleaved":
        sock.sendall(p_data(pdv(1, 0x03, store_command(a.uid, 1)))
                     + p_data(pdv(1, 0x03, store_command(b.uid, 2)))
                     + p_data(pdv(1, 0x02, a.data)) + p_data(pdv(1, 0x02, b.data)))
    else:
        sock.sendall(p_data(pdv(1, 0x02, a.data)))
    kind, _, _ = read_message(sock)
    sock.close()
    assert kind == -0x07
    assert a.stored(server) is None and b.stored(server) is None
    assert wait_for_no_temporary_files(server) == []
    other = associate(server.dicom_port, [(VERIFICATION, [IMPLICIT])])
    assert echo(other) == 0
    other.close()
    assert tracebacks(server) == before


@pytest.mark.parametrize("how", ["reset", "A-ABORT", "FIN", "A-RELEASE-RQ"])
def test_peer_leaving_in_the_middle_of_a_c_store(server: ServerProcess, tmp_path: Path,
                                                 how: str) -> None:
    """Half of a 4 MB data set (already spilled to a temporary file), then the peer resets,
    aborts, closes or asks to release: nothing is stored, the temporary file goes, the server
    answers others."""
    obj = SC(tmp_path, rows=512, frames=8)
    before = tracebacks(server)
    sock = associate(server.dicom_port, [(SC_CLASS, [EXPLICIT])], max_length=65536)
    sock.sendall(p_data(pdv(1, 0x03, store_command(obj.uid))))
    for i in range(0, len(obj.data) // 2, 60_000):
        sock.sendall(p_data(pdv(1, 0x00, obj.data[i:i + 60_000])))
    wait_for_spill(server, "the data set should have spilled to a temporary file")
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif how == "A-ABORT":
        sock.sendall(struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0, 0))
    elif how == "FIN":
        sock.shutdown(socket.SHUT_WR)
    else:
        # PS3.8 leaves the half-received message to the provider: it is dropped, the
        # release answered.
        sock.sendall(struct.pack(">BBLL", 0x05, 0, 4, 0))
        assert read_pdu(sock)[0] == 0x06
    sock.close()
    assert wait_for_no_temporary_files(server) == []
    assert obj.stored(server) is None
    other = associate(server.dicom_port, [(VERIFICATION, [IMPLICIT])])
    assert echo(other) == 0
    other.close()
    assert tracebacks(server) == before


def test_release_while_a_c_find_streams(server: ServerProcess) -> None:
    """An A-RELEASE-RQ sent right after a C-FIND of 1,200 answers: every answer and the final
    response come first, then the A-RELEASE-RP (PS3.8 7.2: the provider completes what is under
    way)."""
    sock = associate(server.dicom_port, [(MWL_FIND, [EXPLICIT])])
    sock.sendall(message(1, command({
        "AffectedSOPClassUID": MWL_FIND, "CommandField": 0x0020, "MessageID": 7, "Priority": 0,
        "CommandDataSetType": 0x0000}), worklist_query()) + struct.pack(">BBLL", 5, 0, 4, 0))
    pending = 0
    while True:
        _, cs, _ = read_message(sock)
        if int(cs.Status) != 0xFF00:
            break
        pending += 1
    assert (pending, int(cs.Status)) == (WORKLIST_STEPS, 0)
    assert read_pdu(sock)[0] == 0x06
    sock.close()


def test_storescu_with_the_smallest_maximum_length(server: ServerProcess, dcmtk: None,
                                                  tmp_path: Path) -> None:
    """DCMTK's storescu sending a 2 MB object in 4 KB PDUs (--max-send-pdu 4096): stored as
    sent."""
    obj = SC(tmp_path, rows=512, frames=8)
    run = subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "--max-send-pdu", "4096",
                          "-xe", "127.0.0.1", str(server.dicom_port), str(obj.path)],
                         check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    kept = obj.stored(server)
    assert kept is not None and kept.endswith(obj.data)


def store_study(server: ServerProcess, tmp_path: Path, count: int) -> str:
    """`count` small objects in one new study, stored over one association: its UID."""
    study = new_uid()
    sock = associate(server.dicom_port, [(SC_CLASS, [EXPLICIT])])
    for i in range(count):
        path = tmp_path / f"study-{i}.dcm"
        make_instance(path, study_uid=study, sop_class_uid=SC_CLASS, modality="OT",
                      instance_number=i + 1)
        raw = path.read_bytes()
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        data = raw[132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength):]
        sock.sendall(message(1, store_command(str(ds.SOPInstanceUID), i + 1), data))
        assert read_message(sock)[1].Status == 0
    sock.close()
    return study


class SlowDestination:
    """A pynetdicom Storage SCP at DEST_PORT (AE QADEST) taking 0.3 s per C-STORE."""

    def __init__(self) -> None:
        from pynetdicom import AE, evt

        self.received: list[str] = []
        self.aborted = False
        ae = AE(ae_title="QADEST")
        ae.add_supported_context(SC_CLASS, [EXPLICIT, IMPLICIT])
        self.scp = ae.start_server(("127.0.0.1", DEST_PORT), block=False, evt_handlers=[
            (evt.EVT_C_STORE, self._on_store), (evt.EVT_ABORTED, self._on_abort)])

    def _on_store(self, event: Any) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        time.sleep(0.3)
        return 0x0000

    def _on_abort(self, event: Any) -> None:
        self.aborted = True

    def close(self) -> None:
        self.scp.shutdown()


MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def start_move(server: ServerProcess, study: str) -> socket.socket:
    """An association with a C-MOVE of `study` to QADEST sent; its first pending response
    read (one sub-operation done)."""
    sock = associate(server.dicom_port, [(MOVE, [EXPLICIT]), (VERIFICATION, [IMPLICIT])])
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    sock.sendall(message(1, command({
        "AffectedSOPClassUID": MOVE, "CommandField": 0x0021, "MessageID": 5, "Priority": 0,
        "MoveDestination": "QADEST", "CommandDataSetType": 0x0000}),
        bytes(encode(query, False, True))))  # type: ignore[arg-type]
    _, cs, _ = read_message(sock)
    assert cs.Status == 0xFF00, hex(cs.Status)
    return sock


def test_c_cancel_in_the_middle_of_a_c_move(server: ServerProcess, tmp_path: Path) -> None:
    """A C-CANCEL sent after the first sub-operation of a C-MOVE to a slow destination: the
    move stops, its final response is Cancel (0xFE00) with the sub-operations not performed
    counted as remaining (PS3.4 C.4.2.1.6), and the association goes on."""
    study = store_study(server, tmp_path, 10)
    dest = SlowDestination()
    try:
        sock = start_move(server, study)
        sock.sendall(message(1, command({
            "CommandField": 0x0FFF, "MessageIDBeingRespondedTo": 5,
            "CommandDataSetType": 0x0101})))
        cs = None
        while cs is None or cs.Status == 0xFF00:
            _, cs, _ = read_message(sock)
        assert cs.Status == 0xFE00, hex(cs.Status)
        assert cs.NumberOfRemainingSuboperations > 0
        assert cs.NumberOfCompletedSuboperations + cs.NumberOfRemainingSuboperations == 10
        assert echo(sock, context_id=3) == 0
        sock.close()
    finally:
        dest.close()
    assert 1 <= len(dest.received) < 10


def test_requestor_aborting_in_the_middle_of_a_c_move(server: ServerProcess,
                                                      tmp_path: Path) -> None:
    """The requestor sends an A-ABORT after the first sub-operation: the move stops, its
    association with the destination is aborted, no traceback, others are served."""
    study = store_study(server, tmp_path, 10)
    before = tracebacks(server)
    dest = SlowDestination()
    try:
        sock = start_move(server, study)
        sock.sendall(struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0, 0))
        sock.close()
        deadline = time.monotonic() + 5
        while not dest.aborted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dest.aborted, "the sub-association was left open"
        assert len(dest.received) < 10
        other = associate(server.dicom_port, [(VERIFICATION, [IMPLICIT])])
        assert echo(other) == 0
        other.close()
    finally:
        dest.close()
    assert tracebacks(server) == before


def test_trickled_association_request_and_idle_association(make_server) -> None:  # type: ignore[no-untyped-def]
    """ARTIM bounds the whole A-ASSOCIATE-RQ, not each read: one sent a byte every 0.25 s is
    closed after the ARTIM timeout (PS3.8 9.1.5). An association left idle is aborted after the
    network timeout. Both on two worker processes."""
    srv = make_server("--workers", "2", env={"ARCHIVIST_ARTIM_TIMEOUT": "2",
                                              "ARCHIVIST_NETWORK_TIMEOUT": "2"})
    rq = associate_rq([(VERIFICATION, [IMPLICIT])])
    sock = socket.create_connection(("127.0.0.1", srv.dicom_port), timeout=10)
    t0 = time.monotonic()
    sent = 0
    with pytest.raises(OSError):
        for i in range(len(rq)):
            sock.sendall(rq[i:i + 1])
            sent += 1
            time.sleep(0.25)
            if time.monotonic() - t0 > 8:
                break
    sock.close()
    assert sent < len(rq) and time.monotonic() - t0 < 6
    idle = associate(srv.dicom_port, [(VERIFICATION, [IMPLICIT])])
    t0 = time.monotonic()
    kind, body = read_pdu(idle)
    idle.close()
    assert (kind, body[2:4]) == (0x07, b"\x02\x00") and 1.5 < time.monotonic() - t0 < 6
    other = associate(srv.dicom_port, [(VERIFICATION, [IMPLICIT])])
    assert echo(other) == 0
    other.close()
    assert "Traceback" not in srv.log()


class ThrottledReader:
    """Reads a socket at about `rate` bytes a second (a slow network link)."""

    def __init__(self, sock: socket.socket, rate: float) -> None:
        self.sock, self.rate = sock, rate
        self.buf = b""
        self.t0 = time.monotonic()
        self.total = 0

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            ahead = self.total / self.rate - (time.monotonic() - self.t0)
            if ahead > 0:
                time.sleep(ahead)
            chunk = self.sock.recv(16384)
            if not chunk:
                raise ConnectionResetError("closed")
            self.total += len(chunk)
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def pdu(self) -> tuple[int, bytes]:
        pdu_type, _, length = HEADER.unpack(self.exactly(6))
        return pdu_type, self.exactly(length)

    def message(self) -> tuple[Any, bytes]:
        """The next DIMSE message: (command, data set)."""
        cx, cs, data = message_from(self.pdu)
        assert cx > 0, f"PDU 0x{-cx:02X} {cs[:4].hex()}"
        return cs, data


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_c_get_to_a_slow_reader_is_not_cut_while_it_reads(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A C-GET of a 25 MB object by a requestor on a slow link (~3 MB/s, DIMSE and network
    timeouts 3 s): sending the sub-operation's C-STORE-RQ takes several seconds while the
    requestor reads all along. The DIMSE timeout is the wait for its C-STORE-RSP, from when the
    request has gone; the association's timer ran it from the requestor's last PDU, and cut the
    association while the object was still on its way."""
    from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

    srv = make_server("--workers", "1", env={"ARCHIVIST_DIMSE_TIMEOUT": "3",
                                              "ARCHIVIST_NETWORK_TIMEOUT": "3"})
    # ~25 MB at 3 MB/s: ~7 s on the way, a few MB of it in socket buffers when the server has
    # sent the last byte (read within the 3 s the C-STORE-RSP may take)
    big = SC(tmp_path, rows=1448, frames=12)
    assert len(big.data) > 24_000_000, len(big.data)
    sock = associate(srv.dicom_port, [(SC_CLASS, [EXPLICIT])], max_length=1 << 20)
    sock.sendall(p_data(pdv(1, 0x03, store_command(big.uid))))
    for i in range(0, len(big.data), 1 << 20):
        last = i + (1 << 20) >= len(big.data)
        sock.sendall(p_data(pdv(1, 0x02 if last else 0x00, big.data[i:i + (1 << 20)])))
    assert read_message(sock)[1].Status == 0
    sock.close()

    get = "1.2.840.10008.5.1.4.1.2.2.3"
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = SC_CLASS
    role.scu_role, role.scp_role = False, True
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock = associate(srv.dicom_port, [(get, [EXPLICIT]), (SC_CLASS, [EXPLICIT])], sock=sock,
                     max_length=65536, extra=(role,))
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = big.study
    sock.sendall(message(1, command({
        "AffectedSOPClassUID": get, "CommandField": 0x0010, "MessageID": 3, "Priority": 0,
        "CommandDataSetType": 0x0000}), bytes(encode(query, False, True))))  # type: ignore[arg-type]
    slow = ThrottledReader(sock, rate=3_000_000)
    try:
        cs, data = slow.message()
    except ConnectionResetError:
        pytest.fail("the association was cut while the object was being read")
    assert int(cs.CommandField) == 0x0001 and data == big.data
    sock.sendall(message(3, command({
        "AffectedSOPClassUID": SC_CLASS, "CommandField": 0x8001,
        "MessageIDBeingRespondedTo": int(cs.MessageID), "CommandDataSetType": 0x0101,
        "Status": 0, "AffectedSOPInstanceUID": big.uid})))
    cs = None
    while cs is None or cs.Status == 0xFF00:
        _, cs, _ = read_message(sock)
    assert (int(cs.CommandField), int(cs.Status)) == (0x8010, 0)
    sock.close()


@pytest.mark.parametrize("how", ["reset", "stops reading"])
def test_c_store_waiting_behind_a_stalled_c_find_leaves_no_temporary_file(
        server: ServerProcess, tmp_path: Path, how: str) -> None:
    """Requests sent beyond the window of 1 behind a C-FIND whose requestor reads nothing: a
    C-STORE waits in the queue, the next one (2 MB, spilled to a temporary file) waits to be
    queued. When the association ends (the peer resets, or it is aborted as not reading),
    neither is stored and the temporary file goes."""
    a, b = SC(tmp_path), SC(tmp_path, rows=512, frames=8)
    before, stalled = tracebacks(server), server.log().count(STALLED)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock = associate(server.dicom_port, [(MWL_FIND, [EXPLICIT]), (SC_CLASS, [EXPLICIT])],
                     sock=sock)
    sock.sendall(message(1, command({
        "AffectedSOPClassUID": MWL_FIND, "CommandField": 0x0020, "MessageID": 1, "Priority": 0,
        "CommandDataSetType": 0x0000}), worklist_query()))
    sock.sendall(message(3, store_command(a.uid, 2), a.data))
    sock.sendall(p_data(pdv(3, 0x03, store_command(b.uid, 3))))
    for i in range(0, len(b.data), 60_000):
        last = i + 60_000 >= len(b.data)
        sock.sendall(p_data(pdv(3, 0x02 if last else 0x00, b.data[i:i + 60_000])))
    wait_for_spill(server, "the 2 MB data set should have spilled to a file")
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        # The server notices when it next writes: once the C-FIND's first response is ready
        # (the 1,200 steps are matched first: seconds on a loaded machine).
    else:
        wait_for_stall_aborts(server, stalled + 1)
    assert wait_for_no_temporary_files(server, 30) == [], \
        "a temporary file was left behind"
    sock.close()
    assert a.stored(server) is None and b.stored(server) is None
    assert tracebacks(server) == before


def test_requestor_resetting_during_a_c_find(server: ServerProcess) -> None:
    """The requestor resets the connection after 30 of 1,200 C-FIND responses (a viewer
    closed in the middle of a query): the association ends as a lost connection, without an
    ERROR and a traceback in the log (uvloop refuses a write on the closed transport with a
    RuntimeError, which was logged as an internal error)."""
    for _ in range(3):
        before = tracebacks(server)
        sock = associate(server.dicom_port, [(MWL_FIND, [EXPLICIT])])
        sock.sendall(message(1, command({
            "AffectedSOPClassUID": MWL_FIND, "CommandField": 0x0020, "MessageID": 1,
            "Priority": 0, "CommandDataSetType": 0x0000}), worklist_query()))
        for _ in range(30):  # read at full speed: the server is producing, not waiting
            _, cs, _ = read_message(sock)
            assert cs.Status == 0xFF00
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        time.sleep(0.5)
        other = associate(server.dicom_port, [(VERIFICATION, [IMPLICIT])])
        assert echo(other) == 0
        other.close()
        assert tracebacks(server) == before, server.log()[-3000:]


@pytest.mark.parametrize(("version", "answer"), [(0x0000, 0x03), (0x0002, 0x03),
                                                 (0x0001, 0x02), (0xFFFF, 0x02)])
def test_protocol_version(server: ServerProcess, version: int, answer: int) -> None:
    """PS3.8 9.3.2: the receiver "shall only test that bit 0 is set" in Protocol Version; a
    request without it is rejected as protocol-version-not-supported (A-ASSOCIATE-RJ 1/2/2).
    Requests without bit 0 used to be accepted."""
    rq = bytearray(associate_rq([(VERIFICATION, [IMPLICIT])]))
    rq[6:8] = struct.pack(">H", version)
    with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=10) as sock:
        sock.sendall(bytes(rq))
        kind, body = read_pdu(sock)
        assert kind == answer, body.hex()
        if answer == 0x03:
            assert body[1:4] == bytes([1, 2, 2])
        else:
            assert echo(sock) == 0
