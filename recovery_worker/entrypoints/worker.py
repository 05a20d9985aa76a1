"""The loop that runs every sweep, each under its lease, once per interval.

A sweep is claimed through a lease (`Leases`) before it runs, so several worker replicas
never run the same sweep at once: one does the round's work, the others report BUSY for it.
Nothing here raises out of a round: an unavailable service is a warning and a retry next
round, and even a bug in one sweep is logged without stopping the others or the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog

from common.aio import wait_any
from common.errors import DependencyUnavailable
from common.supervision import beat
from recovery_worker.domain.model import SweepReport, SweepStatus
from recovery_worker.service_layer.ports import Leases
from recovery_worker.service_layer.sweeps import Sweep

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
Observer = Callable[[SweepReport], None]


def _ignore(_report: SweepReport) -> None:
    return None


class RecoveryWorker:
    def __init__(
        self,
        *,
        sweeps: Sequence[Sweep],
        leases: Leases,
        clock: Clock,
        interval_s: float,
        observe: Observer = _ignore,
    ) -> None:
        self._sweeps = sweeps
        self._leases = leases
        self._clock = clock
        self._interval_s = interval_s
        # Told every sweep's report (metrics), whatever became of the sweep.
        self._observe = observe

    async def run(self, stop: asyncio.Event) -> None:
        """Runs a round at once, then one every interval, until `stop` is set."""
        log.info("recovery.started", interval_s=self._interval_s)
        while not stop.is_set():
            beat()
            await self.run_round()
            await wait_any(stop, at_most_s=self._interval_s)

    async def run_round(self) -> list[SweepReport]:
        return [await self.run_sweep(sweep) for sweep in self._sweeps]

    async def run_sweep(self, sweep: Sweep) -> SweepReport:
        report = await self._run_sweep(sweep)
        self._observe(report)
        return report

    async def _run_sweep(self, sweep: Sweep) -> SweepReport:
        try:
            async with self._leases.hold(sweep.name) as held:
                if not held:
                    log.debug("recovery.sweep_busy", sweep=sweep.name)
                    return SweepReport(sweep.name, SweepStatus.BUSY)
                report = await sweep.run_once(self._clock())
        except DependencyUnavailable as exc:
            # The lease store itself (Redis) is down: nobody can claim, so nobody sweeps.
            log.warning("recovery.sweep_unavailable", sweep=sweep.name, error=exc.message)
            return SweepReport(sweep.name, SweepStatus.UNAVAILABLE, notes=(exc.message,))
        except Exception:
            # A bug in one sweep must not stop the others, nor the worker's next round.
            log.exception("recovery.sweep_crashed", sweep=sweep.name)
            return SweepReport(sweep.name, SweepStatus.FAILED)
        # A round that found nothing is the normal case every few seconds: debug, not info.
        emit = log.info if report.found or report.acted else log.debug
        emit("recovery.sweep_done", **report.summary())
        return report
