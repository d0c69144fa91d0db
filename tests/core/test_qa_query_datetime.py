"""Date-time and time range matching found wrong by differential QA against Orthanc (PS3.4
C.2.2.2.5).

- The UTC offset of a DT value was dropped, not applied: ``20200101120000+0100`` matched
  ``AcquisitionDateTime=20200101120000`` on an archive running in UTC, and
  ``20200101235959.5-0500`` (the next day in UTC) fell in a range ending ``20200101235959``.
  The standard says the offset "shall be taken into account".
- A stored time or date-time of lower precision sorted before a range's low end that names the
  same moment: a StudyTime of ``1200`` (12:00) was not found by ``StudyTime=120000-``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from archivist.core.levels import MatchKind
from archivist.core.matching import Constraint, normalise_datetime, parse_constraint, value_matches
from archivist.errors import QueryError


@pytest.fixture
def utc() -> Iterator[None]:
    """Run in UTC, the local time of the archive these expectations are written for."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def _dt(value: str) -> Constraint:
    c = parse_constraint("AcquisitionDateTime", value)
    assert c is not None
    return c


@pytest.mark.usefixtures("utc")
class TestOffsets:
    @pytest.mark.parametrize(("stored", "local"), [
        ("20200101120000+0100", "20200101110000"),
        ("20200101235959.5-0500", "20200102045959.5"),
        ("2020010112+0100", "2020010111"),      # precision kept
        ("20191231230000-0100", "20200101000000"),  # across a year
        ("20200101+0100", "20200101"),          # coarser than the hour: offset dropped
        ("20200101120000", "20200101120000"),   # no offset: local time already
    ])
    def test_offset_is_applied(self, stored: str, local: str) -> None:
        assert normalise_datetime(stored) == local

    def test_single_value(self) -> None:
        assert not value_matches(_dt("20200101120000"), "20200101120000+0100")
        assert value_matches(_dt("20200101110000"), "20200101120000+0100")
        assert value_matches(_dt("20200101120000+0100"), "20200101110000")

    def test_range(self) -> None:
        day = _dt("20200101000000-20200101235959")
        assert not value_matches(day, "20200101235959.5-0500")
        assert value_matches(day, "20191231230000-0100")
        assert value_matches(_dt("-20200101113000"), "20200101120000+0100")
        assert not value_matches(_dt("20200101113000-"), "20200101120000+0100")
        assert value_matches(_dt("20200101113000+0000-"), "20200101130000+0100")


class TestLowerPrecision:
    @pytest.mark.parametrize(("query", "stored", "hit"), [
        ("120000-", "1200", True),
        ("120000-", "12", True),
        ("120000-", "1159", False),
        ("1200-1300", "12", True),
        ("120000.5-", "120000", False),
        ("120000.5-", "120000.7", True),
        ("-115959", "1200", False),
    ])
    def test_time(self, query: str, stored: str, hit: bool) -> None:
        c = parse_constraint("AcquisitionTime", query)
        assert c is not None and c.kind is MatchKind.TIME
        assert value_matches(c, stored) is hit

    @pytest.mark.usefixtures("utc")
    @pytest.mark.parametrize(("query", "stored", "hit"), [
        ("20200101120000-", "2020010112", True),
        ("20200101120000-", "202001011159", False),
        ("20200101000000-", "2020", True),
        ("20200101000001-", "2020", False),
    ])
    def test_datetime(self, query: str, stored: str, hit: bool) -> None:
        assert value_matches(_dt(query), stored) is hit


class TestIntegers:
    """An integer key beyond 64 bits reached SQLite: OverflowError, a 500 in QIDO-RS and
    0xC001 in C-FIND; a list with a non-number was matched on its numbers only."""

    @pytest.mark.parametrize("value", ["99999999999999999999999", "9223372036854775808",
                                       "1\\99999999999999999999", "1\\abc"])
    def test_refused(self, value: str) -> None:
        with pytest.raises(QueryError):
            parse_constraint("InstanceNumber", value)

    def test_canonical(self) -> None:
        assert parse_constraint("InstanceNumber", "+3").values == ("3",)
        assert parse_constraint("InstanceNumber", "1\\ 02").values == ("1", "2")


class TestListsWithPatterns:
    """A value list holding a range or a wildcard matched each value literally."""

    @pytest.mark.parametrize(("keyword", "value", "stored", "hit"), [
        ("StudyDate", "20200101-20200131\\20201231", "20200115", True),
        ("StudyDate", "20200101-20200131\\20201231", "20201231", True),
        ("StudyDate", "20200101-20200131\\20201231", "20200201", False),
        ("PatientName", "SMITH*\\LEE", "smithson^jo", True),
        ("PatientName", "SMITH*\\LEE", "Lee", True),
        ("PatientName", "SMITH*\\LEE", "Leeds", False),
        ("ModalitiesInStudy", "C*\\MR", ["PT", "CT"], True),
        ("ModalitiesInStudy", "C*\\MR", ["PT", "US"], False),
    ])
    def test_any_value_matches_by_its_own_kind(self, keyword: str, value: str, stored: object,
                                               hit: bool) -> None:
        c = parse_constraint(keyword, value)
        assert c is not None and c.op == "list"
        assert value_matches(c, stored) is hit

    def test_each_date_is_checked_and_normalised(self) -> None:
        with pytest.raises(QueryError):
            parse_constraint("StudyDate", "foo\\20200101")
        assert parse_constraint("StudyDate", "2020.01.01\\20200201").values == \
            ("20200101", "20200201")
        assert parse_constraint("StudyDate", "-\\20200201") is None  # one is universal
