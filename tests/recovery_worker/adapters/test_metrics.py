from __future__ import annotations

from recovery_worker.adapters import metrics
from recovery_worker.domain.model import SweepReport, SweepStatus


def test_the_stuck_payments_gauge_follows_the_last_completed_sweep() -> None:
    metrics.observe(SweepReport("pending", found=3, acted=2))
    metrics.observe(SweepReport("pending", SweepStatus.BUSY))
    assert metrics.STUCK.labels("pending")._value.get() == 3
    metrics.observe(SweepReport("pending", found=0))
    assert metrics.STUCK.labels("pending")._value.get() == 0
