# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""`archivist migrate` by C-GET keeps every object in the transfer syntax the source stores it
in (found by QA: one storage context per SOP Class listing every syntax made the source send
everything re-encoded in the first one, Implicit VR Little Endian, and fail the objects it
cannot decompress, such as 12-bit JPEG)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from inventory_helpers import open_archive  # noqa: F401
from pydicom.data import get_testdata_file

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.config import load_settings
from archivist.core.levels import QueryLevel
from archivist.inventory.migrate import GET_TRANSFER_SYNTAXES, Migration, get_storage_contexts
from archivist.inventory.remote import Remote
from archivist.testing.server import ServerProcess

#: pydicom's files in six syntaxes (distinct SOP Instance UIDs): 12-bit JPEG Extended, JPEG
#: Baseline, JPEG 2000, RLE, Implicit and Explicit VR Little Endian.
FILES = ["JPEG-lossy.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm",
         "rtplan.dcm", "CT_small.dcm"]


def _encoded(archive: Archive) -> dict[str, tuple[str, bytes]]:
    query = archive.search.query_from_pairs(QueryLevel.IMAGE, [])
    return {ref.sop_instance_uid: archive.retrieve.encoded(ref)
            for ref in archive.retrieve.instances(query)}


def test_get_keeps_each_objects_transfer_syntax(open_archive, tmp_path: Path) -> None:
    source_data = tmp_path / "source"
    source = Archive.open(load_settings(env={}, overrides={"data_dir": source_data}))
    try:
        for name in FILES:
            path = Path(get_testdata_file(name))  # type: ignore[arg-type]
            source.ingest.store_file(path, Origin("import"))
        expected = _encoded(source)
    finally:
        source.close()
    syntaxes = {ts for ts, _ in expected.values()}
    assert len(expected) == len(FILES) and len(syntaxes) == 6

    server = ServerProcess(source_data, aet="LEGACY").start()
    target = open_archive(tmp_path / "target")
    try:
        report = Migration(target, Remote("LEGACY", "127.0.0.1", server.dicom_port),
                           method="get").run()
    finally:
        server.stop()
    assert report.complete, [d.line() for d in report.proof.differences]  # type: ignore[union-attr]
    assert report.failures == {}
    got = _encoded(target)
    assert {uid: ts for uid, (ts, _) in got.items()} == \
        {uid: ts for uid, (ts, _) in expected.items()}
    for uid, (_, data) in expected.items():
        assert got[uid][1] == data, uid  # byte for byte, pixel data included
    lossy = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"), stop_before_pixels=True)
    assert str(lossy.SOPInstanceUID) in got


def test_storage_contexts_fit_an_association() -> None:
    one = get_storage_contexts(["1.2.840.10008.5.1.4.1.1.7"])
    assert [cx.transfer_syntax for cx in one[:len(GET_TRANSFER_SYNTAXES)]] == \
        [[ts] for ts in GET_TRANSFER_SYNTAXES]
    many = get_storage_contexts([f"1.2.840.10008.5.1.4.1.1.{i}" for i in range(1, 60)])
    assert len(many) == 126  # with the C-GET and C-FIND contexts, 128
    # every class gets the uncompressed syntaxes before any gets a compressed one
    first = many[:118]
    assert {tuple(cx.transfer_syntax) for cx in first} == \
        {("1.2.840.10008.1.2.1",), ("1.2.840.10008.1.2",)}
    too_many = get_storage_contexts([f"1.2.840.10008.5.1.4.1.1.{i}" for i in range(1, 200)])
    assert len(too_many) == 126


def test_a_video_class_gets_the_video_syntaxes_first() -> None:
    """A video cannot be decoded to another syntax: with 7 classes or more its MPEG-4 syntax
    (the 25th of pynetdicom's list) came too late in turn to be proposed, and the video was
    never migrated. The video classes now get the MPEG-2/MPEG-4/HEVC syntaxes first."""
    video = "1.2.840.10008.5.1.4.1.1.77.1.4.1"  # Video Photographic Image Storage
    classes = [f"1.2.840.10008.5.1.4.1.1.{i}" for i in range(1, 40)] + [video]
    contexts = get_storage_contexts(classes)
    assert len(contexts) <= 126
    offered = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in contexts}
    for ts in ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.107"):
        assert (video, ts) in offered, ts
    assert (video, "1.2.840.10008.1.2.1") in offered
    assert all((c, "1.2.840.10008.1.2.1") in offered for c in classes)
