"""dicomweb-client's methods against a real `archivist serve`: what a method the DICOMweb
routes do not serve answers.

QA findings:

- ``DICOMwebClient.delete_study/series/instance`` got ``405 {"error": "Method Not Allowed"}``
  with nothing saying that deletion exists, at ``DELETE /api/studies/...``.
- A 405 named the wrong methods in ``Allow``: ``DELETE /dicomweb/studies/{study}`` answered
  ``Allow: POST`` although the resource is also retrieved with GET (RFC 9110 10.2.1: Allow
  lists the methods the target resource supports).
"""

from __future__ import annotations

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from archivist.testing.datasets import new_uid, pydicom_test_file
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("qadwc") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ct(srv: ServerProcess) -> pydicom.Dataset:
    path = pydicom_test_file("CT_small.dcm")
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = new_uid(), new_uid(), new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    result = DICOMwebClient(f"{srv.url}/dicomweb").store_instances([ds])
    assert "FailedSOPSequence" not in result
    return ds


def _methods(allow: str) -> set[str]:
    return {m.strip() for m in allow.split(",") if m.strip()}


def test_client_delete_is_a_readable_405(srv: ServerProcess, ct: pydicom.Dataset) -> None:
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    uids = (ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    calls = [
        (lambda: client.delete_study(uids[0]), f"/api/studies/{uids[0]}", {"GET", "POST"}),
        (lambda: client.delete_series(*uids[:2]), f"/api/studies/{uids[0]}/series/{uids[1]}",
         {"GET"}),
        (lambda: client.delete_instance(*uids),
         f"/api/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}", {"GET"}),
    ]
    for call, api_path, allowed in calls:
        with pytest.raises(requests.HTTPError) as info:
            call()
        response = info.value.response
        assert response.status_code == 405
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert "DELETE" in error and api_path in error, error
        assert allowed <= _methods(response.headers["allow"])
        assert "DELETE" not in _methods(response.headers["allow"])
    # Nothing was deleted.
    assert client.retrieve_instance(*uids).SOPInstanceUID == ct.SOPInstanceUID


@pytest.mark.parametrize("method,suffix,allowed", [
    ("PUT", "", {"GET", "HEAD", "POST"}),
    ("PATCH", "/series/{se}", {"GET", "HEAD"}),
    ("POST", "/series/{se}/metadata", {"GET", "HEAD"}),
    ("PUT", "/series/{se}/instances/{sop}/frames/1", {"GET", "HEAD"}),
])
def test_405_names_every_method_of_the_resource(srv: ServerProcess, ct: pydicom.Dataset,
                                                method: str, suffix: str,
                                                allowed: set[str]) -> None:
    path = f"/dicomweb/studies/{ct.StudyInstanceUID}" + suffix.format(
        se=ct.SeriesInstanceUID, sop=ct.SOPInstanceUID)
    response = requests.request(method, srv.url + path, timeout=30)
    assert response.status_code == 405
    assert _methods(response.headers["allow"]) == allowed
    assert method in response.json()["error"]


def test_search_route_405_and_stow_still_work(srv: ServerProcess, ct: pydicom.Dataset) -> None:
    response = requests.delete(f"{srv.url}/dicomweb/studies", timeout=30)
    assert response.status_code == 405
    assert _methods(response.headers["allow"]) == {"GET", "HEAD", "POST"}
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    found = client.search_for_studies(search_filters={"StudyInstanceUID": ct.StudyInstanceUID})
    assert len(found) == 1


def test_retrieve_bulkdata_with_a_byte_range(srv: ServerProcess, ct: pydicom.Dataset) -> None:
    """dicomweb-client asks for a range of bulk data as multipart/related: the range comes
    in the one part (it was a plain octet-stream, which the client refused)."""
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    url = (f"{srv.url}/dicomweb/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
           f"/instances/{ct.SOPInstanceUID}/bulkdata/7FE00010")
    whole = client.retrieve_bulkdata(url)
    part = client.retrieve_bulkdata(url, byte_range=(10, 99))
    assert whole[0] == ct.PixelData
    assert part == [ct.PixelData[10:100]]


def test_frames_of_a_compressed_instance_with_a_wildcard_image_type(srv: ServerProcess) -> None:
    """image/* matches the stored image/jp2 (it was a 406); frame 0 is a malformed request."""
    path = pydicom_test_file("JPEG2000.dcm")
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = new_uid(), new_uid(), new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    assert "FailedSOPSequence" not in client.store_instances([ds])
    frames = client.retrieve_instance_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1],
        media_types=("image/*",))
    assert len(frames) == 1 and frames[0][:2] == b"\xff\x4f"  # a JPEG 2000 codestream
    base = (f"{srv.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")
    assert requests.get(f"{base}/frames/0", timeout=30).status_code == 400


def test_includefield_all_on_instances_names_the_available_syntax(srv: ServerProcess,
                                                                  ct: pydicom.Dataset) -> None:
    """No File Meta element in a QIDO-RS result: the stored syntax is Available Transfer
    Syntax UID (0008,3002), not Transfer Syntax UID (0002,0010)."""
    found = DICOMwebClient(f"{srv.url}/dicomweb").search_for_instances(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, fields=["all"])
    assert len(found) == 1
    assert "00020010" not in found[0]
    assert found[0]["00083002"]["Value"] == [str(ct.file_meta.TransferSyntaxUID)]


def test_a_study_comes_in_series_and_instance_number_order(srv: ServerProcess,
                                                           tmp_path_factory: pytest.TempPathFactory
                                                           ) -> None:
    """Whatever order the instances were stored in (the same order C-MOVE and C-GET send)."""
    from archivist.testing.datasets import make_instance

    tmp = tmp_path_factory.mktemp("order")
    study, first, second = new_uid(), new_uid(), new_uid()
    sent = []
    for series_uid, series_number, numbers in ((second, 2, (3, 1, 2)), (first, 1, (2, 1))):
        for n in numbers:
            path = tmp / f"{series_number}-{n}.dcm"
            sent.append(make_instance(path, study_uid=study, series_uid=series_uid,
                                      series_number=series_number, instance_number=n))
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    assert "FailedSOPSequence" not in client.store_instances(sent)
    got = client.retrieve_study(study, media_types=(("application/dicom", "*"),))
    assert [(int(d.SeriesNumber), int(d.InstanceNumber)) for d in got] == [
        (1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
