"""Third-party DIMSE peers driving a real `archivist serve`: Orthanc as the SCU (store, query at
every level and retrieve through its REST API), DCMTK tools the other tests do not use (dcmsend
over a folder holding a DICOMDIR, movescu with the Patient Root model to dcmrecv, getscu at
SERIES and IMAGE level, findscu -W) and requests for services the archive does not offer
(Modality Worklist, MPPS, Storage Commitment, UPS), which must be refused cleanly: rejected
presentation contexts, or a failure status for a request on a context of another SOP Class."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import build_context
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.rawpdu import read_pdu
from archivist.testing.server import ServerProcess, free_port

pytestmark = pytest.mark.timeout(300)

AET = "ARCHIVIST"
IMPLICIT = "1.2.840.10008.1.2"
VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
INVENTORY_CREATION = "1.2.840.10008.5.1.4.1.1.201.5"
STORAGE_MANAGEMENT_INSTANCE = "1.2.840.10008.5.1.4.1.1.201.1.1"
MWL = "1.2.840.10008.5.1.4.31"
MPPS = "1.2.840.10008.3.1.2.3.3"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
HEADER = struct.Struct(">BBL")


def tool(name: str) -> str:
    """A DCMTK tool or Orthanc by absolute path (pynetdicom installs apps of the same names)."""
    venv_bin = os.path.dirname(sys.executable)
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and os.path.abspath(d) != venv_bin] + ["/usr/sbin", "/usr/bin"]
    found = shutil.which(name, path=os.pathsep.join(dirs))
    if found is None:
        pytest.fail(f"{name} is required: apt-get install dcmtk orthanc")
    return found


ENV = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK (and Orthanc) otherwise wait on delayed ACKs


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool(args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=timeout, env=ENV, check=False)


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited early"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port}")


# -- data ---------------------------------------------------------------------------------------


class Data:
    """One patient, one study: a CT series (JPEG-LS lossless and RLE, made with DCMTK) and an MR
    series (uncompressed), plus a second patient at another study date."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self.study, self.other_study = new_uid(), new_uid()
        self.ct_series, self.mr_series, self.other_series = new_uid(), new_uid(), new_uid()
        self.syntax: dict[str, str] = {}
        self.files: list[Path] = []
        common: dict[str, Any] = {
            "patient_name": "Peerson^Anna", "patient_id": "QAPEER1", "study_uid": self.study,
            "accession_number": "QAPACC1", "rows": 16, "columns": 16}
        for i, (coder, syntax) in enumerate((("dcmcjpls", "1.2.840.10008.1.2.4.80"),
                                             ("dcmcrle", "1.2.840.10008.1.2.5"))):
            raw = folder / f"raw{i}.dcm"
            ds = make_instance(raw, series_uid=self.ct_series, modality="CT",
                               instance_number=i + 1, **common)
            out = folder / f"ct{i}.dcm"
            subprocess.run([tool(coder), str(raw), str(out)], check=True, env=ENV)
            raw.unlink()
            self.add(out, str(ds.SOPInstanceUID), syntax)
        for i in range(2):
            out = folder / f"mr{i}.dcm"
            ds = make_instance(out, series_uid=self.mr_series, modality="MR", series_number=2,
                               instance_number=i + 1, **common)
            self.add(out, str(ds.SOPInstanceUID), "1.2.840.10008.1.2.1")
        out = folder / "ot.dcm"
        ds = make_instance(out, patient_name="Müller^Jörg", patient_id="QAPEER2",
                           charset="ISO_IR 100", study_uid=self.other_study,
                           series_uid=self.other_series, modality="OT",
                           study_date="20230505", accession_number="QAPACC2")
        self.add(out, str(ds.SOPInstanceUID), "1.2.840.10008.1.2.1")
        self.ct, self.mr = list(self.syntax)[:2], list(self.syntax)[2:4]

    def add(self, path: Path, sop: str, syntax: str) -> None:
        self.files.append(path)
        self.syntax[sop] = syntax


# -- Orthanc ------------------------------------------------------------------------------------


