"""dicomweb-client's retrieve and store methods against a real server (QA, s20).

- A study or series asked for in a transfer syntax that needs the pixels decoded or coded
  was a 200 without the instances whose stored pixel data shows it cannot be: a JPEG 2000
  frame whose SIZ declares another size than the data set, native Pixel Data shorter than
  its frames. They were left out once the body had started (logged only), so
  ``retrieve_study(..., media_types=(("application/dicom", RLE),))`` silently returned fewer
  data sets. They are now found before the response starts and named in the 206's Warning
  (PS3.18 Table 10.4.3-1), as the header-only refusals already were.
- A frame of native Pixel Data shorter than Rows x Columns x Samples x Bits Allocated, with
  an element after it in the file (MR_small.dcm ends with Data Set Trailing Padding), came
  back whole, its last bytes those of the next element (``retrieve_instance_frames`` gave
  8192 bytes ending in ``fc ff fc ff 4f 42``), and was rendered from them. It is now the
  404 / 406 the same file without anything after its Pixel Data gets.
- The Failed SOP Sequence items of a STOW-RS response put Error Comment (0000,0902) after
  Failure Reason (0008,1197): attributes of a DICOM JSON object are in ascending tag order
  (PS3.18 F.2.2).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from archivist.testing.datasets import new_uid, pydicom_test_file
from archivist.testing.server import ServerProcess

RLE = "1.2.840.10008.1.2.5"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("dwclient-retrieve")
    srv = ServerProcess(tmp / "data", extra_args=["--workers", "1"],
                        env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    yield f"{srv.url}/dicomweb"
    srv.stop()


def _copy(name: str, study: str) -> Dataset:
    path = pydicom_test_file(name)
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, new_uid(), new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def test_undecodable_instances_are_named_in_a_206(base: str, tmp_path: Path) -> None:
    client = DICOMwebClient(base)
    study = new_uid()
    good = _copy("MR_small.dcm", study)
    short = _copy("MR_small.dcm", study)
    short.PixelData = short.PixelData[:-64]  # one row short of Rows x Columns x 2 bytes
    lying = _copy("MR_small_jp2klossless.dcm", study)
    lying.Rows = 32  # the code stream's SIZ says 64 x 64
    result = client.store_instances([good, short, lying])
    assert "FailedSOPSequence" not in result

    r = requests.get(f"{base}/studies/{study}", timeout=60, headers={
        "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={RLE}'})
    assert r.status_code == 206, r.headers
    warning = r.headers["warning"]
    assert warning.startswith("299 ") and "2 of 3 instances are not included" in warning
    assert short.SOPInstanceUID in warning and lying.SOPInstanceUID in warning

    got = client.retrieve_study(study, media_types=(("application/dicom", RLE),))
    assert [ds.SOPInstanceUID for ds in got] == [good.SOPInstanceUID]
    assert got[0].file_meta.TransferSyntaxUID == RLE
    # Each alone is a readable 406; as stored all three come back.
    with pytest.raises(requests.HTTPError) as info:
        client.retrieve_instance(study, lying.SeriesInstanceUID, lying.SOPInstanceUID,
                                 media_types=(("application/dicom", RLE),))
    assert info.value.response.status_code == 406
    assert "SIZ" in info.value.response.text or "declares" in info.value.response.text
    assert len(client.retrieve_study(study)) == 3


def test_short_native_pixel_data_is_not_padded_with_the_next_element(base: str) -> None:
    client = DICOMwebClient(base)
    study = new_uid()
    short = _copy("MR_small.dcm", study)
    short.PixelData = short.PixelData[:-64]
    assert 0xFFFCFFFC in short  # Data Set Trailing Padding follows the Pixel Data
    client.store_instances([short])
    uids = (study, short.SeriesInstanceUID, short.SOPInstanceUID)
    for media in ("application/octet-stream", ("application/octet-stream", "*")):
        with pytest.raises(requests.HTTPError) as info:
            client.retrieve_instance_frames(*uids, [1], media_types=(media,))
        assert info.value.response.status_code == 404
        assert "shorter than Rows x Columns" in info.value.response.text
    url = f"{base}/studies/{study}/series/{uids[1]}/instances/{uids[2]}"
    for path in ("/rendered", "/frames/1/rendered", "/thumbnail"):
        r = requests.get(url + path, timeout=30)
        assert r.status_code == 406 and "not in the stored Pixel Data" in r.text, (path, r.text)
    # The value itself is still served as stored.
    (value,) = client.retrieve_bulkdata(f"{url}/bulkdata/7FE00010",
                                        media_types=("application/octet-stream",))
    assert value == short.PixelData


def test_stow_failed_items_are_in_tag_order(base: str) -> None:
    client = DICOMwebClient(base)
    bodies: list[str] = []
    client._session.hooks["response"].append(lambda r, *a, **k: bodies.append(r.text))
    study = new_uid()
    result = client.store_instances([_copy("CT_small.dcm", study), _copy("CT_small.dcm", new_uid())],
                                    study_instance_uid=study)
    assert "FailedSOPSequence" in result and "ReferencedSOPSequence" in result

    def in_order(dataset: dict[str, dict]) -> None:  # type: ignore[type-arg]
        assert list(dataset) == sorted(dataset)
        for element in dataset.values():
            if element["vr"] == "SQ":
                for item in element.get("Value", []):
                    in_order(item)

    body = json.loads(bodies[-1])
    (failed,) = body["00081198"]["Value"]
    assert "00000902" in failed
    in_order(body)
