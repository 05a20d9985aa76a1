"""One supervisor for a process's background work: relays, consumers, sweeps, publishers.

Every long-running task is started through `TaskSupervisor.start` with a name. Then:
- an unexpected exception is logged at ERROR with the task's name and traceback, counted in
  `background_task_failures_total{task}`, and the task is restarted after a backoff that
  doubles from `first_delay_s` to `max_delay_s` (afresh once it ran `healthy_after_s`);
- a task that returns before the process is stopping is a failure too: background work runs
  for the life of its process, so a loop that ends has stopped doing its job;
- a task declared with a heartbeat must call `beat()` once per iteration of its loop; one that
  has not beaten within its deadline is stalled (an await that never returns);
- `problems()` names every task that failed `unhealthy_after` times within `window_s`, or is
  stalled, or is waiting to be restarted after such failures. The gRPC runtime turns any
  problem into NOT_SERVING on liveness and readiness, so `paysuite up` and Kubernetes restart
  the process; a task that recovers clears its problem.

Nothing is held until stop: the old `gather(..., return_exceptions=True)` at shutdown was the
only place a dead task's exception was ever seen.

Hand-written rather than tenacity: a restart must wake at once on stop, reset after a healthy
run, and feed the health check between attempts; tenacity retries one call in its own loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import Counter, Gauge

from common.aio import wait_any

log = structlog.get_logger(__name__)

Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

FAILURES = Counter(
    "background_task_failures_total",
    "Background tasks that raised (or returned while the process was running), by task; each"
    " is restarted with backoff.",
    ["task"],
)
STALLS = Counter(
    "background_task_stalls_total",
    "Times a background task missed its heartbeat deadline, by task.",
    ["task"],
)
HEALTHY = Gauge(
    "background_task_healthy",
    "1 while the background task runs and beats in time, 0 while it is failing or stalled.",
    ["task"],
)
LAST_BEAT_AGE = Gauge(
    "background_task_heartbeat_age_seconds",
    "Seconds since the task's loop last finished an iteration (tasks with a heartbeat).",
    ["task"],
)


@dataclass(frozen=True, slots=True)
class Task:
    """A named long-running job: `run(stop)` loops until `stop` is set.

    `heartbeat_s`: the loop calls `beat()` at least this often, or it is reported stalled.
    Give it only to loops whose iteration is bounded (a timed wait, a blocking read with a
    timeout), with room for a slow database: a stall restarts the whole process.
    """

    name: str
    run: Background
    heartbeat_s: float | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    healthy_after_s: float = 60.0
    unhealthy_after: int = 3
    window_s: float = 60.0
    watch_every_s: float = 1.0


@dataclass
class _Running:
    task: Task
    last_beat: float
    failures: deque[float] = field(default_factory=deque)
    in_a_row: int = 0
    stalled: bool = False
    last_error: str = ""

    def beat(self) -> None:
        self.last_beat = time.monotonic()
        if self.stalled:
            self.stalled = False
            log.info("background.task_resumed", task=self.task.name)


_CURRENT: ContextVar[_Running | None] = ContextVar("paysuite_background_task", default=None)


def beat() -> None:
    """Marks one finished iteration of the calling background loop (a no-op outside one)."""
    running = _CURRENT.get()
    if running is not None:
        running.beat()


class TaskSupervisor:
    def __init__(
        self,
        process: str,
        *,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._process = process
        self._policy = policy or Policy()
        self._clock = clock
        self._running: list[_Running] = []

    def start(self, tasks: Sequence[Task], stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """Starts every task under supervision, and the watch over their heartbeats."""
        started = []
        for task in tasks:
            running = _Running(task, last_beat=self._clock())
            self._running.append(running)
            HEALTHY.labels(task.name).set(1)
            started.append(asyncio.create_task(self._supervise(running, stop), name=task.name))
        started.append(asyncio.create_task(self._watch(stop), name="background watch"))
        return started

    def problems(self) -> list[str]:
        """Why the process should not be trusted with traffic: empty while all is well."""
        now = self._clock()
        found = []
        for running in self._running:
            self._forget_old_failures(running, now)
            name = running.task.name
            if len(running.failures) >= self._policy.unhealthy_after:
                found.append(
                    f"background task {name} failed {len(running.failures)} times within"
                    f" {self._policy.window_s:.0f} s (last: {running.last_error})"
                )
            if running.stalled:
                found.append(
                    f"background task {name} has not finished an iteration for"
                    f" {now - running.last_beat:.0f} s (deadline {running.task.heartbeat_s} s)"
                )
        return found

    async def _supervise(self, running: _Running, stop: asyncio.Event) -> None:
        _CURRENT.set(running)  # this task's own context: beat() from its loop finds it
        while not stop.is_set():
            started = self._clock()
            running.beat()
            try:
                await running.task.run(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(running, started, repr(exc)[:300], exc)
            else:
                if stop.is_set():
                    return
                self._failed(running, started, "returned while the process runs", None)
            await wait_any(stop, at_most_s=self._delay(running))

    def _failed(
        self, running: _Running, started: float, error: str, exc: BaseException | None
    ) -> None:
        now = self._clock()
        if now - started >= self._policy.healthy_after_s:
            running.in_a_row = 0
        running.failures.append(now)
        running.last_error = error
        FAILURES.labels(running.task.name).inc()
        HEALTHY.labels(running.task.name).set(0)
        log.error(
            "background.task_failed",
            task=running.task.name,
            process=self._process,
            error=error,
            failures_in_window=len(running.failures),
            exc_info=exc,
        )

    def _delay(self, running: _Running) -> float:
        delay = min(self._policy.first_delay_s * 2.0**running.in_a_row, self._policy.max_delay_s)
        running.in_a_row += 1
        log.info("background.task_restarting", task=running.task.name, in_s=round(delay, 2))
        return delay

    def _forget_old_failures(self, running: _Running, now: float) -> None:
        while running.failures and running.failures[0] < now - self._policy.window_s:
            running.failures.popleft()

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = self._clock()
            for running in self._running:
                self._check_heartbeat(running, now)
            await wait_any(stop, at_most_s=self._policy.watch_every_s)

    def _check_heartbeat(self, running: _Running, now: float) -> None:
        self._forget_old_failures(running, now)
        deadline = running.task.heartbeat_s
        age = now - running.last_beat
        if deadline is not None:
            LAST_BEAT_AGE.labels(running.task.name).set(age)
        if deadline is not None and age > deadline and not running.stalled:
            running.stalled = True
            STALLS.labels(running.task.name).inc()
            log.error(
                "background.task_stalled",
                task=running.task.name,
                process=self._process,
                seconds_since_beat=round(age, 1),
                deadline_s=deadline,
            )
        healthy = not running.stalled and not running.failures
        HEALTHY.labels(running.task.name).set(1 if healthy else 0)
