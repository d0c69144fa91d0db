"""A final C-MOVE / C-GET response with its Failed SOP Instance UID List travels in one
P-DATA-TF PDU with its command set, so that third-party requestors that stop reading at a final
response's command set (PixelMed's C-MOVE and C-GET SCUs) read the list instead of aborting the
association; pending C-FIND responses keep a PDU per part (GDCM 3.0's gdcmscu drops every other
response whose command and identifier share a PDU).

Needs, for the PixelMed tests only: Java and Debian's ``libpixelmed-java`` (``apt-get install
pixelmed-apps``, about 20 s); they skip with the reason when either is absent. The rest runs
against a real ``archivist serve`` with pynetdicom's PDU classes and raw sockets.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context

from archivist.dimse.acceptor_pdu import COALESCE_LIMIT, coalesce, fragment_message
from archivist.testing.server import ServerProcess, free_port

AET = "ARCHIVIST"
ROOT = "1.2.826.0.1.3680043.10.9983."
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")


def _controls(pdu: bytes) -> list[int]:
    """The message control header of every PDV item of one P-DATA-TF PDU."""
    assert pdu[0] == 0x04
    length = struct.unpack(">L", pdu[2:6])[0]
    assert length == len(pdu) - 6
    out, pos = [], 6
    while pos < len(pdu):
        item_len = struct.unpack(">L", pdu[pos:pos + 4])[0]
        out.append(pdu[pos + 5])
        pos += 4 + item_len
    assert pos == len(pdu)
    return out


# -- the PDU layout (no server) ------------------------------------------------------------


def test_a_small_data_set_joins_its_command_in_one_pdu() -> None:
    pdus = coalesce(fragment_message(b"\x01" * 80, 3, 16384, b"\x02" * 300), 16384)
    assert len(pdus) == 1
    assert _controls(pdus[0]) == [0x03, 0x02]
    assert pdus[0].endswith(b"\x02" * 300)


@pytest.mark.parametrize(("max_pdu", "size"), [(400, 300), (0, COALESCE_LIMIT), (16384, 20000)])
def test_what_does_not_fit_keeps_its_own_pdus(max_pdu: int, size: int) -> None:
    pdus = fragment_message(b"\x01" * 120, 1, max_pdu, b"\x02" * size)
    out = coalesce(pdus, max_pdu)
    assert out == pdus
    assert all(len(p) - 6 <= (max_pdu or len(p)) for p in out)


def test_commands_alone_and_fragmented_data_are_left_as_they_are() -> None:
    alone = fragment_message(b"\x01" * 40, 1, 16384)
    assert coalesce(alone * 3, 16384) == alone * 3
    # a data set in several fragments is not joined (its first fragment fills a PDU)
    split = fragment_message(b"\x01" * 40, 1, 256, b"\x02" * 1000)
    assert coalesce(split, 256) == split


# -- against a running server --------------------------------------------------------------


def _undecodable_jpeg(path: Path) -> Dataset:
    """A JPEG Baseline Secondary Capture whose one frame is not a JPEG stream: stored (it is
    complete), but it cannot be decompressed for a requestor that takes uncompressed syntaxes
    only, so its sub-operation fails."""
    ds = Dataset()
    ds.PatientName, ds.PatientID = "THIRD^PEERS", "TP-PEERS"
    ds.StudyInstanceUID = generate_uid(prefix=ROOT)
    ds.SeriesInstanceUID = generate_uid(prefix=ROOT)
    ds.SOPInstanceUID = generate_uid(prefix=ROOT)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "20240305", "101010", 1, 1
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x13" * 62 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path, enforce_file_format=True)
    return ds


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("thirdpeers")
    closed_port = free_port()  # a configured destination nobody listens on
    srv = ServerProcess(base / "data", extra_args=[
        "--workers", "1", "--peer", f"NOBODY=127.0.0.1:{closed_port}"]).start()
    ds = _undecodable_jpeg(base / "bad.dcm")
    ae = AE(ae_title="THIRDPEERS")
    ae.add_requested_context(SecondaryCaptureImageStorage, JPEGBaseline8Bit)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0x0000
    try:
        yield {"server": srv, "ds": ds, "base": base}
    finally:
        srv.stop()


def _read_pdu(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 6:
        chunk = sock.recv(6 - len(head))
        assert chunk, "connection closed"
        head += chunk
    length = struct.unpack(">L", head[2:6])[0]
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        assert chunk, "connection closed"
        body += chunk
    return head + body


def _associate(port: int, abstract_syntax: str) -> socket.socket:
    rq = A_ASSOCIATE()
    rq.application_context_name = "1.2.840.10008.3.1.1.1"
    rq.calling_ae_title, rq.called_ae_title = "RAWSCU", AET
    cx = build_context(abstract_syntax, ["1.2.840.10008.1.2"])
    cx.context_id = 1
    rq.presentation_context_definition_list = [cx]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    rq.user_information = [max_length]
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(bytes(A_ASSOCIATE_RQ(rq).encode()))
    assert _read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC
    return sock


def _final_response_pdu(sock: socket.socket, command: Dataset, identifier: Dataset) -> bytes:
    """Send a C-MOVE or C-GET request and return the PDU holding its final response command."""
    cmd = bytes(encode(command, True, True))  # type: ignore[arg-type]
    data = bytes(encode(identifier, True, True))  # type: ignore[arg-type]
    for payload, control in ((cmd, 0x03), (data, 0x02)):
        sock.sendall(struct.pack(">BBL", 4, 0, len(payload) + 6)
                     + struct.pack(">LBB", len(payload) + 2, 1, control) + payload)
    while True:
        pdu = _read_pdu(sock)
        assert pdu[0] == 0x04, f"PDU type {pdu[0]}"
        item_len = struct.unpack(">L", pdu[6:10])[0]
        if pdu[11] & 0x01:
            cs = decode(BytesIO(pdu[12:10 + item_len]), True, True)
            if int(cs.Status) not in (0xFF00, 0xFF01):
                return pdu


def test_final_c_move_response_carries_its_failed_list_in_the_same_pdu(
        setup: dict[str, Any]) -> None:
    srv, ds = setup["server"], setup["ds"]
    sock = _associate(srv.dicom_port, STUDY_ROOT_MOVE)
    try:
        command = Dataset()
        command.AffectedSOPClassUID = STUDY_ROOT_MOVE
        command.CommandField, command.MessageID, command.Priority = 0x0021, 5, 0
        command.CommandDataSetType, command.MoveDestination = 0x0000, "NOBODY"
        ident = Dataset()
        ident.QueryRetrieveLevel, ident.StudyInstanceUID = "STUDY", ds.StudyInstanceUID
        pdu = _final_response_pdu(sock, command, ident)
    finally:
        sock.close()
    assert _controls(pdu) == [0x03, 0x02]
    item_len = struct.unpack(">L", pdu[6:10])[0]
    cs = decode(BytesIO(pdu[12:10 + item_len]), True, True)
    assert int(cs.Status) == 0xA702 and int(cs.NumberOfFailedSuboperations) == 1
    failed = decode(BytesIO(pdu[10 + item_len + 6:]), True, True)
    assert failed.FailedSOPInstanceUIDList == ds.SOPInstanceUID
    # how the move ended is logged, with its counts, when the destination cannot be reached
    assert "to NOBODY ended 0xA702: 0 completed, 1 failed" in srv.log()


def test_pending_c_find_responses_keep_a_pdu_per_part(setup: dict[str, Any]) -> None:
    srv, ds = setup["server"], setup["ds"]
    sock = _associate(srv.dicom_port, STUDY_ROOT_FIND)
    try:
        command = Dataset()
        command.AffectedSOPClassUID = STUDY_ROOT_FIND
        command.CommandField, command.MessageID, command.Priority = 0x0020, 3, 0
        command.CommandDataSetType = 0x0000
        ident = Dataset()
        ident.QueryRetrieveLevel, ident.PatientID = "STUDY", ds.PatientID
        ident.StudyInstanceUID = ""
        cmd = bytes(encode(command, True, True))  # type: ignore[arg-type]
        data = bytes(encode(ident, True, True))  # type: ignore[arg-type]
        for payload, control in ((cmd, 0x03), (data, 0x02)):
            sock.sendall(struct.pack(">BBL", 4, 0, len(payload) + 6)
                         + struct.pack(">LBB", len(payload) + 2, 1, control) + payload)
        controls = [_controls(_read_pdu(sock)) for _ in range(3)]
    finally:
        sock.close()
    # pending: command, then identifier; then the final Success (no identifier)
    assert controls == [[0x03], [0x02], [0x03]]


def _pixelmed(*args: str) -> str:
    java = shutil.which("java")
    if java is None or not PIXELMED_JAR.exists():
        pytest.skip("needs Java and PixelMed (apt-get install pixelmed-apps)")
    proc = subprocess.run([java, "-Djava.awt.headless=true", "-cp", str(PIXELMED_JAR), *args],
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout + proc.stderr


def test_pixelmed_move_scu_reads_the_final_failure(setup: dict[str, Any]) -> None:
    srv, ds = setup["server"], setup["ds"]
    out = _pixelmed("com.pixelmed.network.MoveSOPClassSCU", "127.0.0.1", str(srv.dicom_port),
                    AET, "PIXELMED", "NOBODY", "STUDY", ds.StudyInstanceUID)
    assert "A-P-ABORT" not in out, out
    assert "C-MOVE reports failure status 0xa702" in out, out


#: PixelMed's own GetSOPClassSCU main proposes every Storage SOP Class (more than 128
#: presentation contexts): this one asks for Secondary Capture only (run from source by the
#: JDK's launcher, as in DicomCleaner).
_GET_SOURCE = """
import com.pixelmed.dicom.*;
import com.pixelmed.network.*;
import java.io.File;
import java.util.*;

