"""One chaos run: start (or find) the suite, set up accounts, run the workload and the
nemesis together, let the suite recover, observe, check, report."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from bench.suite import SuiteFailed
from chaos import observe, report
from chaos.api import Api, monotonic_since
from chaos.checker import CheckResult, check
from chaos.history import History, PaymentSnapshot
from chaos.nemesis import Nemesis, Planned, fault_kinds, schedule, select
from chaos.suite import ChaosSuite, fresh_suite, running_suite
from chaos.workload import (
    ACCOUNTS_PER_CURRENCY,
    CURRENCIES,
    RATES,
    Accounts,
    Client,
    Recorder,
    Shared,
    Watcher,
    run_clients,
)
from common import db
from common.auth import Role
from common.config import Settings
from common.grpc.auth import bearer_channel
from common.tokens import mint_for, with_local_key
from paysuite.payment.v1 import payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from wallet_service.adapters.uow import WalletUnitOfWork
from wallet_service.bootstrap import DATABASE as WALLET_DB
from wallet_service.service_layer.services import WalletService

TOKEN_TTL_S = 24 * 3600
FUNDING_TIMEOUT_S = 120.0
SAMPLE_EVERY_S = 2.0
# Beyond the faults and the recovery window: funding, the drain, observing and checking.
SET_UP_AND_CHECKS_S = 300.0
# How long cancelled tasks (watchers, the sampler) get to end before the run goes on.
CANCEL_WAIT_S = 10.0
# A run whose payments took longer than this after the last fault to all finish (a healthy
# one takes a few seconds) keeps its evidence, as a failed run does: every process's log and
# the payments still open this long after the last fault.
SLOW_AFTER_S = 20.0


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    duration_s: float = 120.0  # workload and faults; then the recovery window
    seed: int = 16
    faults: str = "all"
    clients: int = 6
    # How long the suite may take, after the last fault, to bring every payment to a
    # terminal state (design.md §8 says 10 s; issue 15 is still bringing it down).
    recovery_window_s: float = 60.0
    pace_s: float = 0.5  # each client's mean pause between requests
    http_share: float = 0.25  # share of creates sent through the HTTP facade
    warmup_s: float = 5.0  # workload without faults first
    output_dir: Path = Path("chaos/results")


@dataclass(frozen=True, slots=True)
class Outcome:
    results: list[CheckResult]
    plan: list[Planned]
    json_path: Path
    png_path: Path

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def run(
    settings: Settings, options: ChaosOptions, console: Console, *, target_running: bool = False
) -> Outcome:
    return asyncio.run(_run(settings, options, console, target_running=target_running))


async def _run(
    settings: Settings, options: ChaosOptions, console: Console, *, target_running: bool
) -> Outcome:
    started_at = datetime.now(UTC)
    if not target_running:
        console.print("starting a fresh suite on the embedded servers ...")
    suite_cm = (
        running_suite(settings) if target_running else fresh_suite(settings, seed=options.seed)
    )
    async with suite_cm as suite, _clients(suite) as (payments, wallet, http, token):
        session = Session(suite, options, console, payments, http, token)
        # A run that hangs (a call nobody bounded, a task that ignores its cancellation)
        # must fail, saying where, not hold CI until its own limit.
        limit_s = options.duration_s + options.recovery_window_s + SET_UP_AND_CHECKS_S
        try:
            async with asyncio.timeout(limit_s):
                await session.set_up(wallet)
                await session.attack()
                return await session.finish(started_at, target_running)
        except TimeoutError:
            raise SuiteFailed(
                f"the run did not end within {limit_s:.0f} s; it hung while {session.phase}"
            ) from None


@asynccontextmanager
async def _clients(
    suite: ChaosSuite,
) -> AsyncIterator[
    tuple[
        payment_pb2_grpc.PaymentServiceAsyncStub,
        wallet_pb2_grpc.WalletServiceAsyncStub,
        aiohttp.ClientSession,
        str,
    ]
]:
    token = mint_for(
        with_local_key(suite.settings),
        subject="service:chaos",
        roles=(Role.SERVICE,),
        ttl_s=TOKEN_TTL_S,
    )
    payment_channel = bearer_channel(suite.settings.payment_target, token)
    wallet_channel = bearer_channel(suite.settings.wallet_target, token)
    http = aiohttp.ClientSession()
    try:
        yield (
            payment_pb2_grpc.PaymentServiceStub(payment_channel),
            wallet_pb2_grpc.WalletServiceStub(wallet_channel),
            http,
            token,
        )
    finally:
        await http.close()
        await payment_channel.close()
        await wallet_channel.close()


class Session:
    def __init__(
        self,
        suite: ChaosSuite,
        options: ChaosOptions,
        console: Console,
        payments: payment_pb2_grpc.PaymentServiceAsyncStub,
        http: aiohttp.ClientSession,
        token: str,
    ) -> None:
        self.suite = suite
        self.options = options
        self.console = console
        self.payments = payments
        self.http = http
        self.clock = monotonic_since(time.monotonic())
        self.clock_zero = datetime.now(UTC)  # the logs' time at the clock's 0
        self.history = History(seed=options.seed)
        self.recorder = Recorder(self.history)
        self.shared = Shared()
        self.stop = asyncio.Event()
        self.watcher = Watcher(payments, self.recorder, self.shared, self.stop)
        self.api = Api(
            payments,
            http,
            facade_url=f"http://{suite.settings.webhook_listen}",
            token=token,
            clock=self.clock,
        )
        self.accounts = Accounts({})
        self.plan: list[Planned] = []
        self.samples: list[observe.Backlog] = []
        self.faults_end = 0.0
        # Payments still open at a moment of the recovery wait (label -> what was open, or
        # why it could not be read).
        self.still_open: dict[str, list[PaymentSnapshot] | str] = {}
        # The payments the resume sweep had to move on (its safety net), read at the end.
        self.resumed: list[PaymentSnapshot] = []
        self.nemesis = Nemesis(suite, http, self.clock)
        self._sampler: asyncio.Task[None] | None = None
        self.phase = "starting"  # what a hung run was doing (SuiteFailed says)

    def _client(self, index: int) -> Client:
        return Client(
            index,
            self.options.seed,
            api=self.api,
            accounts=self.accounts,
            recorder=self.recorder,
            watcher=self.watcher,
            shared=self.shared,
            http_share=self.options.http_share,
        )

    # --- set-up ---------------------------------------------------------------------------

    async def set_up(self, wallet: wallet_pb2_grpc.WalletServiceAsyncStub) -> None:
        self.phase = "setting up accounts"
        self.console.print("setting FX rates, opening and funding accounts ...")
        await _set_rates(self.suite.settings)
        run = uuid.uuid4().hex[:8]
        for currency in CURRENCIES:
            ids = []
            for i in range(ACCOUNTS_PER_CURRENCY):
                account = await wallet.OpenAccount(
                    wallet_pb2.OpenAccountRequest(
                        operation_ref=f"chaos-{run}-{currency}-{i}",
                        owner_id=f"chaos-{run}",
                        currency=currency,
                    ),
                    timeout=30,
                )
                ids.append(account.account_id)
            self.accounts.by_currency[currency] = ids
        funder = self._client(self.options.clients)
        for currency, ids in self.accounts.by_currency.items():
            for account_id in ids:
                await funder.fund(account_id, currency)
        await self._funded()

    async def _funded(self) -> None:
        watches = list(self.shared.watches)
        if not watches:
            return
        _, late = await asyncio.wait(watches, timeout=FUNDING_TIMEOUT_S)
        if late:
            raise SuiteFailed("the funding deposits did not complete before any fault")

    # --- the attack -----------------------------------------------------------------------

    async def attack(self) -> None:
        options = self.options
        start = self.clock()
        kinds = select(fault_kinds(self.suite.targets, list(self.suite.simulators)), options.faults)
        self.faults_end = start + options.duration_s
        self.plan = schedule(
            kinds, seed=options.seed, start=start + options.warmup_s, end=self.faults_end
        )
        self.console.print(
            f"seed {options.seed}: {options.clients} clients and {len(self.plan)} faults of"
            f" {len(kinds)} kinds for {options.duration_s:.0f} s ..."
        )
        self.phase = "under faults"
        clients = [self._client(i) for i in range(options.clients)]
        self._sampler = asyncio.create_task(self._sample())
        nemesis = asyncio.create_task(self.nemesis.run(self.plan))
        workload = asyncio.create_task(run_clients(clients, self.stop, options.pace_s))
        try:
            await asyncio.sleep(max(0.0, self.faults_end - self.clock()))
            self.stop.set()
            self.phase = "waiting for the workload and the nemesis to stop"
            await workload
            await nemesis
        finally:
            # On an error too: no fault left running, nothing left paused or refused.
            self.stop.set()
            await _cancelled([task for task in (workload, nemesis) if not task.done()])
            self.phase = "healing every fault"
            await self.nemesis.heal()
            self.history.faults = list(self.nemesis.faults)

    async def _note_open_at(self, at: float) -> None:
        await asyncio.sleep(max(0.0, at - self.clock()))
        await self._note_open(f"{SLOW_AFTER_S:.0f} s after the last fault")

    async def _note_open(self, label: str) -> None:
        try:
            still_open = await asyncio.wait_for(
                observe.open_now(self.suite.settings), observe.CONNECT_TIMEOUT_S
            )
        except Exception as exc:  # evidence only: a server may be down
            self.still_open[label] = f"unreadable: {exc!r}"
            return
        if still_open:
            self.still_open[label] = self._with_calls(still_open)

    def _with_calls(self, payments: list[PaymentSnapshot]) -> list[PaymentSnapshot]:
        return [
            dataclasses.replace(p, calls=self.history.calls_for(p.idempotency_key))
            for p in payments
        ]

    async def _sample(self) -> None:
        while True:
            self.samples.append(await observe.backlog(self.suite.settings, self.clock()))
            await asyncio.sleep(SAMPLE_EVERY_S)

    # --- the end --------------------------------------------------------------------------

    async def finish(self, started_at: datetime, target_running: bool) -> Outcome:
        options = self.options
        last_fault = max(self.history.last_fault_end, self.faults_end)
        self.phase = "waiting for every payment to finish"
        self.console.print(
            f"faults over; waiting up to {options.recovery_window_s:.0f} s for every payment"
            " to finish ..."
        )
        slow = asyncio.create_task(self._note_open_at(last_fault + SLOW_AFTER_S))
        settled_at = await observe.wait_until_settled(
            self.suite.settings,
            clock=self.clock,
            deadline=last_fault + options.recovery_window_s,
        )
        await _cancelled([slow])
        if settled_at is None:
            await self._note_open("at the end of the recovery wait")
        with contextlib.suppress(Exception):  # evidence only
            self.resumed = self._with_calls(await observe.resumed(self.suite.settings))
        sampler = [self._sampler] if self._sampler is not None else []
        self.phase = "stopping the watchers"
        if stuck := await _cancelled([*self.shared.watches, *sampler]):
            self.console.print(f"[yellow]{stuck} watchers did not end when cancelled[/yellow]")
        self.phase = "observing the end state"
        acknowledged = [c.payment_id for c in self.history.calls if c.payment_id]
        observed = await observe.observe(
            self.suite.settings,
            payments=self.payments,
            http=self.http,
            simulators=self.suite.simulators.values(),
            acknowledged=acknowledged,
            all_terminal_at=settled_at,
        )
        results = check(self.history, observed, recovery_window_s=options.recovery_window_s)
        results.append(_healed(self.suite))
        return self._publish(observed, results, started_at, target_running)

    def _publish(
        self,
        observed: Any,
        results: list[CheckResult],
        started_at: datetime,
        target_running: bool,
    ) -> Outcome:
        stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
        mode = "running suite" if target_running else "fresh embedded suite"
        title = f"paysuite chaos {stamp}, seed {self.options.seed} ({os.cpu_count()} CPUs, {mode})"
        report.print_all(self.console, self.history, observed, results, self.suite.restarts)
        options = {
            k: str(v) if isinstance(v, Path) else v
            for k, v in dataclasses.asdict(self.options).items()
        }
        folder = self.options.output_dir
        logs = self._kept_logs(observed, results, folder / f"{stamp}-logs")
        meta = {
            "started_at": started_at.isoformat(),
            "clock_zero": self.clock_zero.isoformat(),
            "mode": mode,
            "options": options,
            "logs": str(logs) if logs is not None else None,
            "open_payments": {
                label: still_open
                if isinstance(still_open, str)
                else [dataclasses.asdict(p) for p in still_open]
                for label, still_open in self.still_open.items()
            },
            "resumed_by_sweep": [dataclasses.asdict(p) for p in self.resumed],
        }
        doc = report.document(
            self.history,
            observed,
            results,
            meta=meta,
            samples=self.samples,
            restarts=self.suite.restarts,
        )
        json_path = report.write(folder / f"{stamp}.json", doc)
        png_path = report.draw(
            self.history,
            self.samples,
            path=folder / f"{stamp}.png",
            title=title,
            end=self.faults_end,
        )
        self.console.print(f"results: {json_path}\nchart:   {png_path}")
        if logs is not None:
            self.console.print(f"logs:    {logs}")
        return Outcome(results, self.plan, json_path, png_path)

    def _kept_logs(self, observed: Any, results: list[CheckResult], into: Path) -> Path | None:
        """The logs copied into `into` when the run failed or was slow (see SLOW_AFTER_S)."""
        if not slow_or_failed(results, observed.all_terminal_at, self.history.last_fault_end):
            return None
        return self.suite.keep_logs(into)


def slow_or_failed(
    results: Sequence[CheckResult], all_terminal_at: float | None, last_fault_end: float
) -> bool:
    if not all(r.ok for r in results) or all_terminal_at is None:
        return True
    return all_terminal_at - last_fault_end > SLOW_AFTER_S


def _healed(suite: ChaosSuite) -> CheckResult:
    violations = [f"crash loop: {suite.crash_loop}"] if suite.crash_loop else []
    return CheckResult(
        "the supervisor kept every process up", violations, f"{len(suite.restarts)} restarts"
    )


async def _cancelled(tasks: Sequence[asyncio.Task[Any]]) -> int:
    """Cancels `tasks` and waits at most CANCEL_WAIT_S for them to end. asyncio.wait, not a
    gather under suppress(CancelledError): that also swallowed the cancellation of the run
    itself (Ctrl-C, the run's time limit), and a task ignoring its own cancellation (a gRPC
    stream over a channel gone bad) then held a chaos run for good."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return 0
    done, stuck = await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved: a failure here is the workload's, reported elsewhere
    return len(stuck)


async def _set_rates(settings: Settings) -> None:
    engine = db.create_engine(WALLET_DB.url(settings), pool_size=1)
    try:
        service = WalletService(lambda: WalletUnitOfWork(engine))
        for base, quote, rate in RATES:
            await service.set_rate(base=base, quote=quote, rate=rate, source="chaos")
    finally:
        await engine.dispose()
