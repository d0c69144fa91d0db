"""C-FIND at STUDY level with Modality (or SOP Class UID), as `findscu -k Modality=CT` is often
written: a series / instance key a hierarchical query would ignore, so every study came back
(the QA pass of session 10). It is matched as Modalities / SOP Classes in Study, as QIDO-RS does
for /studies?Modality=; C-MOVE and C-GET keep their unique keys only."""

from __future__ import annotations

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> tuple[ServerProcess, dict[str, str]]:
    root = tmp_path_factory.mktemp("qamod")
    server = ServerProcess(root / "data")
    server.start()
    studies = {"CT": new_uid(), "MR": new_uid(), "CTMR": new_uid()}
    paths = []
    for name, study in studies.items():
        for modality in ("CT", "MR"):
            if modality in name:
                path = root / f"{name}-{modality}.dcm"
                make_instance(path, study_uid=study, modality=modality, patient_id="QA-MOD",
                              sop_class_uid=MR_IMAGE if modality == "MR" else None)
                paths.append(path)
    DICOMwebClient(f"{server.url}/dicomweb").store_instances([pydicom.dcmread(p) for p in paths])
    yield server, studies
    server.stop()


def _find(port: int, **keys: str) -> set[str]:
    ae = AE(ae_title="QAMOD")
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVIST")
    assert assoc.is_established
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    ds.PatientID = "QA-MOD"
    for k, v in keys.items():
        setattr(ds, k, v)
    found = set()
    try:
        for status, answer in assoc.send_c_find(ds, FIND):
            if status and status.Status in (0xFF00, 0xFF01):
                found.add(str(answer.StudyInstanceUID))
            elif status:
                assert status.Status == 0x0000
    finally:
        assoc.release()
    return found


@pytest.mark.parametrize("keys, wanted", [
    ({"Modality": "CT"}, {"CT", "CTMR"}),
    ({"Modality": "MR"}, {"MR", "CTMR"}),
    ({"Modality": "US"}, set()),
    ({"Modality": "C*"}, {"CT", "CTMR"}),
    ({"SOPClassUID": MR_IMAGE}, {"MR", "CTMR"}),
    ({"Modality": ""}, {"CT", "MR", "CTMR"}),  # a return key: universal
])
def test_study_level_modality_matches_the_studies_modalities(srv, keys, wanted) -> None:  # type: ignore[no-untyped-def]
    server, studies = srv
    assert _find(server.dicom_port, **keys) == {studies[w] for w in wanted}
