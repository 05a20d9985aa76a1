from __future__ import annotations

import math

import pytest

from bench.stats import Latency, per_second, percentile, rate


def test_percentile_interpolates_between_ranks() -> None:
    samples = [4.0, 1.0, 3.0, 2.0]
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 50) == 2.5
    assert percentile(samples, 100) == 4.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))


def test_percentile_rejects_a_share_outside_0_to_100() -> None:
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)


def test_latency_is_reported_in_milliseconds() -> None:
    latency = Latency.of_seconds([i / 1000 for i in range(1, 101)])
    assert latency.count == 100
    assert latency.p50 == pytest.approx(50.5)
    assert latency.p99 == pytest.approx(99.01)
    assert latency.max == pytest.approx(100)
    assert latency.figures("x") == {
        "x_p50_ms": latency.p50,
        "x_p95_ms": latency.p95,
        "x_p99_ms": latency.p99,
    }


def test_rate_of_an_empty_span_is_nan() -> None:
    assert rate(10, 2.0) == 5.0
    assert math.isnan(rate(10, 0.0))


def test_per_second_counts_instants_into_whole_seconds() -> None:
    assert per_second([10.1, 10.9, 11.0, 13.5], start=10.0) == [2, 1, 0, 1]
    assert per_second([], start=0.0) == []
