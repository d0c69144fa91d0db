"""Frames of a native (uncompressed) object are cut from the file, never decoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from archivist.testing.datasets import make_instance
from archivist.web.dicomweb import pixels


@pytest.mark.parametrize("side", [4, 64])  # 32 bytes: read with the header; 8 KiB: deferred
def test_native_frame_is_cut_not_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         side: int) -> None:
    path = tmp_path / "ct.dcm"
    make_instance(path, rows=side, columns=side)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    info = pixels.pixel_info(path)
    if side > 8:
        assert info.in_memory is None and info.value_tell > 0  # the value was not read

    def no_decoding(*_: object) -> None:
        raise AssertionError("a native frame was decoded")

    monkeypatch.setattr(pixels, "decoded_frame", no_decoding)
    frame = pixels.stored_frame(info, 1)
    expected = np.ascontiguousarray(ds.pixel_array, dtype=ds.pixel_array.dtype.newbyteorder("<"))
    assert frame == expected.tobytes()
