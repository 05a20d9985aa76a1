"""Wallet postings per second over gRPC, on many distinct accounts and on one hot account,
beside the wallet's trivial call (health Check) measured in the same run.

A posting is one completed Credit, Debit or Transfer. After a short baseline phase, two
closed-loop phases, each half of `duration_s`, with `concurrency` clients:

- distinct: client k owns two accounts and cycles credit, debit, transfer between them, so no
  two clients ever touch the same account (the ledger's parallel throughput);
- hot: every client credits and debits one shared account (its row lock is the queue);
- batched: as distinct, cycling credit and transfer (the postings the suite's saga makes),
  through the payment service's own wallet client, which sends the calls made together as
  one Credits or Transfers call (`_Coalesced`): the ledger as the suite uses it, where the
  unary phases price each posting's own gRPC call on both sides.

Keys: `wallet_trivial_calls_per_s`, `wallet_postings_distinct_per_s`,
`wallet_postings_hot_per_s`, `wallet_postings_batched_per_s` (described in bench/figures.py),
`wallet_<rpc>_p50_ms` and `_p99_ms` per RPC, and `wallet_errors` (refused calls: they are not
postings).

    python -m bench.wallet_bench 127.0.0.1:50052 [--duration 10] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.auth import bench_token
from common.config import load_settings
from common.errors import DomainError
from common.grpc.auth import bearer_channel
from common.money import Money
from payment_service.adapters.clients import WalletClient
from paysuite.common.v1 import money_pb2
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc

W = wallet_pb2
# The figures worth comparing between runs with one and with several wallet replicas.
COMPARED = (
    "wallet_trivial_calls_per_s",
    "wallet_postings_distinct_per_s",
    "wallet_postings_hot_per_s",
    "wallet_errors",
)
FUNDING_MINOR = 10**12
CALL_TIMEOUT_S = 30.0


def _usd(amount_minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount_minor, currency="USD")


def _ref() -> str:
    return str(uuid.uuid4())


def _percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _Recorder:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.postings = 0
        self.errors = 0

    async def timed(self, name: str, call: Awaitable[object]) -> None:
        started = time.perf_counter()
        try:
            await call
        except (grpc.aio.AioRpcError, DomainError):  # a refusal, raw or as the client says it
            self.errors += 1
            return
        self.latencies[name].append((time.perf_counter() - started) * 1000)
        self.postings += 1


async def _open_funded(stub: wallet_pb2_grpc.WalletServiceAsyncStub, owner: str) -> str:
    account = await stub.OpenAccount(
        W.OpenAccountRequest(operation_ref=_ref(), owner_id=owner, currency="USD")
    )
    await stub.Credit(
        W.CreditRequest(
            operation_ref=_ref(), account_id=account.account_id, amount=_usd(FUNDING_MINOR)
        )
    )
    return account.account_id


Step = Callable[[int], tuple[str, Awaitable[object]]]


async def _closed_loop(step: Step, recorder: _Recorder, duration_s: float, clients: int) -> float:
    deadline = time.perf_counter() + duration_s

    async def client(k: int) -> None:
        for i in itertools.count():
            if time.perf_counter() >= deadline:
                return
            name, call = step(k * 1_000_000 + i)
            await recorder.timed(name, call)

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return time.perf_counter() - started


async def measure(
    wallet_target: str, token: str, *, duration_s: float = 10.0, concurrency: int = 32
) -> dict[str, float]:
    # One channel, one connection: what each payment replica holds to the wallet. (This used to
    # open four channels, which gRPC's process-wide connection sharing made one connection; each
    # channel now keeps its own, see common.grpc.connections.)
    async with bearer_channel(wallet_target, token) as channel:
        baseline = await _trivial_calls_per_s(channel, duration_s / 4, concurrency)
        figures = await _measure(channel, duration_s=duration_s, concurrency=concurrency)
    return {"wallet_trivial_calls_per_s": baseline, **figures}


async def _trivial_calls_per_s(
    channel: grpc.aio.Channel, duration_s: float, concurrency: int
) -> float:
    """The same clients calling the wallet's health Check: what the transport alone allows."""
    # The typeshed stub declares no methods on HealthStub.
    check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
    recorder = _Recorder()

    def step(n: int) -> tuple[str, Awaitable[object]]:
        return "check", check(health_pb2.HealthCheckRequest())

    elapsed = await _closed_loop(step, recorder, duration_s, concurrency)
    return recorder.postings / elapsed


