"""C-MOVE and C-GET retrieve what their Unique Keys name, whatever else the Identifier carries
(PS3.4 C.4.2.3.1, C.4.3.3.1: the SCP identifies the entities to transfer "based upon the values
in the Unique Keys"), against a real `archivist serve` (QA round 3, retrieve).

Before, every key of the Identifier was matched as in a C-FIND: ``movescu -k
StudyInstanceUID=<uid> -k PatientName=<an old name>`` moved nothing and answered Success with
0 sub-operations; ``-k Modality=MR`` at STUDY level moved only the MR series (the C-FIND
extension that matches Modality against the study's series); a Series Instance UID at STUDY level
moved one series of the study. Orthanc, with the same data, retrieves the whole study in each
case. The Unique Keys of the levels above still narrow a retrieve (Patient Root).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess, free_port
from conftest import dcmtk_tool

pytestmark = pytest.mark.timeout(240)

AET = "ARCHIVIST"
DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}
STUDY_GET = StudyRootQueryRetrieveInformationModelGet
PATIENT_GET = PatientRootQueryRetrieveInformationModelGet


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    """One study of patient QARK1: a CT series of 3 and an MR series of 2."""
    root = tmp_path_factory.mktemp("qark")
    dest_port = free_port()
    srv = ServerProcess(root / "data", extra_args=["--peer", f"QARKDEST=127.0.0.1:{dest_port}"])
    srv.start()
    study, ct, mr = new_uid(), new_uid(), new_uid()
    files = []
    for series, modality, n in ((ct, "CT", 3), (mr, "MR", 2)):
        for i in range(n):
            p = root / f"{len(files)}.dcm"
            make_instance(p, study_uid=study, series_uid=series, patient_id="QARK1",
                          patient_name="KEYS^QA", modality=modality, study_date="20230514",
                          instance_number=i + 1)
            files.append(str(p))
    r = subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1", str(srv.dicom_port),
                        *files], check=False, capture_output=True, text=True, timeout=120,
                       env=DCMTK_ENV)
    assert r.returncode == 0, r.stderr
    yield srv, {"study": study, "ct": ct, "mr": mr, "dest_port": dest_port}
    srv.stop()


def _get(srv: ServerProcess, model: str, **keys: object) -> tuple[int, int, int]:
    """C-GET with pynetdicom: (final status, completed sub-operations, objects received)."""
    received: list[str] = []

    def on_store(event: object) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))  # type: ignore[attr-defined]
        return 0

    ae = AE(ae_title="QARKGET")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET,
                         ext_neg=[build_role(CTImageStorage, scp_role=True),
                                  build_role(MRImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    ident = Dataset()
    for k, v in keys.items():
        setattr(ident, k, v)
    try:
        responses = list(assoc.send_c_get(ident, model))
    finally:
        assoc.release()
    final = responses[-1][0]
    return (int(final.Status), int(final.get("NumberOfCompletedSuboperations", 0) or 0),
            len(received))


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("extra", [
    {"PatientName": "OLD^NAME"},           # a key the study does not match
    {"StudyDate": "19990101"},
    {"Modality": "MR"},                    # C-FIND matches it against the study's series
    {"AccessionNumber": "NOPE", "StudyDescription": "other"},
    {"AdditionalPatientHistory": '""'},    # a key C-FIND refuses (0xA900)
    {"PatientID": "SOMEONE-ELSE"},         # not a Unique Key of the Study Root model
], ids=["name", "date", "modality", "accession", "refused-find-key", "study-root-patient-id"])
def test_study_retrieve_ignores_keys_that_are_not_unique(archive, extra) -> None:  # type: ignore[no-untyped-def]
    srv, uids = archive
    assert _get(srv, STUDY_GET, QueryRetrieveLevel="STUDY", StudyInstanceUID=uids["study"],
                **extra) == (0, 5, 5)


def test_lower_level_unique_key_does_not_narrow(archive) -> None:  # type: ignore[no-untyped-def]
    srv, uids = archive
    # STUDY level: the Series Instance UID is a key of a lower level, not what is retrieved.
    assert _get(srv, STUDY_GET, QueryRetrieveLevel="STUDY", StudyInstanceUID=uids["study"],
                SeriesInstanceUID=uids["mr"]) == (0, 5, 5)
    # SERIES level still retrieves the series, whatever Modality says.
    assert _get(srv, STUDY_GET, QueryRetrieveLevel="SERIES", SeriesInstanceUID=uids["mr"],
                Modality="CT") == (0, 2, 2)


def test_unique_keys_of_the_levels_above_still_narrow(archive) -> None:  # type: ignore[no-untyped-def]
    srv, uids = archive
    assert _get(srv, PATIENT_GET, QueryRetrieveLevel="STUDY", PatientID="QARK1",
                StudyInstanceUID=uids["study"], PatientName="OLD^NAME") == (0, 5, 5)
    assert _get(srv, PATIENT_GET, QueryRetrieveLevel="STUDY", PatientID="OTHER",
                StudyInstanceUID=uids["study"]) == (0, 0, 0)
    assert _get(srv, STUDY_GET, QueryRetrieveLevel="SERIES", StudyInstanceUID=new_uid(),
                SeriesInstanceUID=uids["ct"]) == (0, 0, 0)


def test_movescu_with_a_patient_name_moves_the_study(archive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """DCMTK movescu with the keys of a C-FIND template (`-k PatientName=...`)."""
    srv, uids = archive
    out = tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen([dcmtk_tool("storescp"), "-aet", "QARKDEST", "-od", str(out),
                            str(uids["dest_port"])], env=DCMTK_ENV)
    try:
        _wait_listening(uids["dest_port"])
        r = subprocess.run([dcmtk_tool("movescu"), "-S", "-aec", AET, "-aem", "QARKDEST",
                            "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=OLD^NAME",
                            "-k", "ModalitiesInStudy=CT", "-k",
                            f"StudyInstanceUID={uids['study']}", "127.0.0.1",
                            str(srv.dicom_port)],
                           check=False, capture_output=True, text=True, timeout=120,
                           env=DCMTK_ENV)
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(list(out.iterdir())) == 5
    finally:
        scp.terminate()
        scp.wait(10)


def test_move_to_the_peer_answers_counts_in_every_response(archive) -> None:  # type: ignore[no-untyped-def]
    """Pending responses count down (Remaining + Completed = 5 in each), the final one has no
    Remaining and no Identifier; the destination is told the Move Originator."""
    srv, uids = archive
    got: list[tuple[str, str, int]] = []

    def on_store(event: object) -> int:
        req = event.request  # type: ignore[attr-defined]
        got.append((str(req.AffectedSOPInstanceUID), str(req.MoveOriginatorApplicationEntityTitle),
                    int(req.MoveOriginatorMessageID)))
        return 0

    dest = AE(ae_title="QARKDEST")
    for sop_class in (CTImageStorage, MRImageStorage):
        dest.add_supported_context(sop_class, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    server = dest.start_server(("127.0.0.1", uids["dest_port"]), block=False,
                               evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        ae = AE(ae_title="QARKMOVE")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
        assert assoc.is_established
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = uids["study"]
        ident.Modality = "MR"
        try:
            responses = list(assoc.send_c_move(ident, "QARKDEST",
                                               StudyRootQueryRetrieveInformationModelMove,
                                               msg_id=77))
        finally:
            assoc.release()
    finally:
        server.shutdown()
    *pending, (final, final_ident) = responses
    assert [(int(s.Status), s.NumberOfRemainingSuboperations + s.NumberOfCompletedSuboperations)
            for s, _ in pending] == [(0xFF00, 5)] * 5
    assert [s.NumberOfRemainingSuboperations for s, _ in pending] == [4, 3, 2, 1, 0]
    assert (int(final.Status), final.NumberOfCompletedSuboperations,
            final.NumberOfFailedSuboperations, final.NumberOfWarningSuboperations) == (0, 5, 0, 0)
    assert "NumberOfRemainingSuboperations" not in final and not final_ident
    assert len(got) == 5 and {(a, m) for _, a, m in got} == {("QARKMOVE", 77)}


def test_patient_retrieve_keeps_to_the_issuer(archive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One Patient ID in two issuers is two patients (C-FIND answers both, apart): a retrieve
    naming the issuer sent the other patient's objects too (QA s23)."""
    srv, _ = archive
    files = []
    for n, issuer in enumerate(("HOSP_A", "HOSP_A", "HOSP_B")):
        p = tmp_path / f"{n}.dcm"
        make_instance(p, study_uid=new_uid(), patient_id="QARK2", patient_name=f"ISSUER^{issuer}",
                      extra={"IssuerOfPatientID": issuer})
        files.append(str(p))
    r = subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1", str(srv.dicom_port),
                        *files], check=False, capture_output=True, text=True, timeout=120,
                       env=DCMTK_ENV)
    assert r.returncode == 0, r.stderr
    assert _get(srv, PATIENT_GET, QueryRetrieveLevel="PATIENT", PatientID="QARK2",
                IssuerOfPatientID="HOSP_B") == (0, 1, 1)
    assert _get(srv, PATIENT_GET, QueryRetrieveLevel="PATIENT", PatientID="QARK2",
                IssuerOfPatientID="HOSP_A") == (0, 2, 2)
    assert _get(srv, PATIENT_GET, QueryRetrieveLevel="PATIENT", PatientID="QARK2",
                IssuerOfPatientID="") == (0, 3, 3)
    assert _get(srv, PATIENT_GET, QueryRetrieveLevel="PATIENT", PatientID="QARK2") == (0, 3, 3)
