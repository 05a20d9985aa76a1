"""Recovery after a kill -9: the time from killing one part of a running suite, under load,
until every payment is terminal (issue 15, item 4; the timing model is in the README).

    python -m bench.recovery                     # every part, one fresh suite each
    python -m bench.recovery payment redis -v    # some of them, with what is left as it goes
    python -m bench.recovery --rate 20 --seconds 12 --kill-at 6

Each part gets a fresh suite as `paysuite up` runs it: embedded PostgreSQL and Redis with
their data kept (Redis with its append-only file), every process a child restarted by the
same `Supervisor` when it dies, the recovery worker at `paysuite up`'s demo timings. An open
loop sends deposits and withdrawals (alternately) at `--rate` for `--seconds`; the part is
SIGKILLed at `--kill-at`; the payments database is polled from the kill on. Printed per
part, from the kill: the part back (restarted, and ready again for a process of ours); every
payment created before the kill (in flight) terminal; every payment terminal, the load over.
In brackets, the same from the part being back: the figure the 10 s goal is about.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import suite as bench_suite
from bench.admission import Refusals, admitted
from bench.auth import bench_token
from bench.checks import TERMINAL
from common import db
from common.config import Settings
from common.grpc.auth import bearer_channel
from devstack import supervisor
from devstack.embedded import EmbeddedServers, start_embedded
from gateway_service.bootstrap import DATABASE as GATEWAY_DB
from payment_service.bootstrap import DATABASE as PAYMENT_DB
from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from wallet_service.bootstrap import DATABASE as WALLET_DB

REDIS = "redis"
POSTGRES = "postgres"
CHILD_PARTS = (
    "payment",
    "gateway",
    "wallet",
    "webhook adapter",
    "recovery worker",
    "provider simulator (sim-primary)",
    "provider simulator (sim-secondary)",
)
PARTS = (*CHILD_PARTS, REDIS, POSTGRES)
CURRENCY = "USD"
CALL_TIMEOUT_S = 10.0
FUNDING_MINOR = 10**12


@dataclass
class HealingSuite:
    """A suite whose dead parts a `Supervisor` restarts, as under `paysuite up`."""

    settings: Settings
    children: dict[str, supervisor.Child]
    servers: EmbeddedServers | None
    said: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, line)

    def kill(self, part: str) -> None:
        os.kill(self._pid(part), signal.SIGKILL)

    def _pid(self, part: str) -> int:
        if part in self.children:
            return self.children[part].popen.pid
        assert self.servers is not None, f"{part}: the suite does not run its own servers"
        if part == REDIS:
            return self.servers._redis.pid
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset, /tmp it is
            from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.servers._postgres.pgdata)
        assert info is not None, "PostgreSQL is not running"
        return int(info.pid)

    def is_back(self, part: str, since: float) -> bool:
        """Restarted since `since` (monotonic) and, for a process of ours, ready again."""
        name = part if part in self.children else f"embedded {_server_name(part)}"
        restarted = any(at >= since and line == f"{name} restarted" for at, line in self.said)
        if not restarted:
            return False
        return part not in self.children or self.children[part].proc.is_ready()


def _server_name(part: str) -> str:
    return "Redis" if part == REDIS else "PostgreSQL"


@contextmanager
def healing_suite(
    base: Settings, *, external: bool = False, demo: bool = True, env: dict[str, str] | None = None
) -> Iterator[HealingSuite]:
    """Every process of the suite, supervised. With `external`, on `base`'s servers (already
    migrated); else on embedded servers of its own in a throw-away folder. `demo`: the
    recovery worker at `paysuite up`'s timings (else at its deployed defaults). `env`: more
    variables for every process."""
    folder = Path(tempfile.mkdtemp(prefix="paysuite-recovery-"))
    folder.chmod(0o755)  # pgserver runs PostgreSQL as an unprivileged user when run as root
    servers = None if external else start_embedded(folder, keep_data=True)
    try:
        settings = bench_suite.on_free_ports(base, folder)
        if servers is not None:
            settings = settings.model_copy(
                update={"database_url": servers.database_url, "redis_url": servers.redis_url}
            )
            for database in (WALLET_DB, PAYMENT_DB, GATEWAY_DB):
                database.migrate(settings)
        child_env = bench_suite.child_env(
            settings, settings.require_database_url(), settings.require_redis_url()
        )
        # As `paysuite up` runs: the simulator's own settle delay.
        child_env.pop("PAYSUITE_SIMULATOR_SETTLE_DELAY_MS", None)
        child_env["PAYSUITE_DATABASE_PREFIX"] = settings.database_prefix
        child_env["PAYSUITE_STREAM_PREFIX"] = settings.stream_prefix
        child_env.update(env or {})
        with _supervised(settings, child_env, servers, demo=demo) as suite:
            yield suite
    finally:
        if servers is not None:
            servers.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _supervised(
    settings: Settings, env: dict[str, str], servers: EmbeddedServers | None, *, demo: bool
) -> Iterator[HealingSuite]:
    processes = supervisor.plan(settings, demo=demo)
    children: dict[str, supervisor.Child] = {}
    stopping = threading.Event()
    watcher: threading.Thread | None = None
    try:
        for stage in sorted({proc.stage for proc in processes}):
            batch = [proc for proc in processes if proc.stage == stage]
            for proc in batch:
                children[proc.name] = supervisor.Child(proc, env, supervisor.spawn(proc, env))
            supervisor.wait_ready(batch, {name: c.popen for name, c in children.items()})
        suite = HealingSuite(supervisor.with_wallet_target(settings, processes), children, servers)
        units: list[supervisor.Unit] = list(children.values())
        if servers is not None:
            units += [supervisor.EmbeddedPostgres(servers), supervisor.EmbeddedRedis(servers)]
        healer = supervisor.Supervisor(
            units, say=lambda line: suite.said.append((time.monotonic(), line))
        )
        watcher = threading.Thread(target=healer.watch, args=(stopping.is_set,), daemon=True)
        watcher.start()
        yield suite
    finally:
        stopping.set()
        if watcher is not None:
            watcher.join(timeout=5)
        supervisor.stop_all([child.popen for child in children.values()])


# -- load and measurement -----------------------------------------------------------------


@dataclass
class Outcome:
    part: str
    payments: int = 0
    failed_creates: int = 0
    back_s: float = math.nan  # kill → the part restarted and ready
    in_flight_s: float = math.nan  # kill → every payment created before the kill terminal
    terminal_s: float = math.nan  # kill → every payment terminal (the load over)
    stuck: list[str] = field(default_factory=list)  # "id status" of payments never terminal


@dataclass
class Accounts:
    deposit: list[str]
    withdrawal: list[str]


async def open_accounts(settings: Settings, token: str, count: int) -> Accounts:
    run = uuid.uuid4().hex[:8]
    async with bearer_channel(settings.wallet_target, token) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        opened = []
        for i in range(2 * count):
            account = await wallet.OpenAccount(
                wallet_pb2.OpenAccountRequest(
                    operation_ref=f"recovery-{run}-{i}", owner_id="recovery", currency=CURRENCY
                ),
                timeout=CALL_TIMEOUT_S,
            )
            opened.append(account.account_id)
        for i, account_id in enumerate(opened[count:]):
            await wallet.Credit(
                wallet_pb2.CreditRequest(
                    operation_ref=f"recovery-{run}-funding-{i}",
                    account_id=account_id,
                    amount=money_pb2.Money(amount_minor=FUNDING_MINOR, currency=CURRENCY),
                ),
                timeout=CALL_TIMEOUT_S,
            )
    return Accounts(opened[:count], opened[count:])


async def send_payments(
    settings: Settings, token: str, accounts: Accounts, *, rate: float, stop: asyncio.Event
) -> tuple[int, int]:
    """An open loop of deposits and withdrawals, alternately, until `stop`; returns (sent,
    failed). A failed call may still have made a payment (its answer was lost)."""
    async with bearer_channel(settings.payment_target, token) as channel:
        payments = payment_pb2_grpc.PaymentServiceStub(channel)

        # Refusals by admission control (a backlog while a process is down) are waited out
        # and repeated with the same key, as any well-behaved client does.
        refusals = Refusals()

        def request(i: int, key: str) -> Awaitable[payment_pb2.Payment]:
            amount = money_pb2.Money(amount_minor=100 + i % 900, currency=CURRENCY)
            if i % 2 == 0:
                return payments.CreateDeposit(
                    payment_pb2.CreateDepositRequest(
                        idempotency_key=key,
                        account_id=accounts.deposit[i % len(accounts.deposit)],
                        amount=amount,
                        payment_method="pm_card_ok",
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
            return payments.CreateWithdrawal(
                payment_pb2.CreateWithdrawalRequest(
                    idempotency_key=key,
                    account_id=accounts.withdrawal[i % len(accounts.withdrawal)],
                    amount=amount,
                    destination="acct_ok",
                ),
                timeout=CALL_TIMEOUT_S,
            )

        async def create(i: int) -> None:
            key = f"recovery-{uuid.uuid4()}"  # one key for every attempt
            await admitted(lambda: request(i, key), refusals)

        start = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        while not stop.is_set():
            await asyncio.sleep(max(0.0, start + len(tasks) / rate - time.monotonic()))
            tasks.append(asyncio.create_task(create(len(tasks))))
        results = await asyncio.gather(*tasks, return_exceptions=True)
    return len(results), sum(1 for r in results if isinstance(r, BaseException))


_NOT_TERMINAL = (
    "SELECT payment_id::text, status, created_at <= %s FROM payments WHERE status <> ALL(%s)"
    " AND (source_account_id = ANY(%s::uuid[]) OR destination_account_id = ANY(%s::uuid[]))"
)
_COUNT = (
    "SELECT count(*) FROM payments"
    " WHERE source_account_id = ANY(%s::uuid[]) OR destination_account_id = ANY(%s::uuid[])"
)


@dataclass(frozen=True)
class Unfinished:
    payment_id: str
    status: str
    before_kill: bool  # created before the kill: in flight when it happened


async def not_terminal(
    dsn: str, accounts: list[str], killed_at: datetime
) -> list[Unfinished] | None:
    """The payments on `accounts` that are not terminal; None when the database is down."""
    try:
        async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=2) as conn:
            cursor = await conn.execute(
                _NOT_TERMINAL, (killed_at, list(TERMINAL), accounts, accounts)
            )
            return [Unfinished(str(r[0]), str(r[1]), bool(r[2])) for r in await cursor.fetchall()]
    except psycopg.OperationalError:
        return None


async def count_payments(dsn: str, accounts: list[str]) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(_COUNT, (accounts, accounts))
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def kill_under_load(
    suite: HealingSuite,
    part: str,
    *,
    rate: float,
    seconds: float,
    kill_at: float,
    timeout_s: float,
    verbose: bool = False,
) -> Outcome:
    """Kills `part` `kill_at` seconds into the load; measures from the kill until every
    payment created before it is terminal, and until every payment is (after the load)."""
    settings = suite.settings
    token = bench_token(settings)
    accounts = await open_accounts(settings, token, 8)
    every = [*accounts.deposit, *accounts.withdrawal]
    dsn = db.libpq_dsn(PAYMENT_DB.url(settings))
    outcome = Outcome(part)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    load = asyncio.create_task(send_payments(settings, token, accounts, rate=rate, stop=stop))
    await asyncio.sleep(kill_at)
    killed_at, killed_wall = time.monotonic(), datetime.now(UTC)
    suite.kill(part)
    back = asyncio.create_task(_wait_back(suite, part, killed_at, timeout_s))
    deadline = killed_at + seconds + timeout_s
    left: list[Unfinished] | None = None
    shown = 0.0
    while time.monotonic() < deadline:
        left = await not_terminal(dsn, every, killed_wall)
        now = time.monotonic()
        if (
            left is not None
            and not any(u.before_kill for u in left)
            and math.isnan(outcome.in_flight_s)
        ):
            outcome.in_flight_s = now - killed_at
        if left == [] and load.done() and back.done():
            outcome.terminal_s = now - killed_at
            break
        if verbose and now - shown >= 1.0:
            shown = now
            statuses = Counter(f"{u.status}{'*' if u.before_kill else ''}" for u in left or [])
            print(f"  {now - killed_at:5.1f} s after the kill: {dict(statuses)}", flush=True)
        await asyncio.sleep(0.1)
    outcome.back_s = await back
    _, outcome.failed_creates = await load
    outcome.stuck = [f"{u.payment_id} {u.status}" for u in left or []]
    outcome.payments = await count_payments(dsn, every)
    return outcome


async def _wait_back(suite: HealingSuite, part: str, since: float, timeout_s: float) -> float:
    deadline = since + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(suite.is_back, part, since):
            return time.monotonic() - since
        await asyncio.sleep(0.05)
    return math.nan


# -- the command --------------------------------------------------------------------------


def _row(o: Outcome) -> str:
    stuck = f"; {len(o.stuck)} never terminal, e.g. {o.stuck[0]}" if o.stuck else ""
    return (
        f"| {o.part} | {o.payments} | {o.failed_creates} | {o.back_s:.1f} | "
        f"{o.in_flight_s:.1f} ({o.in_flight_s - o.back_s:+.1f}) | "
        f"{o.terminal_s:.1f} ({o.terminal_s - o.back_s:+.1f}){stuck} |"
    )


HEADER = (
    "| killed | payments | failed creates | kill → back (s) |"
    " kill → in-flight terminal (s) (after back) | kill → all terminal (s) (after back) |"
    "\n|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", help=f"of: {', '.join(PARTS)} (default: all)")
    parser.add_argument("--rate", type=float, default=20.0, help="payments per second")
    parser.add_argument("--seconds", type=float, default=12.0, help="how long the load runs")
    parser.add_argument("--kill-at", type=float, default=6.0, help="seconds into the load")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("-v", "--verbose", action="store_true", help="what is left, as it goes")
    args = parser.parse_args()
    if unknown := set(args.parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}: choose from {', '.join(PARTS)}")
    base = Settings(log_level="WARNING", allow_dev_secrets=True)
    print(HEADER, flush=True)
    for part in args.parts or PARTS:
        with healing_suite(base) as suite:
            outcome = asyncio.run(
                kill_under_load(
                    suite,
                    part,
                    rate=args.rate,
                    seconds=args.seconds,
                    kill_at=args.kill_at,
                    timeout_s=args.timeout,
                    verbose=args.verbose,
                )
            )
        print(_row(outcome), flush=True)


if __name__ == "__main__":
    main()
