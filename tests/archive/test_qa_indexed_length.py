"""An indexed attribute far over any VR's length (a 2 MiB Patient Name) is refused at ingest,
not copied into the index and into every answer that returns it; nothing is stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.archive.test_qa_large_values import _save

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin, StoreStatus
from archivist.errors import InvalidObject
from archivist.index.extract import MAX_INDEXED_LENGTH

MIB = 1 << 20


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("size", [MAX_INDEXED_LENGTH + 2, 2 * MIB])  # decoded / left unread
def test_an_indexed_value_over_the_limit_is_refused(open_archive: Callable[..., Archive],
                                                    tmp_path: Path, size: int,
                                                    implicit: bool) -> None:
    archive = open_archive()
    path = tmp_path / "long-name.dcm"
    # (explicit VR PN has a 16-bit length: a longer value comes implicit, or as UN)
    ds = _save(path, {0x00100010: ("PN" if implicit else "UN", b"A" * size)}, implicit)
    with pytest.raises(InvalidObject, match="PatientName is .* bytes long"):
        archive.ingest.store_file(path, Origin("stow"))
    assert archive.index.get_instance(ds.SOPInstanceUID) is None
    assert archive.index.counts()["instance"] == 0


def test_a_long_but_plausible_value_is_stored(open_archive: Callable[..., Archive],
                                              tmp_path: Path) -> None:
    archive = open_archive()
    path = tmp_path / "name.dcm"
    ds = _save(path, {0x00081030: ("LO", b"D" * 4000)}, implicit=False)
    result = archive.ingest.store_file(path, Origin("stow"))
    assert result.status is StoreStatus.STORED
    assert archive.index.get_instance(ds.SOPInstanceUID) is not None
