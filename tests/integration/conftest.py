"""Fixtures for integration tests: a real `archivist serve` on loopback, and real DICOM files."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from archivist.testing.datasets import pydicom_test_file
from archivist.testing.server import ServerProcess, free_port

# pydicom's bundled files covering the transfer syntaxes and object kinds the archive must keep.
BUNDLED = [
    "CT_small.dcm",                  # CT, explicit VR little endian
    "MR_small.dcm",                  # MR
    "MR_small_implicit.dcm",         # implicit VR little endian
    "MR_small_bigendian.dcm",        # explicit VR big endian
    "rtdose.dcm",                    # multi-frame
    "SC_rgb_rle_2frame.dcm",         # RGB, RLE, 2 frames
    "SC_rgb_jpeg_dcmtk.dcm",         # JPEG baseline
    "JPGExtended.dcm",               # JPEG extended
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "JPEG2000.dcm",                  # JPEG 2000
    "MR_small_RLE.dcm",              # RLE
    "image_dfl.dcm",                 # deflated explicit VR little endian
    "test-SR.dcm",                   # structured report
]


def dcmtk_tool(tool: str) -> str:
    """Path of a DCMTK tool; pynetdicom installs Python apps of the same names in the venv."""
    venv_bin = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    dirs = [d for d in path.split(os.pathsep) if d and os.path.abspath(d) != venv_bin]
    found = shutil.which(tool, path=os.pathsep.join(dirs))
    if found is None:
        pytest.fail(f"{tool} (DCMTK) is required: apt-get install dcmtk")
    return found



@pytest.fixture(scope="session")
def dcmtk() -> None:
    for tool in ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp"):
        dcmtk_tool(tool)


@pytest.fixture(scope="session")
def bundled_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The bundled files; those sharing a SOP Instance UID get a re-saved copy with a new one."""
    import pydicom
    from pydicom.uid import generate_uid

    out = tmp_path_factory.mktemp("bundled")
    files: list[Path] = []
    seen: set[str] = set()
    for name in BUNDLED:
        path = pydicom_test_file(name)
        assert path is not None, name
        ds = pydicom.dcmread(path)
        uid = str(ds.SOPInstanceUID)
        if uid in seen:
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            copy = out / name
            ds.save_as(copy, enforce_file_format=True)
            files.append(copy)
        else:
            files.append(Path(path))
        seen.add(str(ds.SOPInstanceUID))
    return files


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    started: list[ServerProcess] = []

    def start(*args: str, data: Path | None = None, env: dict[str, str] | None = None,
              **kw: int) -> ServerProcess:
        srv = ServerProcess(data or tmp_path / "data", extra_args=list(args), env=env or {},
                            **kw)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    return make_server()


__all__ = ["free_port"]
