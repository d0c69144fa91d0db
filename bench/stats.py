"""Summary statistics for benchmark samples: median, p95, min, max, and ratios between targets.

Percentiles use linear interpolation between closest ranks (NumPy's default ``linear`` method), so
``p95`` of a single sample is that sample and of ``[1, 2, ..., 101]`` is 96.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, linear interpolation between closest ranks.

    Raises
    ------
    ValueError
        If `values` is empty or `q` is outside 0..100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(float(v) for v in values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The 50th percentile (mean of the two middle values for an even count)."""
    return percentile(values, 50.0)


@dataclass(frozen=True)
class Summary:
    """Median, p95, min, max and count of one series of samples."""

    n: int
    median: float
    p95: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(
            n=len(values),
            median=median(values),
            p95=percentile(values, 95.0),
            min=float(min(values)),
            max=float(max(values)),
        )

    def as_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "median": self.median, "p95": self.p95, "min": self.min,
                "max": self.max}


def ratio(candidate: float | None, reference: float | None) -> float | None:
    """`candidate / reference`, or None when either is missing or the reference is zero."""
    if candidate is None or reference is None or reference == 0:
        return None
    return candidate / reference


def fmt(value: float | None) -> str:
    """Three significant figures for tables (``1,218``, ``37.4``, ``4.40``, ``0.0123``)."""
    if value is None:
        return "–"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"
