"""The interleaved A/B tool of the benchmark: variants, rotation, copies of a populated folder."""

from pathlib import Path

import pytest
from bench.ab import Variant, clone, parse_variant, rotations


class TestVariants:
    def test_forms(self) -> None:
        assert parse_variant("new=archivist") == Variant("new", "archivist")
        assert parse_variant("old=archivist:/tmp/old/src:2") == \
            Variant("old", "archivist", "/tmp/old/src", "2")
        assert parse_variant("o=orthanc") == Variant("o", "orthanc")

    @pytest.mark.parametrize("text", ["archivist", "x=dcmqrscp", "o=orthanc:/src", "=archivist",
                                      "a=archivist:s:1:extra"])
    def test_refused(self, text: str) -> None:
        with pytest.raises(ValueError):
            parse_variant(text)


def test_every_target_takes_every_place_in_turn() -> None:
    orders = rotations(3, 6)
    assert orders[:3] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert orders[3:] == orders[:3]
    for place in range(3):
        assert sorted(o[place] for o in orders[:3]) == [0, 1, 2]


def test_clone_links_stored_objects_and_copies_the_rest(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    (seed / "data" / "blobs" / "ab").mkdir(parents=True)
    (seed / "data" / "blobs" / "ab" / "key").write_bytes(b"object")
    (seed / "data" / "index.sqlite").write_bytes(b"index")
    dest = tmp_path / "copy"
    clone(seed, dest)
    assert (dest / "data" / "blobs" / "ab" / "key").stat().st_ino == \
        (seed / "data" / "blobs" / "ab" / "key").stat().st_ino
    (dest / "data" / "index.sqlite").write_bytes(b"changed")
    assert (seed / "data" / "index.sqlite").read_bytes() == b"index"
    clone(seed, dest)  # again over an existing copy
    assert (dest / "data" / "index.sqlite").read_bytes() == b"index"
