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


def test_viewport_with_a_negative_source_size_flips_the_region(tmp_path: Path) -> None:
    """PS3.18 8.3.5.1.3: a negative sw / sh flips the source region; a zero one is a 400."""
    import io

    from PIL import Image

    path = tmp_path / "ramp.dcm"
    ds = make_instance(path, rows=4, columns=6)
    ds.PixelData = bytes(range(0, 240, 10))  # 24 values, all different
    ds.WindowCenter, ds.WindowWidth = 120, 256
    ds.save_as(path, enforce_file_format=True)

    def grey(viewport: str) -> np.ndarray:
        opts = pixels.parse_render_options({"viewport": viewport}, "image/png")
        return np.asarray(Image.open(io.BytesIO(pixels.render(path, 1, opts))))

    plain = grey("4,2,1,1,4,2")  # the 4 x 2 region at (1, 1), not resized
    assert plain.shape == (2, 4)
    np.testing.assert_array_equal(grey("4,2,5,1,-4,2"), plain[:, ::-1])
    np.testing.assert_array_equal(grey("4,2,1,3,4,-2"), plain[::-1, :])
    np.testing.assert_array_equal(grey("4,2,5,3,-4,-2"), plain[::-1, ::-1])
    with pytest.raises(pixels.HTTPProblem) as refused:
        pixels.parse_render_options({"viewport": "4,2,1,1,0,2"}, "image/png")
    assert refused.value.status == 400


def test_unreadable_pixel_data_is_a_406_and_the_warning_names_the_stored_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A Pixel Data value shorter than Rows x Columns says is a 406 with the reason, and the
    server's warning says which stored file it was (the blob's path, never a UID)."""
    path = tmp_path / "short.dcm"
    ds = make_instance(path, rows=64, columns=64)
    ds.PixelData = bytes(ds.PixelData)[:100]
    ds.save_as(path, enforce_file_format=True)
    opts = pixels.parse_render_options({}, "image/png")
    with caplog.at_level("WARNING", logger=pixels.log.name), \
            pytest.raises(pixels.HTTPProblem) as refused:
        pixels.render(path, 1, opts)
    assert refused.value.status == 406
    assert "cannot be read" in refused.value.message, refused.value.message
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert warnings and str(path) in warnings[0], caplog.text