class Orthanc:
    """Orthanc (the Debian package) with the archive as its modality `archivist`."""

    def __init__(self, folder: Path, port: int, archivist_port: int) -> None:
        folder.mkdir(parents=True)
        self.port, self.http = port, free_port()
        cfg = folder / "orthanc.json"
        cfg.write_text(json.dumps({
            "Name": "qa-peers", "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"), "DicomAet": "ORTHANC",
            "DicomPort": self.port, "HttpPort": self.http, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "DicomModalities": {"archivist": [AET, "127.0.0.1", archivist_port]},
            "DicomAlwaysAllowStore": True, "Plugins": [], "StorageCompression": False,
            "DicomScuTimeout": 20,
        }))
        self.log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([tool("Orthanc"), str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True, env=ENV)
        wait_port(self.port, self.proc, "Orthanc")
        wait_port(self.http, self.proc, "Orthanc HTTP")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", data=data,
                                     method=method)
        with urllib.request.urlopen(req, timeout=60) as rsp:
            text = rsp.read()
            kind = rsp.headers.get("Content-Type", "")
        if not text:
            return None
        return json.loads(text) if "json" in kind else text.decode()

    def query(self, level: str, keys: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
        """Orthanc's C-FIND to the archive: (query id, simplified answers)."""
        qid = self.call("POST", "/modalities/archivist/query",
                        {"Level": level, "Query": keys})["ID"]
        return qid, self.call("GET", f"/queries/{qid}/answers?expand&simplify")

    def held(self) -> dict[str, str]:
        """SOP Instance UID -> transfer syntax, of what Orthanc holds."""
        out = {}
        for oid in self.call("GET", "/instances"):
            tags = self.call("GET", f"/instances/{oid}/simplified-tags")
            out[tags["SOPInstanceUID"]] = self.call(
                "GET", f"/instances/{oid}/metadata/TransferSyntax")
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The archive (one worker; Orthanc and dcmrecv as C-MOVE destinations), Orthanc, dcmrecv."""
    base = tmp_path_factory.mktemp("peers")
    data = Data(base / "files")
    dicom_port, orthanc_port, recv_port = free_port(), free_port(), free_port()
    received = base / "dcmrecv"
    received.mkdir()
    recv = subprocess.Popen([tool("dcmrecv"), "-aet", "DCMRECV", "-od", str(received),
                             "-xf", "/etc/dcmtk/storescp.cfg", "Default", str(recv_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=ENV)
    orthanc = Orthanc(base / "orthanc", orthanc_port, dicom_port)
    server = ServerProcess(base / "data", dicom_port=dicom_port, extra_args=[
        "--workers", "1", "--peer", f"ORTHANC=127.0.0.1:{orthanc_port}",
        "--peer", f"DCMRECV=127.0.0.1:{recv_port}"])
    try:
        server.start()
        wait_port(recv_port, recv, "dcmrecv")
        yield {"server": server, "data": data, "orthanc": orthanc, "received": received,
               "base": base}
    finally:
        server.stop()
        orthanc.stop()
        recv.send_signal(signal.SIGTERM)
        recv.wait(10)


@pytest.fixture(scope="module")
def stored(peers: dict[str, Any]) -> dict[str, Any]:
    """The files uploaded to Orthanc, then sent by Orthanc's C-STORE SCU to the archive."""
    orthanc: Orthanc = peers["orthanc"]
    ids = [orthanc.call("POST", "/instances", path.read_bytes())["ID"]
           for path in peers["data"].files]
    answer = orthanc.call("POST", "/modalities/archivist/store",
                          {"Resources": ids, "Synchronous": True})
    return {**peers, "orthanc_ids": ids, "store_answer": answer}


# -- a minimal hand-built client, for requests pynetdicom would not send -----------------------


def associate(port: int, contexts: list[str]) -> tuple[socket.socket, dict[int, int]]:
    """Associate proposing `contexts` (Implicit VR LE; IDs 1, 3, 5...); (socket, {id: result})."""
    rq = A_ASSOCIATE()
    rq.application_context_name = UID("1.2.840.10008.3.1.1.1")
    rq.calling_ae_title = "QAPEERS"
    rq.called_ae_title = AET
    proposed = []
    for i, abstract in enumerate(contexts):
        cx = build_context(abstract, [IMPLICIT])
        cx.context_id = 2 * i + 1
        proposed.append(cx)
    rq.presentation_context_definition_list = proposed
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    rq.user_information = [length]
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(bytes(A_ASSOCIATE_RQ(rq).encode()))
    pdu_type, body = read_pdu(sock)
    assert pdu_type == 0x02, f"PDU type {pdu_type} instead of A-ASSOCIATE-AC"
    results, pos = {}, 68  # variable items of the A-ASSOCIATE-AC
    while pos < len(body):
        item, length_ = body[pos], struct.unpack(">H", body[pos + 2:pos + 4])[0]
        if item == 0x21:
            results[body[pos + 4]] = body[pos + 6]
        pos += 4 + length_
    return sock, results




def request(sock: socket.socket, context_id: int, values: dict[str, Any],
            data: Dataset | None = None) -> Dataset:
    """Send one DIMSE request (command, then its data set) and return the response's command."""
    cs = Dataset()
    for keyword, value in {**values, "CommandDataSetType": 0x0101 if data is None
                           else 0x0001}.items():
        setattr(cs, keyword, value)
    body = bytes(encode(cs, True, True))  # type: ignore[arg-type]
    head = Dataset()
    head.CommandGroupLength = len(body)
    out = b""
    payloads = [(bytes(encode(head, True, True)) + body, 0x03)]  # type: ignore[arg-type]
    if data is not None:
        payloads.append((bytes(encode(data, True, True)), 0x02))  # type: ignore[arg-type]
    for payload, control in payloads:
        out += HEADER.pack(0x04, 0, len(payload) + 6)
        out += struct.pack(">LBB", len(payload) + 2, context_id, control) + payload
    sock.sendall(out)
    cmd = b""
    while True:
        pdu_type, body = read_pdu(sock)
        assert pdu_type == 0x04, f"PDU type {pdu_type} instead of a response"
        pos = 0
        while pos < len(body):
            length, _, control = struct.unpack(">LBB", body[pos:pos + 6])
            if control & 0x01:
                cmd += body[pos + 6:pos + 4 + length]
                if control & 0x02:
                    return decode(BytesIO(cmd), True, True)
            pos += 4 + length


def initiate(transaction: str) -> Dataset:
    info = Dataset()
    info.TransactionUID = transaction
    info.InventoryLevel = "STUDY"
    info.RetainInstances = "NO"
    return info


# -- services the archive does not offer, and requests on a context of another SOP Class -------


def test_n_action_on_a_context_of_another_sop_class_is_refused(peers: dict[str, Any]) -> None:
    # An Inventory Creation N-ACTION sent on the Verification (or a Storage) context of an
    # association that never negotiated Inventory Creation was performed: the inventory was
    # made. A request names the SOP Class of its context (PS3.7 10.1): refused, 0x0122.
    server: ServerProcess = peers["server"]
    sock, results = associate(server.dicom_port, [VERIFICATION, CT, INVENTORY_CREATION])
    try:
        assert results == {1: 0, 3: 0, 5: 0}
        transaction = new_uid()
        action = {"CommandField": 0x0130, "RequestedSOPClassUID": INVENTORY_CREATION,
                  "RequestedSOPInstanceUID": STORAGE_MANAGEMENT_INSTANCE, "ActionTypeID": 11}
        for mid, context_id in ((1, 1), (2, 3)):
            rsp = request(sock, context_id, {**action, "MessageID": mid}, initiate(transaction))
            assert (rsp.CommandField, rsp.MessageIDBeingRespondedTo) == (0x8130, mid)
            assert rsp.Status == 0x0122, hex(rsp.Status)
            assert "presentation context" in rsp.ErrorComment
        status = {**action, "ActionTypeID": 12}
        # Nothing was started: on its own context (served), the transaction is unknown ...
        rsp = request(sock, 5, {**status, "MessageID": 3}, initiate(transaction))
        assert rsp.Status == 0x0112, hex(rsp.Status)
        # ... and the association still answers on the others.
        rsp = request(sock, 1, {"CommandField": 0x0030, "MessageID": 4,
                                "AffectedSOPClassUID": VERIFICATION})
        assert rsp.Status == 0x0000
    finally:
        sock.close()


def test_worklist_mpps_commitment_ups_are_refused_cleanly(peers: dict[str, Any]) -> None:
    """Modality Worklist (no worklist_dir) is refused as an abstract syntax not supported
    (result 3) next to an accepted Verification, Storage Commitment, MPPS and UPS Push (each
    served since it was added); an
    N-CREATE (MPPS), N-SET, N-ACTION (Storage Commitment) or C-FIND (worklist) sent on the
    Verification context anyway gets a failure status at once, and the association goes on."""
    server: ServerProcess = peers["server"]
    sock, results = associate(server.dicom_port,
                              [MWL, MPPS, STORAGE_COMMITMENT, UPS_PUSH, VERIFICATION])
    try:
        assert results == {1: 3, 3: 0, 5: 0, 7: 0, 9: 0}
        step = Dataset()
        step.PerformedProcedureStepStatus = "IN PROGRESS"
        worklist = Dataset()
        worklist.PatientName = "*"
        for mid, values, data in (
                (1, {"CommandField": 0x0140, "AffectedSOPClassUID": MPPS,
                     "AffectedSOPInstanceUID": new_uid()}, step),
                (2, {"CommandField": 0x0120, "RequestedSOPClassUID": MPPS,
                     "RequestedSOPInstanceUID": new_uid()}, step),
                (3, {"CommandField": 0x0130, "RequestedSOPClassUID": STORAGE_COMMITMENT,
                     "RequestedSOPInstanceUID": "1.2.840.10008.1.20.1.1",
                     "ActionTypeID": 1}, step),
                (4, {"CommandField": 0x0020, "AffectedSOPClassUID": MWL, "Priority": 0},
                 worklist)):
            started = time.monotonic()
            rsp = request(sock, 9, {**values, "MessageID": mid}, data)
            assert rsp.MessageIDBeingRespondedTo == mid
            assert rsp.CommandField == values["CommandField"] | 0x8000
            assert rsp.Status == 0x0122, (mid, hex(rsp.Status))
            assert time.monotonic() - started < 5
        rsp = request(sock, 9, {"CommandField": 0x0030, "MessageID": 5,
                                "AffectedSOPClassUID": VERIFICATION})
        assert rsp.Status == 0x0000
    finally:
        sock.close()
    # DCMTK's worklist query finds no acceptable context and gives up at once.
    result = run("findscu", "-W", "-aec", AET, "-k", "PatientName=*", "127.0.0.1",
                 str(server.dicom_port), timeout=30)
    assert result.returncode != 0
    assert "No Acceptable Presentation Contexts" in result.stdout + result.stderr
    assert run("echoscu", "-aec", AET, "127.0.0.1", str(server.dicom_port)).returncode == 0


# -- Orthanc as the SCU ---------------------------------------------------------------------------


def stored_syntax(server: ServerProcess, study: str, series: str, sop: str) -> str:
    url = (f"{server.url}/wado?requestType=WADO&studyUID={study}&seriesUID={series}"
           f"&objectUID={sop}&contentType=application/dicom")
    with urllib.request.urlopen(url, timeout=30) as rsp:
        ds = pydicom.dcmread(BytesIO(rsp.read()), stop_before_pixels=True)
    return str(ds.file_meta.TransferSyntaxUID)


def test_orthanc_echo_and_store(stored: dict[str, Any]) -> None:
    """Orthanc's C-ECHO and C-STORE SCU (it proposes its own set of syntaxes): every object is
    stored, compressed ones in their own syntax."""
    orthanc: Orthanc = stored["orthanc"]
    data: Data = stored["data"]
    assert orthanc.call("POST", "/modalities/archivist/echo", {}) == {}
    answer = stored["store_answer"]
    assert (answer["InstancesCount"], answer["FailedInstancesCount"]) == (5, 0)
    for sop, syntax in data.syntax.items():
        series = (data.ct_series if sop in data.ct else data.mr_series if sop in data.mr
                  else data.other_series)
        study = data.other_study if series == data.other_series else data.study
        assert stored_syntax(stored["server"], study, series, sop) == syntax


def test_orthanc_queries_every_level(stored: dict[str, Any]) -> None:
    """Orthanc's C-FIND SCU sends Specific Character Set ISO_IR 100 and the levels' UIDs as empty
    return keys (Patient Root at PATIENT level, Study Root below): its answers are right."""
    orthanc: Orthanc = stored["orthanc"]
    data: Data = stored["data"]
    _, patients = orthanc.query("Patient", {"PatientName": "müller*", "PatientID": "",
                                            "NumberOfPatientRelatedInstances": "",
                                            "PatientBirthDate": ""})
    assert [(p["PatientID"], p["PatientName"], p["NumberOfPatientRelatedInstances"],
             p["PatientBirthDate"]) for p in patients] == [
        ("QAPEER2", "Müller^Jörg", "1", "19700101")]
    _, studies = orthanc.query("Study", {"PatientID": "QAPEER*", "StudyDate": "20240101-",
                                         "ModalitiesInStudy": "",
                                         "NumberOfStudyRelatedSeries": "",
                                         "NumberOfStudyRelatedInstances": ""})
    assert [(s["StudyInstanceUID"], s["AccessionNumber"], s["ModalitiesInStudy"],
             s["NumberOfStudyRelatedSeries"], s["NumberOfStudyRelatedInstances"])
            for s in studies] == [(data.study, "QAPACC1", "CT\\MR", "2", "4")]
    assert all(s["SpecificCharacterSet"] == "ISO_IR 100" for s in studies)
    _, series = orthanc.query("Series", {"StudyInstanceUID": data.study, "Modality": "",
                                         "SeriesNumber": "",
                                         "NumberOfSeriesRelatedInstances": ""})
    assert sorted((s["SeriesInstanceUID"], s["Modality"], s["SeriesNumber"],
                   s["NumberOfSeriesRelatedInstances"]) for s in series) == sorted([
        (data.ct_series, "CT", "1", "2"), (data.mr_series, "MR", "2", "2")])
    _, images = orthanc.query("Instance", {"StudyInstanceUID": data.study,
                                           "SeriesInstanceUID": data.ct_series,
                                           "InstanceNumber": "", "SOPClassUID": ""})
    assert sorted((i["SOPInstanceUID"], i["InstanceNumber"], i["SOPClassUID"])
                  for i in images) == sorted([(data.ct[0], "1", CT), (data.ct[1], "2", CT)])


def test_orthanc_retrieves_by_c_move(stored: dict[str, Any]) -> None:
    """Orthanc's /retrieve (a C-MOVE to itself) of a study, then of one instance of a series
    found by its /query-series and /query-instances: Orthanc receives them in their stored
    syntaxes."""
    orthanc: Orthanc = stored["orthanc"]
    data: Data = stored["data"]
    for oid in stored["orthanc_ids"]:
        orthanc.call("DELETE", f"/instances/{oid}")
    assert orthanc.held() == {}
    qid, studies = orthanc.query("Study", {"StudyInstanceUID": data.study})
    assert len(studies) == 1
    move = {"TargetAet": "ORTHANC", "Synchronous": True}
    orthanc.call("POST", f"/queries/{qid}/answers/0/retrieve", move)
    assert orthanc.held() == {sop: data.syntax[sop] for sop in data.ct + data.mr}
    for oid in orthanc.call("GET", "/instances"):
        orthanc.call("DELETE", f"/instances/{oid}")
    qid = orthanc.call("POST", "/modalities/archivist/query",
                       {"Level": "Study", "Query": {"PatientID": "QAPEER2"}})["ID"]
    sid = orthanc.call("POST", f"/queries/{qid}/answers/0/query-series", {"Query": {}})["ID"]
    iid = orthanc.call("POST", f"/queries/{sid}/answers/0/query-instances", {"Query": {}})["ID"]
    orthanc.call("POST", f"/queries/{iid}/answers/0/retrieve", move)
    assert list(orthanc.held()) == [s for s in data.syntax
                                    if s not in data.ct + data.mr]


# -- DCMTK tools the other tests do not use ------------------------------------------------------


def qido(server: ServerProcess, path: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.url}/dicomweb/{path}", timeout=30) as rsp:
        body = rsp.read()
    return json.loads(body) if body else []


def test_dcmsend_a_folder_with_a_dicomdir(peers: dict[str, Any]) -> None:
    """dcmsend --scan-directories --recurse --no-halt --decompress-lossless over a folder that
    dcmmkdir indexed: the DICOMDIR is skipped by dcmsend, every object is stored (the JPEG
    lossless one as sent), and an object without a Study Instance UID is refused without
    stopping the others."""
    server: ServerProcess = peers["server"]
    folder = peers["base"] / "dcmsend"
    images = folder / "IMAGES"
    images.mkdir(parents=True)
    study, series = new_uid(), new_uid()
    sops = []
    for i in range(3):
        ds = make_instance(images / f"IM{i}", patient_id="QAPEER3", study_uid=study,
                           series_uid=series, instance_number=i + 1, rows=8, columns=8)
        sops.append(str(ds.SOPInstanceUID))
    subprocess.run([tool("dcmcjpeg"), str(images / "IM0"), str(images / "IM0.J")], check=True,
                   env=ENV)  # JPEG lossless, process 14 SV1
    (images / "IM0").unlink()
    (images / "IM0.J").rename(images / "IM0")
    made = subprocess.run([tool("dcmmkdir"), "+r", "+I", "+id", str(folder), "IMAGES"],
                          cwd=folder, capture_output=True, text=True, env=ENV, check=False)
    assert (folder / "DICOMDIR").exists(), made.stderr
    bad = make_instance(images / "BAD", patient_id="QAPEER3", series_uid=new_uid())
    ds = pydicom.dcmread(images / "BAD")
    del ds.StudyInstanceUID
    ds.save_as(images / "BAD")
    result = run("dcmsend", "-v", "-aec", AET, "--scan-directories", "--recurse", "--no-halt",
                 "--decompress-lossless", "127.0.0.1", str(server.dicom_port), str(folder))
    out = result.stdout + result.stderr
    assert "with status SUCCESS  : 3" in out, out
    assert "with status ERROR    : 1" in out, out
    held = {i["00080018"]["Value"][0] for i in qido(server, f"studies/{study}/instances")}
    assert held == set(sops)
    assert not qido(server, f"instances?SOPInstanceUID={bad.SOPInstanceUID}")
    assert stored_syntax(server, study, series, sops[0]) == "1.2.840.10008.1.2.4.70"


def test_movescu_patient_root_to_dcmrecv(stored: dict[str, Any]) -> None:
    """movescu -P at PATIENT and IMAGE level, dcmrecv the destination; a Patient ID that does
    not own the series moves nothing."""
    server: ServerProcess = stored["server"]
    data: Data = stored["data"]
    received: Path = stored["received"]
    port = str(server.dicom_port)

    def move(*keys: str) -> set[str]:
        for path in received.iterdir():
            path.unlink()
        args = [a for k in keys for a in ("-k", k)]
        result = run("movescu", "-P", "-aec", AET, "-aem", "DCMRECV", *args, "127.0.0.1", port)
        assert result.returncode == 0, result.stderr
        return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                for p in received.iterdir()}

    assert move("QueryRetrieveLevel=PATIENT", "PatientID=QAPEER1") == set(data.ct + data.mr)
    assert move("QueryRetrieveLevel=IMAGE", "PatientID=QAPEER1",
                f"StudyInstanceUID={data.study}", f"SeriesInstanceUID={data.mr_series}",
                f"SOPInstanceUID={data.mr[1]}") == {data.mr[1]}
    assert move("QueryRetrieveLevel=SERIES", "PatientID=QAPEER2",
                f"StudyInstanceUID={data.study}",
                f"SeriesInstanceUID={data.mr_series}") == set()


