"""Percentiles and rates over timing samples (seconds in, milliseconds out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Latency:
    """A latency distribution in milliseconds."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of_seconds(cls, samples: Sequence[float]) -> Latency:
        ms = [s * 1000 for s in samples]
        return cls(
            count=len(ms),
            p50=percentile(ms, 50),
            p95=percentile(ms, 95),
            p99=percentile(ms, 99),
            max=max(ms) if ms else math.nan,
        )

    def figures(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_p50_ms": self.p50,
            f"{prefix}_p95_ms": self.p95,
            f"{prefix}_p99_ms": self.p99,
        }


def p50_p99(figures: dict[str, float]) -> dict[str, float]:
    """A latency's figures without its p95 (the table shows the median and the tail)."""
    return {key: value for key, value in figures.items() if not key.endswith("_p95_ms")}


def rate(count: int, seconds: float) -> float:
    """Events per second; NaN when nothing was timed."""
    return count / seconds if seconds > 0 else math.nan


def per_second(times: Sequence[float], *, start: float) -> list[int]:
    """How many of `times` fall in each whole second after `start` (for throughput charts)."""
    if not times:
        return []
    buckets = [0] * (int(max(times) - start) + 1)
    for t in times:
        if t >= start:
            buckets[int(t - start)] += 1
    return buckets
