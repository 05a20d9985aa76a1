"""The bench's picture: throughput per second over the run, and latency CDFs."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from bench.context import Timeline
from bench.stats import per_second


def draw(timeline: Timeline, *, start: float, path: Path, title: str) -> Path:
    # matplotlib.figure.Figure draws with the Agg canvas and touches no pyplot global state.
    figure = Figure(figsize=(13, 5), layout="constrained")
    figure.suptitle(title)
    throughput, cdf = figure.subplots(1, 2)
    for label, instants in (
        ("CreateDeposit", timeline.creates),
        ("completed", timeline.completions),
    ):
        counts = per_second(instants, start=start)
        throughput.plot(range(len(counts)), counts, label=label)
    throughput.set(xlabel="seconds since the bench started", ylabel="per second")
    throughput.set_title("throughput")
    throughput.legend()
    for label, samples in timeline.latencies.items():
        if samples:
            ms = sorted(s * 1000 for s in samples)
            cdf.plot(ms, [(i + 1) / len(ms) for i in range(len(ms))], label=label)
    cdf.set_xscale("log")
    cdf.set(xlabel="latency (ms, log scale)", ylabel="fraction of calls")
    cdf.set_title("latency CDF")
    cdf.grid(True, which="both", alpha=0.3)
    if cdf.get_lines():
        cdf.legend(fontsize="small", loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