def test_getscu_series_and_image_level(stored: dict[str, Any]) -> None:
    """getscu at SERIES level (uncompressed syntaxes only: the compressed objects come
    decompressed) and at IMAGE level with JPEG-LS proposed (+xt: sent as stored)."""
    server: ServerProcess = stored["server"]
    data: Data = stored["data"]
    out = stored["base"] / "getscu"
    out.mkdir()
    port = str(server.dicom_port)
    result = run("getscu", "-S", "-aec", AET, "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
                 "-k", f"StudyInstanceUID={data.study}", "-k",
                 f"SeriesInstanceUID={data.ct_series}", "127.0.0.1", port)
    assert result.returncode == 0, result.stderr
    got = {str(d.SOPInstanceUID): str(d.file_meta.TransferSyntaxUID) for d in
           (pydicom.dcmread(p, stop_before_pixels=True) for p in out.iterdir())}
    assert set(got) == set(data.ct)
    assert set(got.values()) <= {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
    for path in out.iterdir():
        path.unlink()
    result = run("getscu", "-P", "+xt", "-aec", AET, "-od", str(out), "-k",
                 "QueryRetrieveLevel=IMAGE", "-k", "PatientID=QAPEER1", "-k",
                 f"StudyInstanceUID={data.study}", "-k", f"SeriesInstanceUID={data.ct_series}",
                 "-k", f"SOPInstanceUID={data.ct[0]}", "127.0.0.1", port)
    assert result.returncode == 0, result.stderr
    [path] = list(out.iterdir())
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert (str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)) == (
        data.ct[0], data.syntax[data.ct[0]])
