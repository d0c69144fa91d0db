"""QA (session 20): the transfer syntax the archive accepts on a context it will send on (C-GET).

DCMTK's ``getscu`` with a lossy preference (``+xy`` JPEG Baseline, ``+xx`` JPEG Extended,
``+xw`` JPEG 2000, ``+xu`` JPEG-LS lossy) proposes, for each Storage SOP Class, one presentation
context listing that syntax first and the uncompressed ones after it, and takes the SCP role for
it. The acceptor took the first syntax it knew, the lossy one, which the archive cannot encode:
every object not stored in that very syntax then failed ("no accepted context"), the C-GET
ending 0xA702 with nothing received. On a context where the requestor takes the SCP role the
acceptor now prefers, in the requestor's order, a syntax it can send any object in; a context
that proposes only a lossy syntax still gets it (objects stored in it go as they are).

Real DCMTK ``getscu`` and a pynetdicom C-GET SCU against a real ``archivist serve``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
)

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

GETSCU, STORESCU = "/usr/bin/getscu", "/usr/bin/storescu"
DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Dataset]]:
    root = tmp_path_factory.mktemp("s20-get")
    srv = ServerProcess(root / "data", extra_args=["--workers", "1"])
    srv.start()
    ds = make_instance(root / "ct.dcm", patient_id="S20-GET", rows=32, columns=32,
                       sop_uid=new_uid())
    r = subprocess.run([STORESCU, "-aec", "ARCHIVIST", "127.0.0.1", str(srv.dicom_port),
                        str(root / "ct.dcm")], check=False, capture_output=True, text=True,
                       timeout=60, env=DCMTK_ENV)
    assert r.returncode == 0, r.stderr
    yield srv, ds
    srv.stop()


@pytest.mark.parametrize("preference", ["+xy", "+xx", "+xw", "+xu"])
def test_getscu_preferring_a_lossy_syntax_receives_an_uncompressed_object(
        stored: tuple[ServerProcess, Dataset], tmp_path: Path, preference: str) -> None:
    srv, sent = stored
    r = subprocess.run([GETSCU, "-v", "-S", preference, "-aec", "ARCHIVIST", "-od", str(tmp_path),
                        "-k", "QueryRetrieveLevel=IMAGE", "-k",
                        f"SOPInstanceUID={sent.SOPInstanceUID}", "127.0.0.1",
                        str(srv.dicom_port)],
                       check=False, capture_output=True, text=True, timeout=60, env=DCMTK_ENV)
    text = r.stdout + r.stderr
    assert "Number of Failed Suboperations    : 0" in text, text
    (path,) = tmp_path.iterdir()
    got = pydicom.dcmread(path)
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(got.pixel_array, sent.pixel_array)


def test_a_context_of_a_lossy_syntax_alone_is_still_accepted_with_it(
        stored: tuple[ServerProcess, Dataset]) -> None:
    srv, sent = stored
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.context.transfer_syntax))
        return 0x0000

    ae = AE(ae_title="S20GET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [JPEGBaseline8Bit])
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST",
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        accepted = sorted(str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
                          if cx.abstract_syntax == CTImageStorage)
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.SOPInstanceUID = sent.SOPInstanceUID
        final = [s for s, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet)
                 if s is not None][-1]
    finally:
        assoc.release()
    assert accepted == sorted([JPEGBaseline8Bit, ExplicitVRLittleEndian])
    assert hex(final.Status) == hex(0x0000)
    assert received == [ExplicitVRLittleEndian]
