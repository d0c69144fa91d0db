"""WADO-RS frames: the layout of a served file is parsed once, and large values read with the
header are not kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from archivist.testing.datasets import make_instance
from archivist.web.dicomweb import pixels, wado


def test_layout_parsed_once_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a.dcm", tmp_path / "b.dcm"
    make_instance(first, rows=64, columns=64, frames=2)
    make_instance(second, rows=64, columns=64)
    parsed: list[Path] = []
    real = pixels.pixel_info

    def counting(path: Path) -> pixels.PixelInfo:
        parsed.append(path)
        return real(path)

    monkeypatch.setattr(pixels, "pixel_info", counting)
    cache = wado._PixelInfoCache(entries=1)
    info = cache.get(first)
    assert cache.get(first) is info
    assert pixels.stored_frame(cache.get(first), 2) == pixels.stored_frame(real(first), 2)
    cache.get(second)  # evicts the first (one entry)
    cache.get(first)
    assert parsed == [first, second, first]


def test_large_value_read_with_the_header_is_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "small.dcm"
    make_instance(path, rows=4, columns=4)  # 16 bytes of Pixel Data, read with the header
    assert pixels.pixel_info(path).in_memory is not None
    cache = wado._PixelInfoCache(max_value_bytes=8)
    assert cache.get(path) is not cache.get(path)
    keeping = wado._PixelInfoCache(max_value_bytes=1024)
    assert keeping.get(path) is keeping.get(path)
