"""Summary statistics of the benchmark harness."""

import pytest
from bench.stats import Summary, fmt, median, percentile, ratio


class TestPercentile:
    def test_linear_interpolation_between_ranks(self) -> None:
        assert percentile(list(range(1, 102)), 95) == 96
        assert percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)
        assert percentile([10, 20], 50) == 15

    def test_order_of_input_does_not_matter(self) -> None:
        assert percentile([5, 1, 4, 2, 3], 95) == percentile([1, 2, 3, 4, 5], 95) == 4.8

    def test_single_value_and_extremes(self) -> None:
        assert percentile([7.5], 95) == 7.5
        assert percentile([3, 1, 2], 0) == 1
        assert percentile([3, 1, 2], 100) == 3

    def test_refuses_empty_and_out_of_range(self) -> None:
        with pytest.raises(ValueError):
            percentile([], 50)
        with pytest.raises(ValueError):
            percentile([1], 101)

    def test_median_odd_and_even(self) -> None:
        assert median([3, 1, 2]) == 2
        assert median([4, 1, 3, 2]) == 2.5


class TestSummary:
    def test_fields(self) -> None:
        s = Summary.of([4.0, 1.0, 3.0, 2.0, 100.0])
        assert (s.n, s.median, s.min, s.max) == (5, 3.0, 1.0, 100.0)
        assert s.p95 == pytest.approx(80.8)
        assert s.as_dict()["p95"] == s.p95


class TestRatioAndFormat:
    def test_ratio(self) -> None:
        assert ratio(300.0, 200.0) == 1.5
        assert ratio(None, 2.0) is None
        assert ratio(1.0, 0.0) is None

    @pytest.mark.parametrize("value,text", [
        (1218.4, "1,218"), (355.2, "355"), (37.44, "37.4"), (4.4, "4.40"), (0.01234, "0.0123"),
        (0, "0"), (None, "–"),
    ])
    def test_three_significant_figures(self, value: float | None, text: str) -> None:
        assert fmt(value) == text
