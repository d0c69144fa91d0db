"""A C-FIND request's Code Sequence item says which of the item's attributes to return
(PS3.4 C.2.2.1.3): findscu -k "(0040,A043)[0].CodeValue=1111" -k "...CodingSchemeDesignator=TEST"
got Code Meaning too (QA s23, the README's tour). An empty item still returns whole items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.core.levels import QueryLevel
from archivist.testing.datasets import code_item, make_instance, new_uid

STUDY = new_uid()


@pytest.fixture
def coded(archive: Archive, tmp_path: Path) -> Archive:
    make_instance(tmp_path / "a.dcm", study_uid=STUDY, extra={
        "ProcedureCodeSequence": [code_item("36118008", "SCT", "Chest")]})
    archive.ingest.store_file(tmp_path / "a.dcm", Origin("import"))
    return archive


def _returned(archive: Archive, item: dict[str, Any] | None) -> list[dict[str, Any]]:
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = STUDY
    request_item = Dataset()
    for keyword, value in (item or {}).items():
        setattr(request_item, keyword, value)
    ident.ProcedureCodeSequence = Sequence([request_item] if item is not None else [])
    query = archive.search.query_from_identifier(QueryLevel.STUDY, ident)
    (row,) = list(archive.search.rows(query))
    answer = archive.search.identifier(query, row)
    return [{e.keyword: e.value for e in i} for i in answer.ProcedureCodeSequence]


@pytest.mark.parametrize("item, expected", [
    ({"CodeValue": "36118008", "CodingSchemeDesignator": "SCT"},
     {"CodeValue": "36118008", "CodingSchemeDesignator": "SCT"}),
    ({"CodeMeaning": ""}, {"CodeMeaning": "Chest"}),
    ({"CodeValue": "", "CodingSchemeVersion": ""},
     {"CodeValue": "36118008", "CodingSchemeVersion": ""}),
    ({"LongCodeValue": ""}, {"CodeValue": "36118008"}),  # the value as it is held
    ({}, {"CodeValue": "36118008", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Chest"}),
    (None, {"CodeValue": "36118008", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Chest"}),
], ids=["value-and-scheme", "meaning", "with-an-absent-key", "long-value", "empty-item",
        "no-item"])
def test_the_request_item_names_what_is_returned(coded: Archive, item: dict[str, Any] | None,
                                                 expected: dict[str, Any]) -> None:
    (returned,) = _returned(coded, item)
    assert {k: (v if v is not None else "") for k, v in returned.items()} == expected
