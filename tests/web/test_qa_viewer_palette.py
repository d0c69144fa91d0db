"""Palette colour images stored big endian render in their own colours.

The viewer's study browser shows ``/thumbnail`` images, and ``/rendered`` serves the same
pictures. For a PALETTE COLOR image in Explicit VR Big Endian with 16-bit LUT entries, the
archive coloured it through pydicom's ``apply_color_lut``, which reads (non-segmented) Palette
Color Lookup Table Data in the machine's byte order whatever the transfer syntax: every colour
came out with its two bytes exchanged (a red of 32000 became 125). The frames and the LUT bulk
data the viewer itself reads were right (they are swapped to little endian), so the thumbnail
and the image disagreed. The same image stored little endian is the reference. A real
``archivist serve``, one STOW-RS, plain HTTP.
"""

from __future__ import annotations

import io
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

from archivist.testing.server import ServerProcess

ENTRIES = 4096
#: The LUTs: red rises, green falls, blue is a V; 16-bit entries (Descriptor [4096, 0, 16]).
LUT = {"Red": np.arange(ENTRIES) * 16, "Green": (ENTRIES - 1 - np.arange(ENTRIES)) * 16,
       "Blue": np.abs(2048 - np.arange(ENTRIES)) * 31}


def _palette_image(path: Path, transfer_syntax: str) -> Dataset:
    order = ">u2" if transfer_syntax == ExplicitVRBigEndian else "<u2"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = "PALETTE^SIXTEEN", "QA-PALETTE"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ConversionType, ds.SeriesNumber, ds.InstanceNumber = "OT", "WSD", 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = \
        1, "PALETTE COLOR", 64, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for colour, values in LUT.items():
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [ENTRIES, 0, 16])
        # Raw bytes are written as given: in the transfer syntax's byte order.
        setattr(ds, f"{colour}PaletteColorLookupTableData", values.astype(order).tobytes())
    ds.PixelData = np.full((64, 64), 2000, dtype=order).tobytes()  # one index everywhere
    ds.save_as(path, enforce_file_format=True)
    return ds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    tmp = tmp_path_factory.mktemp("palette")
    images = {ts: _palette_image(tmp / f"{n}.dcm", ts)
              for n, ts in enumerate((ExplicitVRLittleEndian, ExplicitVRBigEndian))}
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "none")})
    srv.start()
    try:
        boundary = uuid.uuid4().hex
        body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                        + (tmp / f"{n}.dcm").read_bytes() + b"\r\n" for n in range(2))
        req = urllib.request.Request(
            srv.url + "/dicomweb/studies", data=body + f"--{boundary}--\r\n".encode(),
            method="POST", headers={"Content-Type": f'multipart/related; '
                                    f'type="application/dicom"; boundary={boundary}'})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
        yield srv, images
    finally:
        srv.stop()


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("resource", ["/rendered?accept=image/png", "/thumbnail?accept=image/png"])
def test_palette_colours_whatever_the_byte_order(server: tuple[ServerProcess, dict],
                                                 transfer_syntax: str, resource: str) -> None:
    srv, images = server
    ds = images[transfer_syntax]
    url = (f"{srv.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}{resource}")
    with urllib.request.urlopen(url, timeout=30) as resp:
        rgb = np.asarray(Image.open(io.BytesIO(resp.read())).convert("RGB"))
    want = np.array([LUT[c][2000] * 255 / 65535 for c in ("Red", "Green", "Blue")])  # to 8 bits
    got = rgb[rgb.shape[0] // 2, rgb.shape[1] // 2]
    assert np.abs(got - want).max() <= 1, (got.tolist(), want.round().tolist())
