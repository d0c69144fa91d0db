"""Measure terminology search latency (a benchmark, not a test: timings depend on the machine).

    uv run --frozen python tools/measure_terminology.py [--rounds 5]

Times ``SearchIndex.search(query, limit=10)`` with ``time.perf_counter()`` for every query of the
search-quality table in tests/terminology/test_search.py, after one untimed round (tables loaded,
lazy tables built), and prints the median, 95th percentile and slowest query.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

from archivist import terminology


def _quality_queries() -> list[str]:
    path = Path(__file__).resolve().parent.parent / "tests" / "terminology" / "test_search.py"
    spec = importlib.util.spec_from_file_location("quality_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [query for query, _ in module.QUALITY]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    queries = _quality_queries()
    start = time.perf_counter()
    index = terminology.search_index()
    load = time.perf_counter() - start
    for q in queries:
        index.search(q, limit=10)
    times: list[tuple[float, str]] = []
    for _ in range(args.rounds):
        for q in queries:
            t0 = time.perf_counter()
            index.search(q, limit=10)
            times.append((time.perf_counter() - t0, q))
    values = sorted(t for t, _ in times)
    p95 = values[int(0.95 * (len(values) - 1))]
    worst = max(times)
    print(f"{len(queries)} queries x {args.rounds} rounds; load {load * 1000:.1f} ms")
    print(f"median {statistics.median(values) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms, "
          f"slowest {worst[0] * 1000:.2f} ms ({worst[1]!r})")


if __name__ == "__main__":
    main()
