"""QA (session 20): a C-MOVE to a destination that is not a configured peer is answered 0xA801
(Refused: Move Destination unknown, PS3.4 C.4.2.1.5) with an Error Comment naming it; it came
with none, so a user of DCMTK's ``movescu`` or of a viewer saw no hint that ``--peer`` is what is
missing. DCMTK ``movescu`` against a real ``archivist serve``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelMove,
)

from archivist.testing.datasets import new_uid
from archivist.testing.server import ServerProcess

DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("s20-move") / "data",
                        extra_args=["--workers", "1"])
    srv.start()
    yield srv
    srv.stop()


def test_movescu_to_an_unknown_destination_is_told_why(server: ServerProcess) -> None:
    r = subprocess.run(["/usr/bin/movescu", "-v", "-S", "-aec", "ARCHIVIST", "-aem", "NOSUCHNODE",
                        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={new_uid()}",
                        "127.0.0.1", str(server.dicom_port)],
                       check=False, capture_output=True, text=True, timeout=60, env=DCMTK_ENV)
    assert "Refused: MoveDestinationUnknown" in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_error_comment_names_the_destination(server: ServerProcess) -> None:
    ae = AE(ae_title="S20MOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = new_uid()
    try:
        final = [s for s, _ in assoc.send_c_move(q, "NOSUCHNODE",
                                                 StudyRootQueryRetrieveInformationModelMove)
                 if s is not None][-1]
    finally:
        assoc.release()
    assert hex(final.Status) == hex(0xA801)
    assert final.get("ErrorComment") == "Move Destination NOSUCHNODE is not a configured peer"
