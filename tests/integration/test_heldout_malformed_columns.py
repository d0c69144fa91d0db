"""A malformed Columns beside Pixel Data, sent to a real ``archivist serve``: findings, not a crash.

The validator used to raise on such objects (a US value of odd length could not be decoded); on
ingest that left the object unvalidated even under ``validation_policy=reject``. Each variant is
sent by C-STORE (pynetdicom, the bytes as they are) and must be either stored with the validation
findings kept, or refused with a failure status and a readable Error Comment; under ``reject``
none is stored.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pydicom
import pytest
import requests
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from archivist.testing.datasets import pydicom_test_file
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(120)

COLUMNS = Tag(0x00280011)

# name -> (VR, raw value); None removes Columns
VARIANTS: dict[str, tuple[str, bytes] | None] = {
    "missing": None,
    "zero": ("US", b"\x00\x00"),
    "odd-length": ("US", b"\x80\x00\x00"),
    "text-as-IS": ("IS", b"abc "),
    "negative-SS": ("SS", b"\xff\xff"),
    "two-values": ("US", b"\x80\x00\x80\x00"),
    "empty": ("US", b""),
}


def _variant(name: str) -> Dataset:
    path = pydicom_test_file("CT_small.dcm")
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    spec = VARIANTS[name]
    if spec is None:
        del ds[COLUMNS]
    else:
        vr, raw = spec
        ds._dict[COLUMNS] = RawDataElement(COLUMNS, vr, len(raw), raw, 0, False, True)
    return ds


def _c_store(port: int, ds: Dataset) -> Dataset:
    ae = AE(ae_title="MALFORMED")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status is not None and "Status" in status, "no C-STORE response"
    return status  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=["warn", "reject"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    policy = request.param
    srv = ServerProcess(tmp_path_factory.mktemp(f"columns-{policy}") / "data",
                        env={"ARCHIVIST_VALIDATION_POLICY": policy})
    srv.start()
    try:
        yield srv, policy
    finally:
        log = srv.log()
        srv.stop()
        assert "validator failed" not in log, "the validator raised on a malformed Columns"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_malformed_columns_is_reported(server: tuple[ServerProcess, str], name: str) -> None:
    srv, policy = server
    ds = _variant(name)
    status = _c_store(srv.dicom_port, ds)
    code = int(status.Status)
    r = requests.get(f"{srv.url}/api/instances/{ds.SOPInstanceUID}/validation", timeout=10)
    if code in (0x0000, 0xB000, 0xB006, 0xB007):
        assert policy == "warn", f"{name}: stored under reject"
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["validated"] is True, report
        assert report["errors"] >= 1, report
        # the attribute itself, or (Columns 0) the Pixel Data length it no longer explains
        assert any("Columns" in f["path"] or f["rule_id"] == "encoding.pixel-data-length"
                   for f in report["findings"]), report
    else:
        assert code & 0xF000 in (0xA000, 0xC000), hex(code)
        assert str(status.get("ErrorComment", "")).strip(), f"{name}: no Error Comment"
        assert r.status_code == 404, r.text
    assert srv.healthy()
