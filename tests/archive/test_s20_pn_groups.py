"""A person name given with fewer component groups than stored matches on the groups it gives:
the alphabetic group alone finds a name with ideographic or phonetic groups after it
(Wang^XiaoDong finds Wang^XiaoDong=王^小东), and two groups find a name of three, in
SQL (indexed Patient's Name) and in Python (names matched on stored attributes), with and without
case folding. Found by the s20 DIMSE QA (findscu -k PatientName=Wang^XiaoDong found nothing)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.core.levels import MatchKind, QueryLevel
from archivist.core.matching import Constraint, parse_constraint, value_matches
from archivist.testing.datasets import make_instance, new_uid

NAMES = ["Wang^XiaoDong=王^小东=", "Wang^XiaoDongMing", "Yamada^Tarou=山田^太郎=やまだ^たろう"]


@pytest.fixture(params=[True, False], ids=["folded", "case-sensitive"])
def names(open_archive: Callable[..., Archive], tmp_path: Path, request: pytest.FixtureRequest
          ) -> Archive:
    archive = open_archive(pn_case_insensitive=request.param)
    for n, name in enumerate(NAMES):
        make_instance(tmp_path / f"{n}.dcm", patient_name=name, patient_id=f"PN{n}",
                      study_uid=new_uid(), charset="ISO_IR 192")
        archive.ingest.store_file(tmp_path / f"{n}.dcm", Origin("import"))
    return archive


@pytest.mark.parametrize(("query", "ids"), [
    ("Wang^XiaoDong", ["PN0"]),              # the alphabetic group alone
    ("Wang^XiaoDong=王^小东", ["PN0"]),       # the whole name
    ("Wang^XiaoDon?", ["PN0"]),              # a wildcard without '*' at the end
    ("Wang^XiaoDong*", ["PN0", "PN1"]),
    ("Yamada^Tarou", ["PN2"]),
    ("Yamada^Tarou=山田^太郎", ["PN2"]),      # two of its three groups
    ("Yamada^Tar?u=山田^太?", ["PN2"]),
    ("Yamada^Tarou=山田", []),
    ("Wang", []),                            # still single value matching, not a prefix
    ("王^小东", []),                          # an ideographic group is given after '='
    # No alphabetic group: the groups given are matched, the empty one is any (s21).
    ("=山田^太郎", ["PN2"]),
    ("=山田*", ["PN2"]),
    ("=山?^太郎", ["PN2"]),
    ("=王^小东", ["PN0"]),
    ("==やまだ^たろう", ["PN2"]),
    ("=山田", []),                            # still single value matching in its group
    ("=太郎", []),
])
def test_alphabetic_group_matches(names: Archive, query: str, ids: list[str]) -> None:
    q = names.search.query_from_pairs(QueryLevel.PATIENT, [("PatientName", query),
                                                           ("PatientID", "")])
    assert sorted(str(ds.PatientID) for ds in names.search.find(q)) == ids


@pytest.mark.parametrize("fold", [True, False])
def test_python_matching_agrees(fold: bool) -> None:
    single = Constraint("PatientName", "single", ("Wang^XiaoDong",), MatchKind.PN)
    wildcard = Constraint("PatientName", "wildcard", ("Wang^XiaoDon?",), MatchKind.PN)
    ideographic = Constraint("PatientName", "wildcard", ("*小东*",), MatchKind.PN)
    for c, expected in ((single, True), (wildcard, True), (ideographic, True)):
        assert value_matches(c, NAMES[0], pn_fold=fold) is expected, c
    assert not value_matches(single, NAMES[1], pn_fold=fold)
    two = Constraint("PatientName", "single", ("Yamada^Tarou=山田^太郎",), MatchKind.PN)
    two_wild = Constraint("PatientName", "wildcard", ("Yamada^Tar?u=山田^太?",), MatchKind.PN)
    assert value_matches(two, NAMES[2], pn_fold=fold)
    assert value_matches(two_wild, NAMES[2], pn_fold=fold)
    assert not value_matches(Constraint("PatientName", "single", ("Wang",), MatchKind.PN),
                             NAMES[0], pn_fold=fold)
    for query, index, expected in (("=山田*", 2, True), ("=山田^太郎", 2, True),
                                   ("=王^小东", 0, True), ("=山田", 2, False),
                                   ("=山田*", 0, False)):
        c = parse_constraint("PatientName", query)
        assert c is not None
        assert value_matches(c, NAMES[index], pn_fold=fold) is expected, (query, index)


def test_empty_groups_become_universal_only_before_a_given_one() -> None:
    def value(query: str) -> str:
        c = parse_constraint("PatientName", query)
        assert c is not None
        return c.values[0]

    assert value("=山田*") == "*=山田*"
    assert value("==やまだ") == "*=*=やまだ"
    assert value("^=山田") == "*=山田"
    assert value("Yamada^Tarou=") == "Yamada^Tarou="  # a trailing empty group: as before
    assert value("Yamada=山田") == "Yamada=山田"
