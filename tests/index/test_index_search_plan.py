"""Index.search on SQLite: wildcard person names and date ranges are answered by an index.

The folded name column is compared byte by byte (BINARY), so SQLite's own LIKE optimisation (which
needs a NOCASE column) does not apply; the search gives the literal prefix as a range as well.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from archivist.core.levels import QueryLevel
from archivist.core.matching import build_query
from archivist.index.extract import extract
from archivist.index.repository import BlobInfo, Index, _prefix_range
from archivist.store.blob import new_key
from archivist.testing.datasets import make_instance

NAMES = ["Müller^Anna", "MULLER^Bob", "Mullins^Carl", "Mulm^Dora", "Smith^Eve"]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    idx = Index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    idx.migrate()
    for n, name in enumerate(NAMES):
        ds = make_instance(tmp_path / f"{n}.dcm", patient_name=name, patient_id=f"P{n}",
                           study_date=f"2020010{n + 1}")
        idx.add_instance(
            extract(ds), BlobInfo(new_key(), 100, "0" * 64, ExplicitVRLittleEndian),
            sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
            study_instance_uid=ds.StudyInstanceUID, series_instance_uid=ds.SeriesInstanceUID,
            source_aet="M", source_address=None, policy="keep")
    yield idx
    idx.close()


def _names(index: Index, **pairs: str) -> list[str]:
    query = build_query(QueryLevel.STUDY, list(pairs.items()))
    return sorted(str(r["patient.patient_name"]) for r in index.search(query))


def _plan(index: Index, tmp_path: Path, **pairs: Any) -> str:
    """SQLite's plan of the statement Index.search runs for these keys."""
    seen: list[Any] = []
    engine = index.reader

    from sqlalchemy import event

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        list(index.search(build_query(QueryLevel.STUDY, list(pairs.items()))))
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, params = seen[-1]
    with sqlite3.connect(tmp_path / "index.sqlite") as conn:
        return " | ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + statement, params))


class TestWildcardName:
    @pytest.mark.parametrize(("pattern", "expected"), [
        ("mul*", ["MULLER^Bob", "Mullins^Carl", "Mulm^Dora", "Müller^Anna"]),
        ("MULL*", ["MULLER^Bob", "Mullins^Carl", "Müller^Anna"]),
        ("mull?r*", ["MULLER^Bob", "Müller^Anna"]),
        ("*ller*", ["MULLER^Bob", "Müller^Anna"]),
    ])
    def test_matches_are_unchanged(self, index: Index, pattern: str,
                                   expected: list[str]) -> None:
        assert _names(index, PatientName=pattern) == expected

    def test_prefix_is_searched_in_the_name_index(self, index: Index, tmp_path: Path) -> None:
        plan = _plan(index, tmp_path, PatientName="mull*")
        assert "SEARCH patient USING INDEX ix_patient_name_norm (patient_name_norm>? AND " \
               "patient_name_norm<?)" in plan, plan

    def test_date_range_uses_both_bounds(self, index: Index, tmp_path: Path) -> None:
        assert _names(index, StudyDate="20200102-20200104") == ["MULLER^Bob", "Mullins^Carl",
                                                                 "Mulm^Dora"]
        plan = _plan(index, tmp_path, StudyDate="20200102-20200104")
        assert "ix_study_date (study_date>? AND study_date<?)" in plan, plan


def test_prefix_range_bounds() -> None:
    from sqlalchemy import column

    col = column("c")
    assert len(_prefix_range(col, "ab")) == 2
    assert len(_prefix_range(col, "a\U0010FFFF")) == 1
    upper = _prefix_range(col, "a\ud7ff")[1]
    assert upper.right.value == "a\ue000"