async def _measure(
    channel: grpc.aio.Channel, *, duration_s: float, concurrency: int
) -> dict[str, float]:
    stub: wallet_pb2_grpc.WalletServiceAsyncStub = wallet_pb2_grpc.WalletServiceStub(channel)
    pairs = [
        (await _open_funded(stub, f"bench-{k}"), await _open_funded(stub, f"bench-{k}"))
        for k in range(concurrency)
    ]
    hot = await _open_funded(stub, "bench-hot")
    phase_s = duration_s / 2

    def distinct(n: int) -> tuple[str, Awaitable[object]]:
        k, i = divmod(n, 1_000_000)
        a, b = pairs[k]
        match i % 3:
            case 0:
                return "credit", stub.Credit(
                    W.CreditRequest(operation_ref=_ref(), account_id=a, amount=_usd(100))
                )
            case 1:
                return "debit", stub.Debit(
                    W.DebitRequest(operation_ref=_ref(), account_id=a, amount=_usd(50))
                )
            case _:
                return "transfer", stub.Transfer(
                    W.TransferRequest(
                        operation_ref=_ref(),
                        source_account_id=a,
                        destination_account_id=b,
                        amount=_usd(25),
                    )
                )

    def hot_step(n: int) -> tuple[str, Awaitable[object]]:
        if n % 2:
            return "hot_debit", stub.Debit(
                W.DebitRequest(operation_ref=_ref(), account_id=hot, amount=_usd(1))
            )
        return "hot_credit", stub.Credit(
            W.CreditRequest(operation_ref=_ref(), account_id=hot, amount=_usd(1))
        )

    client = WalletClient(channel, timeout_s=CALL_TIMEOUT_S)

    def batched(n: int) -> tuple[str, Awaitable[object]]:
        k, i = divmod(n, 1_000_000)
        a, b = pairs[k]
        if i % 2 == 0:
            return "batched_credit", client.credit(
                operation_ref=_ref(), account_id=a, amount=Money(100, "USD")
            )
        return "batched_transfer", client.transfer(
            operation_ref=_ref(),
            source_account_id=a,
            destination_account_id=b,
            amount=Money(25, "USD"),
            reference="bench",
        )

    spread = _Recorder()
    spread_s = await _closed_loop(distinct, spread, phase_s, concurrency)
    contended = _Recorder()
    hot_s = await _closed_loop(hot_step, contended, phase_s, concurrency)
    grouped = _Recorder()
    grouped_s = await _closed_loop(batched, grouped, phase_s, concurrency)

    figures = {
        "wallet_postings_distinct_per_s": spread.postings / spread_s,
        "wallet_postings_hot_per_s": contended.postings / hot_s,
        "wallet_postings_batched_per_s": grouped.postings / grouped_s,
        "wallet_errors": float(spread.errors + contended.errors + grouped.errors),
    }
    for recorder in (spread, contended, grouped):
        for name, samples in recorder.latencies.items():
            figures[f"wallet_{name}_p50_ms"] = _percentile(samples, 0.50)
            figures[f"wallet_{name}_p99_ms"] = _percentile(samples, 0.99)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("target", help="wallet service address, e.g. 127.0.0.1:50052")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    token = bench_token(load_settings())
    figures = asyncio.run(
        measure(args.target, token, duration_s=args.duration, concurrency=args.concurrency)
    )
    print(json.dumps({k: round(v, 2) for k, v in figures.items()}, indent=2))


if __name__ == "__main__":
    main()
