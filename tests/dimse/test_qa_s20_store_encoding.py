"""QA (session 20): a C-STORE data set must be encoded as its presentation context says.

A requestor that sends an Implicit VR Little Endian data set on a context accepted with Explicit
VR Little Endian (or the other way round) was answered Success: ingest parses with pydicom,
which reads the other VR encoding without complaint, so the object was indexed and then kept
under a File Meta naming the context's syntax. No other reader could parse that file: DCMTK's
``dcmdump`` stops at the first element, and ``getscu`` of the study aborted the association
("DIMSE receiveDataSetInMemory: dset->read() Failed (Invalid stream)"). Such a store is now
refused with 0xC000 and an Error Comment naming the mismatch; nothing is stored, and the
association goes on.

The requestor is pynetdicom sending a file's bytes as they are (``STORE_SEND_CHUNKED_DATASET``):
the File Meta names one syntax, the data set is written in the other, as a device that copies
a File Meta from elsewhere does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from archivist.dimse.acceptor_pdu import file_meta_prefix
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("s20-encoding") / "data",
                        extra_args=["--workers", "1"])
    srv.start()
    yield srv
    srv.stop()


def _file(path: Path, *, meta_syntax: str, implicit_data: bool) -> Dataset:
    """A Part 10 file whose File Meta names `meta_syntax` and whose data set is encoded in
    implicit (or explicit) VR little endian, whatever that says."""
    ds = make_instance(path, patient_id="S20-ENC", sop_uid=new_uid())
    body = encode(ds, implicit_data, True)
    assert body is not None
    path.write_bytes(file_meta_prefix(CTImageStorage, ds.SOPInstanceUID, meta_syntax) + body)
    return ds


def _stored(server: ServerProcess, sop_uid: str) -> int:
    ae = AE(ae_title="S20FIND")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.SOPInstanceUID = sop_uid
    try:
        return sum(1 for status, _ in assoc.send_c_find(
            q, StudyRootQueryRetrieveInformationModelFind)
                   if status is not None and status.Status in (0xFF00, 0xFF01))
    finally:
        assoc.release()


@pytest.mark.parametrize(("meta_syntax", "implicit_data", "comment"), [
    (ExplicitVRLittleEndian, True, "implicit VR, the context's syntax is explicit"),
    (ImplicitVRLittleEndian, False, "explicit VR, the context's syntax is implicit"),
], ids=["implicit-on-explicit", "explicit-on-implicit"])
def test_a_data_set_in_the_other_vr_encoding_is_refused(
        server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        meta_syntax: str, implicit_data: bool, comment: str) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # the bytes as they are
    wrong = _file(tmp_path / "wrong.dcm", meta_syntax=meta_syntax, implicit_data=implicit_data)
    right = _file(tmp_path / "right.dcm", meta_syntax=meta_syntax,
                  implicit_data=meta_syntax == ImplicitVRLittleEndian)
    ae = AE(ae_title="S20STORE")
    ae.add_requested_context(CTImageStorage, [meta_syntax])
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        refused = assoc.send_c_store(tmp_path / "wrong.dcm")
        stored = assoc.send_c_store(tmp_path / "right.dcm")  # the association goes on
    finally:
        assoc.release()
    assert hex(refused.Status) == hex(0xC000)
    assert comment in str(refused.get("ErrorComment", ""))
    assert hex(stored.Status) == hex(0x0000)
    assert _stored(server, wrong.SOPInstanceUID) == 0
    assert _stored(server, right.SOPInstanceUID) == 1
