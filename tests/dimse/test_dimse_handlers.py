"""The DIMSE handlers driven directly with event objects shaped like pynetdicom's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.config import load_settings
from archivist.dimse.handlers import Handlers, contexts_for
from archivist.dimse.status import Status
from archivist.testing.datasets import make_instance

STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


class FakeFindEvent:
    """Stands in for pynetdicom's Event: cancelled after `cancel_after` reads of is_cancelled."""

    def __init__(self, identifier: Dataset, cancel_after: int | None = None) -> None:
        self.identifier = identifier
        self.request = SimpleNamespace(AffectedSOPClassUID=STUDY_FIND)
        self.assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title="T", address="127.0.0.1"))
        self._reads = 0
        self._cancel_after = cancel_after

    @property
    def is_cancelled(self) -> bool:
        self._reads += 1
        return self._cancel_after is not None and self._reads > self._cancel_after


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    a = Archive.open(load_settings(env={}, overrides={"data_dir": tmp_path / "data"}))
    study, series = generate_uid(), generate_uid()
    for i in range(20):
        p = tmp_path / f"{i}.dcm"
        make_instance(p, study_uid=study, series_uid=series, instance_number=i, rows=4, columns=4)
        a.ingest.store_file(p, Origin("import"))
    yield a
    a.close()


def image_query() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.SOPInstanceUID = ""
    return ds


class TestFind:
    def test_streams_all_then_success(self, archive: Archive) -> None:
        out = list(Handlers(archive).handle_find(FakeFindEvent(image_query())))
        assert [s for s, _ in out].count(Status.PENDING) == 20
        assert out[-1] == (Status.SUCCESS, None)

    def test_cancel_stops_the_stream(self, archive: Archive) -> None:
        out = list(Handlers(archive).handle_find(FakeFindEvent(image_query(), cancel_after=3)))
        assert [s for s, _ in out].count(Status.PENDING) == 3
        assert out[-1] == (Status.CANCEL, None)

    def test_missing_level_is_a_failure(self, archive: Archive) -> None:
        ds = Dataset()
        ds.PatientName = "*"
        out = list(Handlers(archive).handle_find(FakeFindEvent(ds)))
        assert len(out) == 1
        assert int(out[0][0].Status) == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS


class TestContexts:
    def test_one_context_per_class_and_syntax(self, archive: Archive) -> None:
        from archivist.core.levels import QueryLevel
        from archivist.core.matching import Query

        refs = list(archive.retrieve.instances(Query(QueryLevel.IMAGE)))
        cxs = contexts_for(refs)
        assert len(cxs) == 1
        assert cxs[0].transfer_syntax[0] == "1.2.840.10008.1.2.1"