public class ThirdPeersGet {
    public static void main(String[] a) throws Exception {
        AttributeList id = new AttributeList();
        { Attribute x = new CodeStringAttribute(TagFromName.QueryRetrieveLevel); x.addValue("STUDY"); id.put(x); }
        { Attribute x = new UniqueIdentifierAttribute(TagFromName.StudyInstanceUID); x.addValue(a[3]); id.put(x); }
        try {
            new GetSOPClassSCU("127.0.0.1", Integer.parseInt(a[0]), a[1], "PIXELMED",
                SOPClass.StudyRootQueryRetrieveInformationModelGet, id, new IdentifierHandler(),
                new File(a[2]), StoredFilePathStrategy.BYSOPINSTANCEUIDINSINGLEFOLDER,
                new ReceivedObjectHandler() {
                    public void sendReceivedObjectIndication(String f, String ts, String aet) {}
                },
                new HashSet<String>(Arrays.asList(SOPClass.SecondaryCaptureImageStorage)),
                true, false, false);
            System.out.println("C-GET succeeded");
        } catch (Exception e) {
            System.out.println(e);
        }
    }
}
"""


def test_pixelmed_get_scu_reads_the_final_failure(setup: dict[str, Any]) -> None:
    srv, ds = setup["server"], setup["ds"]
    received = setup["base"] / "pixelmed-get"
    received.mkdir()
    source = setup["base"] / "ThirdPeersGet.java"
    source.write_text(_GET_SOURCE)
    java = shutil.which("java")
    modules = subprocess.run([java or "java", "--list-modules"], capture_output=True, text=True,
                             timeout=30, check=False).stdout if java else ""
    if "jdk.compiler" not in modules:
        pytest.skip("running a Java source file needs a JDK (apt-get install default-jdk-headless)")
    out = _pixelmed(str(source), str(srv.dicom_port), AET, str(received), ds.StudyInstanceUID)
    assert "A-P-ABORT" not in out, out
    assert "C-GET reports failure status 0xa702" in out, out
