"""The recovery worker's metrics: what each sweep found and did, and how many payments look
stuck, by status (`recovery_stuck_payments`, the dashboard's stuck-payments panel).

A sweep's `found` is a gauge of its last run (the current picture); what it acted on and how
each run ended are counters. Label values are our sweep names and statuses: bounded.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from recovery_worker.domain.model import SweepReport, SweepStatus

FOUND = Gauge("recovery_sweep_found", "What the last run of each sweep found.", ["sweep"])
ACTED = Counter("recovery_sweep_acted_total", "Calls sweeps made to move things on.", ["sweep"])
RUNS = Counter("recovery_sweep_runs_total", "Sweep runs by how they ended.", ["sweep", "status"])
STUCK = Gauge(
    "recovery_stuck_payments",
    "Payments past their threshold in a non-final status, as the last sweep found them.",
    ["status"],
)
# The sweeps whose finds are stuck payments, by the status they look at.
_STUCK_BY_SWEEP = {"pending": "pending", "initiated": "initiated", "refunding": "refunding"}


def observe(report: SweepReport) -> None:
    RUNS.labels(report.sweep, report.status.value).inc()
    if report.status is not SweepStatus.DONE:
        # busy (another replica swept), not due (reconciliation) or unavailable: the last
        # picture stands
        return
    FOUND.labels(report.sweep).set(report.found)
    ACTED.labels(report.sweep).inc(report.acted)
    status = _STUCK_BY_SWEEP.get(report.sweep)
    if status is not None:
        STUCK.labels(status).set(report.found)
