# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""A Repository Query identifier with a key whose value cannot be read as its VR (QA s22:
Maximum Number of Records sent as 3 bytes of text in a UL) was answered "Unable to process"
(0xC001), naming nothing; the key is named now (a QueryError: 0xA900 with that comment)."""

from __future__ import annotations

import pytest
from inventory_helpers import archive, open_archive  # noqa: F401
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from archivist.archive.archive import Archive
from archivist.dimse.status import Status, query_failure
from archivist.errors import QueryError
from archivist.inventory.records import RepositoryQuery


def test_the_unreadable_key_is_named(archive: Archive) -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    tag = Tag("MaximumNumberOfRecords")
    ds._dict[tag] = RawDataElement(tag, "UL", 3, b"abc", 0, False, True)
    with pytest.raises(QueryError) as caught:
        RepositoryQuery(archive.search).parse(ds)
    status, comment = query_failure(caught.value)
    assert status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert comment.startswith("MaximumNumberOfRecords cannot be read")
