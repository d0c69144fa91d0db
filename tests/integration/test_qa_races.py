"""A C-GET while the instances it retrieves are being sent again (QA, concurrency; duplicate
policy ``replace``).

Found with concurrent clients: C-GETs of a study ended 0xB000 with failed sub-operations (the
log said "stored instance ... was deleted meanwhile") while a modality sent the same
instances again. The replacing store deletes the old blob once the index names the new one;
the C-GET had found the old row and failed to open it, although the instance was stored all
along. It must be sent, as its new copy.

Deterministic: the client re-sends the third instance (DCMTK storescu) while it handles the
first sub-operation, before answering it: the archive has found all three rows by then (and
reads one sub-operation ahead, the second), and reads the third only after that answer.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

from .conftest import dcmtk_tool

AET = "ARCHIVIST"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("races") / "data"
    srv = ServerProcess(data, extra_args=["--workers", "1", "--duplicates", "replace"]).start()
    yield srv
    srv.stop()


def _storescu(server: ServerProcess, *paths: Path) -> None:
    subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1", str(server.dicom_port),
                    *map(str, paths)], check=True, capture_output=True, timeout=60,
                   env={**os.environ, "TCP_NODELAY": "1"})


def test_c_get_sends_an_instance_replaced_while_it_runs(server: ServerProcess,
                                                        tmp_path: Path) -> None:
    study, series = new_uid(), new_uid()
    first, second, third, third_again = (tmp_path / f"{n}.dcm" for n in ("1", "2", "3", "3b"))
    make_instance(first, study_uid=study, series_uid=series, instance_number=1)
    make_instance(second, study_uid=study, series_uid=series, instance_number=2)
    sop = new_uid()
    make_instance(third, study_uid=study, series_uid=series, sop_uid=sop, instance_number=3,
                  study_description="first copy")
    make_instance(third_again, study_uid=study, series_uid=series, sop_uid=sop,
                  instance_number=3, study_description="second copy")
    _storescu(server, first, second, third)

    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        if not received:  # the archive has found the three instances: send the third again
            _storescu(server, third_again)
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="RACEGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=AET,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    final = None
    try:
        for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            if status is not None and status.Status not in (0xFF00, 0xFF01):
                final = status
    finally:
        assoc.release()

    assert final is not None
    assert (final.Status, final.get("NumberOfFailedSuboperations", 0)) == (0x0000, 0), \
        server.log()[-2000:]
    assert int(final.NumberOfCompletedSuboperations) == 3
    assert str(received[2].SOPInstanceUID) == sop
    assert received[2].StudyDescription == "second copy"
