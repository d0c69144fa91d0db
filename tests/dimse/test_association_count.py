"""The counts worker processes share: associations for ``max_associations``, connections for
spreading new connections over the workers."""

from __future__ import annotations

import multiprocessing
import time

from archivist.dimse.acceptor import AssociationCount


def _cells(associations: list[int], connections: list[int]):  # type: ignore[no-untyped-def]
    cells = multiprocessing.Array("i", len(associations) * 2, lock=False)
    cells[:] = associations + connections
    return cells


def test_total_counts_associations_of_every_worker_only() -> None:
    cells = _cells([2, 3], [7, 9])
    count = AssociationCount(cells, 0, 2)
    assert count.total() == 5
    count.set(4)
    assert count.total() == 7 and cells[0] == 4


def test_a_worker_with_more_connections_than_another_is_busier() -> None:
    cells = _cells([0, 0, 0], [2, 1, 2])
    assert AssociationCount(cells, 0, 3).busier_than_another()
    assert not AssociationCount(cells, 1, 3).busier_than_another()
    AssociationCount(cells, 1, 3).set_connections(3)
    assert not AssociationCount(cells, 0, 3).busier_than_another()
    assert AssociationCount(cells, 1, 3).busier_than_another()


def test_a_worker_not_accepting_is_left_out() -> None:
    # -1: starting, or dead and waiting to be replaced; nobody should wait for it.
    cells = _cells([0, 0], [5, -1])
    assert not AssociationCount(cells, 0, 2).busier_than_another()


def test_one_process_never_defers() -> None:
    assert not AssociationCount().busier_than_another()
    legacy = multiprocessing.Array("i", 2, lock=False)  # associations only
    assert not AssociationCount(legacy, 0, 2).busier_than_another()


def test_quiet_for_counts_from_the_last_association_of_any_worker() -> None:
    cells = _cells([0, 0], [0, 0])
    stamps = multiprocessing.Array("d", 2, lock=False)
    mine, other = AssociationCount(cells, 0, 2, stamps), AssociationCount(cells, 1, 2, stamps)
    # Nothing yet: quiet for as long as the clock goes back (time.monotonic() counts from the
    # machine's boot, so no fixed number: a CI machine may have booted minutes ago).
    origin = time.monotonic()
    assert mine.quiet_for() >= origin  # nothing yet
    other.set(1)
    assert mine.quiet_for() == 0.0  # open on the other worker
    ended = time.monotonic()
    other.set(0)
    # Counted from the other worker's end (whatever the machine's load made of the delay).
    assert 0.0 <= mine.quiet_for() <= time.monotonic() - ended
    alone = AssociationCount()
    alone.set(1)
    assert alone.quiet_for() == 0.0
    ended = time.monotonic()
    alone.set(0)
    assert 0.0 <= alone.quiet_for() <= time.monotonic() - ended
