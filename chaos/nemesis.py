"""The nemesis: a seeded schedule of overlapping faults, and the hands that apply them.

Kinds (each with a target):
- kill: SIGKILL to a process of the suite, a simulator, Redis or PostgreSQL (every one of its
  processes); `paysuite up`'s supervisor restarts it.
- pause: SIGSTOP, then SIGCONT after a while (every process of PostgreSQL at once).
- db-refuse: a service database refuses connections (ALLOW_CONNECTIONS false and its
  backends terminated), then accepts them again.
- provider-*: a simulator misbehaves through its run-time config (PATCH /_sim/config), then
  returns to its defaults: declines, 5xx bursts, timeouts (processed, never answered), "never
  processed" (lost on the way in), an outage, and webhooks dropped, duplicated, delayed or
  reordered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg

from chaos.history import Fault
from chaos.suite import ChaosSuite
from common import db
from gateway_service.bootstrap import DATABASE as GATEWAY_DB
from payment_service.bootstrap import DATABASE as PAYMENT_DB
from wallet_service.bootstrap import DATABASE as WALLET_DB

DATABASES = {"payments": PAYMENT_DB, "wallets": WALLET_DB, "gateway": GATEWAY_DB}
# provider-<name>: the knobs it turns and the values it turns them to.
PROVIDER_KNOBS: dict[str, dict[str, Any]] = {
    "declines": {"decline_rate": 0.5},
    "5xx": {"error_rate": 0.6},
    "timeouts": {"timeout_rate": 0.3},
    "never-processed": {"drop_rate": 0.3},
    "outage": {"outage": True},
    "webhook-drop": {"webhook_drop_rate": 0.5},
    "webhook-duplicate": {"webhook_duplicate_rate": 0.7},
    "webhook-delay": {"webhook_delay_rate": 0.7, "webhook_delay_ms": 4000},
    "webhook-reorder": {"webhook_reorder_rate": 0.7},
}
# The simulators' defaults (provider_simulator.chaos.Chaos), restored when a fault ends.
PROVIDER_DEFAULTS: dict[str, Any] = {
    "decline_rate": 0.0,
    "error_rate": 0.0,
    "timeout_rate": 0.0,
    "drop_rate": 0.0,
    "outage": False,
    "webhook_drop_rate": 0.0,
    "webhook_duplicate_rate": 0.0,
    "webhook_delay_rate": 0.0,
    "webhook_delay_ms": 2000,
    "webhook_reorder_rate": 0.0,
}
# How long each family of faults lasts (seconds, drawn uniformly).
DURATIONS = {"pause": (1.0, 6.0), "db-refuse": (2.0, 8.0), "provider": (4.0, 15.0)}
CONNECT_TIMEOUT_S = 3
# At most this long, on average, between two faults: with durations up to 15 s they overlap.
MEAN_GAP_S = 8.0


@dataclass(frozen=True, slots=True)
class Planned:
    at: float
    kind: str
    target: str
    duration: float

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.target}"


def fault_kinds(processes: Sequence[str], simulators: Sequence[str]) -> list[tuple[str, str]]:
    """Every (kind, target) a suite with these processes and simulators can suffer."""
    kinds = [("kill", p) for p in processes] + [("pause", p) for p in processes]
    kinds += [("db-refuse", name) for name in DATABASES]
    kinds += [(f"provider-{knob}", sim) for knob in PROVIDER_KNOBS for sim in simulators]
    return kinds


def select(kinds: Sequence[tuple[str, str]], wanted: str) -> list[tuple[str, str]]:
    """`all`, or a comma list of families (kill, pause, db-refuse, provider), kinds
    (provider-outage) or kind:target pairs (kill:redis)."""
    items = [w.strip() for w in wanted.split(",") if w.strip()]
    if "all" in items:
        return list(kinds)
    return [
        (kind, target)
        for kind, target in kinds
        if any(w in (kind, f"{kind}:{target}") or kind.startswith(f"{w}-") for w in items)
    ]


def schedule(
    kinds: Sequence[tuple[str, str]], *, seed: int, start: float, end: float
) -> list[Planned]:
    """Every kind at least once where time allows, in a seeded order, a fault every few
    seconds so that they overlap; then more of them, drawn at random, until `end`."""
    # Not for security: the same seed must give the same schedule.
    rng = random.Random(seed)  # noqa: S311 - seeded for a reproducible run, not for secrets
    if not kinds or end <= start:
        return []
    order = list(kinds)
    rng.shuffle(order)
    gap = min(MEAN_GAP_S, max(1.0, (end - start) / len(order)))
    plan: list[Planned] = []
    at = start
    while at < end:
        kind, target = order[len(plan)] if len(plan) < len(order) else rng.choice(kinds)
        duration = 0.0 if kind == "kill" else rng.uniform(*DURATIONS[_family(kind)])
        plan.append(Planned(round(at, 2), kind, target, round(min(duration, end - at), 2)))
        at += rng.uniform(0.3, 1.2) * gap
    return plan


def _family(kind: str) -> str:
    return "provider" if kind.startswith("provider-") else kind


class Nemesis:
    def __init__(self, suite: ChaosSuite, http: aiohttp.ClientSession, clock: Any) -> None:
        self._suite = suite
        self._http = http
        self._clock = clock
        self.faults: list[Fault] = []
        self._paused: set[int] = set()

    async def run(self, plan: Sequence[Planned]) -> None:
        tasks = []
        for planned in plan:
            await asyncio.sleep(max(0.0, planned.at - self._clock()))
            tasks.append(asyncio.create_task(self._apply(planned)))
        await asyncio.gather(*tasks)

    async def heal(self) -> None:
        """After the run or on an error: nothing left paused, refused or misbehaving."""
        for pid in list(self._paused):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._paused.clear()
        for name in DATABASES:
            with contextlib.suppress(psycopg.Error, OSError):
                await self._allow(name, True)
        for url in self._suite.simulators.values():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self._configure(url, PROVIDER_DEFAULTS)

    async def _apply(self, planned: Planned) -> None:
        start = self._clock()
        try:
            note = await self._inflict(planned)
        except (OSError, psycopg.Error, aiohttp.ClientError, TimeoutError) as exc:
            note = f"not applied: {type(exc).__name__}: {str(exc)[:100]}"
        self.faults.append(Fault(planned.kind, planned.target, start, self._clock(), note))

    async def _inflict(self, planned: Planned) -> str:
        if planned.kind == "kill":
            return self._kill(planned.target)
        if planned.kind == "pause":
            return await self._pause(planned.target, planned.duration)
        if planned.kind == "db-refuse":
            return await self._refuse(planned.target, planned.duration)
        return await self._provider(planned)

    def _kill(self, target: str) -> str:
        pids = self._suite.pids(target)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return f"pids {pids}" if pids else "not running (already down)"

    async def _pause(self, target: str, duration: float) -> str:
        pids = self._suite.pids(target)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                self._paused.add(pid)
        await asyncio.sleep(duration)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self._paused.discard(pid)
        return f"pids {pids}" if pids else "not running (already down)"

    async def _refuse(self, name: str, duration: float) -> str:
        await self._allow(name, False)
        try:
            await asyncio.sleep(duration)
        finally:
            await self._retry_allow(name)
        return ""

    async def _retry_allow(self, name: str) -> None:
        """Connections come back even if PostgreSQL was down when the fault ended."""
        for _ in range(60):
            try:
                await self._allow(name, True)
                return
            except (psycopg.Error, OSError):
                await asyncio.sleep(1.0)

    async def _allow(self, name: str, allowed: bool) -> None:
        database = DATABASES[name]
        url = database.url(self._suite.settings)
        admin = db.libpq_dsn(url.set(database="postgres"))
        flag = "true" if allowed else "false"
        async with await psycopg.AsyncConnection.connect(
            admin, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        ) as conn:
            quoted = f'"{url.database}"'
            await conn.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS {flag}")
            if not allowed:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (url.database,),
                )

    async def _provider(self, planned: Planned) -> str:
        url = self._suite.simulators[planned.target]
        knobs = PROVIDER_KNOBS[planned.kind.removeprefix("provider-")]
        await self._configure(url, knobs)
        await asyncio.sleep(planned.duration)
        restore = {knob: PROVIDER_DEFAULTS[knob] for knob in knobs}
        for _ in range(30):  # the simulator may be down (killed) when the fault ends
            try:
                await self._configure(url, restore)
                break
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(1.0)
        return ", ".join(f"{k}={v}" for k, v in knobs.items())

    async def _configure(self, url: str, knobs: dict[str, Any]) -> None:
        async with self._http.patch(
            f"{url}/_sim/config", json=knobs, timeout=aiohttp.ClientTimeout(total=5)
        ) as response:
            response.raise_for_status()
