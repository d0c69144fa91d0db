"""Rendering parameters and the memory one rendered frame takes (QA, round 3).

- ``quality=0`` or ``quality=101`` was silently clamped by WADO-RS (WADO-URI refused the same
  ``imageQuality``): a value outside 1-100 is a 400 (PS3.18 8.3.5.1.2).
- A 5000 x 5000 16-bit frame rendered at full size took about 600 MB in the worker (float64
  copies of every pixel, one per step of the pipeline); the grey levels are now computed in
  one float32 array, in place.
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archivist.testing.datasets import make_instance
from archivist.web.dicomweb import pixels


@pytest.mark.parametrize("quality", ["0", "101", "-5", "abc", "50.5"])
def test_quality_outside_1_to_100_is_a_400(quality: str) -> None:
    with pytest.raises(pixels.HTTPProblem) as refused:
        pixels.parse_render_options({"quality": quality}, "image/jpeg")
    assert refused.value.status == 400
    assert pixels.parse_render_options({"quality": "1"}, "image/jpeg").quality == 1
    assert pixels.parse_render_options({"quality": "100"}, "image/jpeg").quality == 100


@pytest.mark.parametrize("window", ["nan,100", "100,nan", "inf,100", "100,-inf", "1,2,linear,x"])
def test_window_must_be_finite(window: str) -> None:
    with pytest.raises(pixels.HTTPProblem) as refused:
        pixels.parse_render_options({"window": window}, "image/png")
    assert refused.value.status == 400


def test_a_large_frame_takes_one_float32_copy(tmp_path: Path) -> None:
    """A 1500 x 1500 16-bit frame (2.25 Mpixels, under the sampling threshold) rendered with
    rescale and a sigmoid window: the pipeline's peak stays under 10 bytes a pixel (float64
    copies took 26; the frame, one float32 copy and the 8-bit result take 7)."""
    side = 1500
    path = tmp_path / "large.dcm"
    ds = make_instance(path, rows=side, columns=side)
    values = np.random.default_rng(7).integers(0, 4096, (side, side), dtype=np.uint16)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = values.tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    ds.save_as(path, enforce_file_format=True)
    opts = pixels.parse_render_options({"window": "500,1000,sigmoid"}, "image/png")
    pixels.render(path, 1, opts)  # imports and caches warmed up
    tracemalloc.start()
    try:
        data = pixels.render(path, 1, opts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * side * side, f"{peak / 1e6:.1f} MB for a {side}x{side} frame"
    got = np.asarray(Image.open(io.BytesIO(data))).astype(float)
    modality = values.astype(float) * 2 - 1024
    want = np.rint(255 / (1 + np.exp(-4 * (modality - 500) / 1000)))
    assert np.abs(got - want).max() <= 1


def test_renders_share_a_memory_budget() -> None:
    """Eight full-size renders of a 25 Mpixel frame at once took 1.1 GB in one worker: renders
    now wait for room in the process's budget (a frame larger than it goes alone)."""
    import threading
    import time

    budget = pixels.RenderBudget(100)
    lock = threading.Lock()
    inside: list[int] = []
    peak = [0]

    def render(size: int) -> None:
        with budget.hold(size):
            with lock:
                inside.append(size)
                peak[0] = max(peak[0], sum(inside))
            time.sleep(0.05)
            with lock:
                inside.remove(size)

    threads = [threading.Thread(target=render, args=(size,))
               for size in (60, 60, 60, 500, 10, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert peak[0] <= 500  # the oversized one alone
    assert budget.used == 0
    with budget.hold(60), budget.hold(30):  # both fit
        assert budget.used == 90
    assert pixels.RENDER_BUDGET.limit >= 64 << 20
