"""reindex_codes beside other writers: an instance replaced or deleted while its header is read
keeps the codes its new writer gave it (nothing is written for a row that changed)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset
from sqlalchemy import select

from archivist.archive.archive import Archive
from archivist.archive.coded import reindex_codes
from archivist.archive.delete import Deletion
from archivist.archive.ingest import Origin
from archivist.index.schema import instance_code
from archivist.store.blob import BlobStore
from archivist.testing.datasets import make_instance, new_uid

IMPORT = Origin("import")


def liver() -> Dataset:
    item = Dataset()
    item.CodeValue = "10200004"
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = "Liver"
    return item


class DeletesWhileRead:
    """The archive's own blob store; reading one object first deletes its study for real."""

    def __init__(self, archive: Archive, study_uid: str) -> None:
        self.archive = archive
        self.study_uid = study_uid
        self.blobs: BlobStore = archive.blobs
        self.opened = 0

    def open(self, key: str) -> BinaryIO:
        self.opened += 1
        fh = self.blobs.open(key)
        if self.opened == 1:
            Deletion(self.archive.index, self.blobs).delete(self.study_uid)
        return fh


class TestConcurrentChange:
    def test_deleted_while_read_is_skipped(self, archive: Archive, tmp_path: Path) -> None:
        studies = [new_uid(), new_uid()]
        for n, study in enumerate(studies):
            path = tmp_path / f"{n}.dcm"
            make_instance(path, study_uid=study, extra={"ProcedureCodeSequence": [liver()]})
            archive.ingest.store_file(path, IMPORT)
        # The first instance read (lowest pk) is the first study's; it goes away meanwhile.
        blobs = DeletesWhileRead(archive, studies[0])
        done = reindex_codes(archive.index, blobs)  # type: ignore[arg-type]
        assert blobs.opened == 2
        assert (done.instances, done.changed, done.unreadable, done.codes) == (1, 1, 0, 1)
        with archive.index.reader.connect() as conn:
            assert len(conn.execute(select(instance_code.c.pk)).all()) == 1

    def test_batches_cover_every_instance(self, archive: Archive, tmp_path: Path) -> None:
        for n in range(5):
            path = tmp_path / f"{n}.dcm"
            make_instance(path, extra={"ProcedureCodeSequence": [liver()]})
            archive.ingest.store_file(path, IMPORT)
        seen: list[int] = []
        done = reindex_codes(archive.index, archive.blobs, batch=2, progress=seen.append)
        assert seen == [2, 4, 5]
        assert (done.instances, done.with_codes, done.codes) == (5, 5, 5)
