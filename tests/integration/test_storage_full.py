"""A full disk, for real: the data directory on a small tmpfs, filled over DIMSE and STOW-RS.

What must hold (reliability-security.md): the object that does not fit gets a clear failure
(C-STORE 0xA700 Out of Resources, STOW-RS FailureReason 0xA700), nothing already stored is lost,
no partial file is left, and the server keeps answering.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pynetdicom import AE

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.fs import mount_tmpfs, unmount
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(240)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    reason = mount_tmpfs(mount_point, "12m")
    if reason is not None:
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        unmount(mount_point)


def _instances(tmp_path: Path, n: int, study: str) -> list[pydicom.Dataset]:
    out = []
    for i in range(n):
        path = tmp_path / f"big{i}.dcm"
        make_instance(path, study_uid=study, rows=1024, columns=1024, instance_number=i + 1)
        out.append(pydicom.dcmread(path))
    return out


def test_disk_full_over_dimse_and_stow(small_disk: Path, tmp_path: Path) -> None:
    server = ServerProcess(small_disk / "data")
    server.start()
    try:
        study = new_uid()
        objects = _instances(tmp_path, 14, study)  # 14 x 1 MiB into a 12 MiB file system
        ae = AE(ae_title="FILLER")
        ae.add_requested_context(CT_IMAGE, "1.2.840.10008.1.2.1")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="ARCHIVIST")
        assert assoc.is_established
        statuses = []
        for ds in objects:
            rsp = assoc.send_c_store(ds)
            statuses.append((int(rsp.Status), str(rsp.get("ErrorComment", ""))))
        assoc.release()
        stored = [ds for ds, (st, _) in zip(objects, statuses) if st == 0]
        refused = [(st, comment) for st, comment in statuses if st != 0]
        assert stored, statuses
        assert refused, "the file system never filled up"
        assert all(st == 0xA700 for st, _ in refused), refused
        assert all("space" in comment or "storage" in comment for _, comment in refused), refused

        # The server keeps answering, and everything acknowledged is there, intact.
        echo = AE(ae_title="ECHO")
        echo.add_requested_context("1.2.840.10008.1.1")
        a2 = echo.associate("127.0.0.1", server.dicom_port, ae_title="ARCHIVIST")
        assert a2.is_established and int(a2.send_c_echo().Status) == 0
        a2.release()
        found = requests.get(f"{server.url}/dicomweb/studies/{study}/instances", timeout=30).json()
        assert sorted(i["00080018"]["Value"][0] for i in found) == \
            sorted(str(ds.SOPInstanceUID) for ds in stored)
        first = stored[0]
        r = requests.get(
            f"{server.url}/dicomweb/studies/{study}/series/{first.SeriesInstanceUID}/instances/"
            f"{first.SOPInstanceUID}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            timeout=30)
        assert r.status_code == 200 and first.PixelData in r.content

        # STOW-RS into the full disk.
        buf = io.BytesIO()
        objects[-1].save_as(buf, enforce_file_format=True)
        body = (b"--B\r\nContent-Type: application/dicom\r\n\r\n" + buf.getvalue()
                + b"\r\n--B--\r\n")
        r = requests.post(f"{server.url}/dicomweb/studies", data=body, timeout=30, headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=B'})
        # Where the disk runs out decides the answer: while the part is received (507
        # Insufficient Storage, a readable error) or when it is stored (409, 0xA700 for the part).
        assert r.status_code in (409, 507), r.text
        if r.status_code == 409:
            assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]
        else:
            assert "No space left" in r.json()["error"]
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
        tmp_dir = small_disk / "data" / "tmp"
        leftovers = [p for p in tmp_dir.rglob("*") if p.is_file()] if tmp_dir.exists() else []
        assert leftovers == [], leftovers
    finally:
        server.stop()
