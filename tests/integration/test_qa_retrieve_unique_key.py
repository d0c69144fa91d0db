"""C-MOVE and C-GET need the Unique Key of their Query/Retrieve Level (PS3.4 C.4.2.2.1,
C.4.3.2.1), against a real `archivist serve` (QA finding L2): ``movescu -k
QueryRetrieveLevel=STUDY`` with nothing else moved the whole archive, and ``-k
PatientName=Doe*`` every study of those patients. Such a retrieve is now refused with 0xA900
(Identifier does not match SOP Class) and an Error Comment, as dcm4chee does; one UID, a list of
UIDs, and one Patient ID at PATIENT level still retrieve."""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.net import wait_listening
from archivist.testing.server import ServerProcess, free_port
from conftest import dcmtk_tool

pytestmark = pytest.mark.timeout(240)

AET = "ARCHIVIST"
DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    """Two patients: QAUK1 with two studies of two instances, QAUK2 with one of one."""
    root = tmp_path_factory.mktemp("qauk")
    dest_port = free_port()
    srv = ServerProcess(root / "data", extra_args=["--peer", f"QADEST=127.0.0.1:{dest_port}"])
    srv.start()
    files, uids = [], {"studies": [], "dest_port": dest_port, "root": root}
    for pid, n_studies, n_images in (("QAUK1", 2, 2), ("QAUK2", 1, 1)):
        for _ in range(n_studies):
            study, series = new_uid(), new_uid()
            uids["studies"].append((pid, study, series))
            for i in range(n_images):
                p = root / f"{len(files)}.dcm"
                make_instance(p, study_uid=study, series_uid=series, patient_id=pid,
                              patient_name="DOE^QA", instance_number=i + 1)
                files.append(str(p))
    r = subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1", str(srv.dicom_port),
                        *files], check=False, capture_output=True, text=True, timeout=120,
                       env=DCMTK_ENV)
    assert r.returncode == 0, r.stderr
    yield srv, uids
    srv.stop()


def _get(srv: ServerProcess, model: str, **keys: object) -> tuple[int, str, int, int]:
    """C-GET with pynetdicom: (final status, Error Comment, completed, objects received)."""
    received: list[str] = []

    def on_store(event: object) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))  # type: ignore[attr-defined]
        return 0

    ae = AE(ae_title="QAGET")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model)
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    ident = Dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about '*' in a UI value
        for k, v in keys.items():
            setattr(ident, k, v)
    try:
        responses = list(assoc.send_c_get(ident, model))
    finally:
        assoc.release()
    final = responses[-1][0]
    return (int(final.Status), str(final.get("ErrorComment", "")),
            int(final.get("NumberOfCompletedSuboperations", 0) or 0), len(received))


STUDY_GET = StudyRootQueryRetrieveInformationModelGet
PATIENT_GET = PatientRootQueryRetrieveInformationModelGet


@pytest.mark.parametrize(("model", "keys", "comment"), [
    (STUDY_GET, {"QueryRetrieveLevel": "STUDY"}, "Missing Study Instance UID"),
    (STUDY_GET, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""},
     "Missing Study Instance UID"),
    (STUDY_GET, {"QueryRetrieveLevel": "STUDY", "PatientName": "DOE*"},
     "Missing Study Instance UID"),
    (STUDY_GET, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "*"},
     "Missing Study Instance UID"),
    (STUDY_GET, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2*"},
     "Study Instance UID to retrieve: one UID or a list of UIDs"),
    (STUDY_GET, {"QueryRetrieveLevel": "SERIES", "PatientID": "QAUK1"},
     "Missing Series Instance UID"),
    (STUDY_GET, {"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": ""},
     "Missing SOP Instance UID"),
    (PATIENT_GET, {"QueryRetrieveLevel": "PATIENT"}, "Missing Patient ID"),
    (PATIENT_GET, {"QueryRetrieveLevel": "PATIENT", "PatientID": "QAUK*"},
     "Patient ID to retrieve: one value"),
    (PATIENT_GET, {"QueryRetrieveLevel": "PATIENT", "PatientID": "QAUK1\\QAUK2"},
     "Patient ID to retrieve: one value"),
])
def test_get_without_the_unique_key_is_refused(archive, model, keys, comment) -> None:  # type: ignore[no-untyped-def]
    srv, _ = archive
    status, error, completed, received = _get(srv, model, **keys)
    assert (hex(status), completed, received) == ("0xa900", 0, 0)
    assert error.startswith(comment), error


def test_get_by_unique_keys_still_works(archive) -> None:  # type: ignore[no-untyped-def]
    srv, uids = archive
    (p1, s1, se1), (_, s2, _), (_, s3, _) = uids["studies"]
    # A list of Study Instance UIDs.
    assert _get(srv, STUDY_GET, QueryRetrieveLevel="STUDY",
                StudyInstanceUID=f"{s1}\\{s3}")[::2] == (0, 3)
    # SERIES level with the series UID only (the study's key is not required).
    assert _get(srv, STUDY_GET, QueryRetrieveLevel="SERIES", SeriesInstanceUID=se1)[::2] == (0, 2)
    # Patient Root: one Patient ID at PATIENT level; a Study UID at STUDY level.
    assert _get(srv, PATIENT_GET, QueryRetrieveLevel="PATIENT", PatientID=p1)[::2] == (0, 4)
    assert _get(srv, PATIENT_GET, QueryRetrieveLevel="STUDY", StudyInstanceUID=s2,
                PatientID=p1)[::2] == (0, 2)


def test_movescu_with_an_empty_identifier_moves_nothing(archive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv, uids = archive
    out = tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen([dcmtk_tool("storescp"), "-aet", "QADEST", "-od", str(out),
                            str(uids["dest_port"])], env=DCMTK_ENV)
    try:
        wait_listening(uids["dest_port"], scp, what="storescp")
        r = subprocess.run([dcmtk_tool("movescu"), "-v", "-S", "-aec", AET, "-aem", "QADEST",
                            "-k", "QueryRetrieveLevel=STUDY", "127.0.0.1", str(srv.dicom_port)],
                           check=False, capture_output=True, text=True, timeout=120,
                           env=DCMTK_ENV)
        text = (r.stdout + r.stderr).lower()
        # DCMTK names 0xA900 after its C-STORE meaning ("DatasetDoesNotMatchSOPClass").
        assert "error status (error: datasetdoesnotmatchsopclass)" in text, text
        assert list(out.iterdir()) == []
        # pynetdicom: the status and its Error Comment; then a move by UID still moves.
        ae = AE(ae_title="QAMOVE")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
        assert assoc.is_established
        try:
            ident = Dataset()
            ident.QueryRetrieveLevel = "STUDY"
            ident.PatientName = "DOE*"
            final = list(assoc.send_c_move(ident, "QADEST",
                                           StudyRootQueryRetrieveInformationModelMove))[-1][0]
            assert (final.Status, final.ErrorComment) == (
                0xA900, "Missing Study Instance UID, the unique key of STUDY level")
            ident.StudyInstanceUID = uids["studies"][2][1]
            final = list(assoc.send_c_move(ident, "QADEST",
                                           StudyRootQueryRetrieveInformationModelMove))[-1][0]
            assert (final.Status, final.NumberOfCompletedSuboperations) == (0, 1)
        finally:
            assoc.release()
        assert len(list(out.iterdir())) == 1
    finally:
        scp.terminate()
        scp.wait(10)
