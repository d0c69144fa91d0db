"""WADO-RS frames of native objects stored big endian, colour-by-plane, YBR_FULL_422 and Float
Pixel Data: the frame a client gets as application/octet-stream is the little endian frame the
instance's own header describes, whatever the stored transfer syntax."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from tests.integration.conftest import dcmtk_tool

from archivist.testing.server import ServerProcess

STUDY = "1.2.826.0.1.3680043.8.498.4242.1"
OCTET = 'multipart/related; type="application/octet-stream"'


def _dataset(rows: int, cols: int, frames: int, **attrs: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "QAFRAMES", "Frames^QA", "OT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def _planar_rgb(path: Path) -> Path:
    ds = _dataset(3, 5, 2, SamplesPerPixel=3, PhotometricInterpretation="RGB",
                  PlanarConfiguration=1, BitsAllocated=8, BitsStored=8, HighBit=7,
                  PixelRepresentation=0)
    ds.PixelData = np.arange(3 * 5 * 3 * 2, dtype=np.uint8).tobytes()  # planes R, G, B
    ds.save_as(path, enforce_file_format=True)
    return path


def _ybr_422(path: Path) -> Path:
    ds = _dataset(4, 6, 1, SamplesPerPixel=3, PhotometricInterpretation="YBR_FULL_422",
                  PlanarConfiguration=0, BitsAllocated=8, BitsStored=8, HighBit=7,
                  PixelRepresentation=0)
    ds.PixelData = bytes((7 * i) % 256 for i in range(4 * 6 * 2))  # Y1 Y2 Cb Cr per pair
    ds.save_as(path, enforce_file_format=True)
    return path


def _mono16(path: Path) -> Path:
    ds = _dataset(3, 5, 3, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2",
                  BitsAllocated=16, BitsStored=12, HighBit=11, PixelRepresentation=0)
    ds.PixelData = (np.arange(45, dtype="<u2") * 81).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _float(path: Path) -> Path:
    ds = _dataset(4, 3, 2, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2",
                  BitsAllocated=32)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.30"
    ds.FloatPixelData = (np.arange(24, dtype="<f4") - 7.5).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _converted(tool: str, flag: str | None, src: Path, dst: Path) -> Path:
    args = [dcmtk_tool(tool)] + ([flag] if flag else []) + [str(src), str(dst)]
    subprocess.run(args, check=True, capture_output=True)
    ds = pydicom.dcmread(dst)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(dst)  # same transfer syntax, a UID of its own
    return dst


def _stow(url: str, paths: list[Path]) -> None:
    body = b"".join(b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + p.read_bytes()
                    + b"\r\n" for p in paths) + b"--XX--\r\n"
    r = requests.post(f"{url}/dicomweb/studies", data=body, timeout=60, headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=XX'})
    assert r.status_code == 200, r.text


def _frame(url: str, path: Path, number: int) -> bytes:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    r = requests.get(f"{url}/dicomweb/studies/{STUDY}/series/{ds.SeriesInstanceUID}/instances/"
                     f"{ds.SOPInstanceUID}/frames/{number}", headers={"Accept": OCTET},
                     timeout=60)
    assert r.status_code == 200, r.text
    boundary = r.headers["Content-Type"].split("boundary=")[1].strip('"')
    part = r.content.split(b"--" + boundary.encode())[1]
    return part.split(b"\r\n\r\n", 1)[1][:-2]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One server for the module, the objects stored once: the tests only read them."""
    tmp_path = tmp_path_factory.mktemp("frames")
    planar = _planar_rgb(tmp_path / "planar.dcm")
    ybr = _ybr_422(tmp_path / "ybr.dcm")
    mono = _mono16(tmp_path / "mono.dcm")
    files = {
        "planar": planar,
        "planar_be": _converted("dcmconv", "+tb", planar, tmp_path / "planar_be.dcm"),
        "planar_rle": _converted("dcmcrle", None, planar, tmp_path / "planar_rle.dcm"),
        "ybr": ybr,
        "ybr_be": _converted("dcmconv", "+tb", ybr, tmp_path / "ybr_be.dcm"),
        "mono": mono,
        "mono_be": _converted("dcmconv", "+tb", mono, tmp_path / "mono_be.dcm"),
        "float": _float(tmp_path / "float.dcm"),
    }
    srv = ServerProcess(tmp_path / "data").start()
    try:
        _stow(srv.url, list(files.values()))
        yield srv, files
    finally:
        srv.stop()


@pytest.mark.parametrize("name", ["planar_be", "ybr_be", "mono_be"])
def test_big_endian_frames_are_the_little_endian_frames(stored, name: str) -> None:
    srv, files = stored
    native = files[name.removesuffix("_be")]
    frames = int(pydicom.dcmread(native).get("NumberOfFrames", 1))
    for n in range(1, frames + 1):
        assert _frame(srv.url, files[name], n) == _frame(srv.url, native, n)


def test_native_frames_keep_the_header_layout(stored) -> None:
    srv, files = stored
    raw = pydicom.dcmread(files["planar"]).PixelData
    assert _frame(srv.url, files["planar"], 2) == raw[45:90]  # colour-by-plane, as stored
    assert len(_frame(srv.url, files["ybr_be"], 1)) == 4 * 6 * 2  # 4:2:2, two samples a pixel


def test_rle_frames_follow_its_planar_configuration(stored) -> None:
    srv, files = stored
    rle = pydicom.dcmread(files["planar_rle"], stop_before_pixels=True)
    assert rle.PlanarConfiguration == 1  # DCMTK sets it, as PS3.5 G.2 says
    for n in (1, 2):
        assert _frame(srv.url, files["planar_rle"], n) == _frame(srv.url, files["planar"], n)


def test_float_pixel_data_has_frames(stored) -> None:
    srv, files = stored
    values = np.arange(24, dtype="<f4") - 7.5
    assert _frame(srv.url, files["float"], 2) == values[12:].tobytes()


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80"])
def test_colour_by_plane_transcoded_keeps_its_pixels(stored, syntax: str) -> None:
    import io

    srv, files = stored
    for name in ("planar", "planar_be"):
        ds = pydicom.dcmread(files[name])
        r = requests.get(f"{srv.url}/dicomweb/studies/{STUDY}/series/{ds.SeriesInstanceUID}/"
                         f"instances/{ds.SOPInstanceUID}", timeout=60, headers={
                             "Accept": f"application/dicom; transfer-syntax={syntax}"})
        assert r.status_code == 200, r.text
        got = pydicom.dcmread(io.BytesIO(r.content))
        assert str(got.file_meta.TransferSyntaxUID) == syntax
        assert np.array_equal(got.pixel_array, ds.pixel_array), name


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"])
def test_float_pixel_data_is_not_encapsulated(stored, syntax: str) -> None:
    """Float Pixel Data has no encapsulated form: asked for one, a 406 that says so (it was a
    200 with a file claiming RLE around native floats); a native syntax still works."""
    srv, files = stored
    ds = pydicom.dcmread(files["float"], stop_before_pixels=True)
    url = (f"{srv.url}/dicomweb/studies/{STUDY}/series/{ds.SeriesInstanceUID}/instances/"
           f"{ds.SOPInstanceUID}")
    r = requests.get(url, timeout=60,
                     headers={"Accept": f"application/dicom; transfer-syntax={syntax}"})
    assert r.status_code == 406, r.status_code
    assert "Float" in r.json()["error"]
    r = requests.get(url, timeout=60, headers={
        "Accept": "application/dicom; transfer-syntax=1.2.840.10008.1.2"})
    assert r.status_code == 200
