"""``ends_cleanly``: whole data sets (of pydicom's test files, in three encodings) end cleanly;
the same bytes cut short do not, wherever the cut falls inside an element."""

from __future__ import annotations

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from archivist.core.dataset_walk import ends_cleanly
from archivist.testing.datasets import pydicom_test_file

FILES = ["CT_small.dcm", "rtplan.dcm", "waveform_ecg.dcm", "MR_small.dcm"]
ENCODINGS = [(True, True), (False, True), (False, False)]


def _encoded(name: str, implicit: bool, little: bool) -> bytes:
    path = pydicom_test_file(name)
    assert path is not None, name
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_dataset(buffer, dcmread(path))
    return buffer.getvalue()


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize(("implicit", "little"), ENCODINGS)
def test_whole_and_cut_short(name: str, implicit: bool, little: bool) -> None:
    data = _encoded(name, implicit, little)
    assert ends_cleanly(data, implicit=implicit, little=little)
    # Every element has a header of 8 bytes or more: a cut of 1 to 7 bytes always falls
    # inside the last one.
    for cut in (1, 3, 7):
        assert not ends_cleanly(data[:-cut], implicit=implicit, little=little), cut


def test_an_undefined_length_item_needs_its_delimiter() -> None:
    # (0008,1115) SQ, undefined length, one undefined-length item holding (0008,1150) UI.
    item_body = b"\x08\x00\x50\x11UI\x04\x001.2\x00"
    data = (b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
            + item_body + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    assert ends_cleanly(data, implicit=False, little=True)
    assert not ends_cleanly(data[:-8], implicit=False, little=True)  # no sequence delimiter
    assert not ends_cleanly(data[:-16], implicit=False, little=True)  # no item delimiter
