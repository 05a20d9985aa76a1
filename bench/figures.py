"""What each figure means: its label, unit, baseline and budget (design.md §9).

A section's figures are plain `{key: value}` dicts; this table is how the report knows that
`relay_events_per_s` is compared with `raw_xadd_per_s` and must reach 10,000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Budget:
    at_least: float | None = None
    at_most: float | None = None
    # The figure divided by its baseline must reach this (e.g. 1/16 of the trivial call).
    min_ratio: float | None = None
    # The figure counts whole things per payment (events per deposit): a fraction is only
    # the window's edges (payments in flight as it opens and closes), so the nearest whole
    # number is judged.
    whole: bool = False

    def describe(self) -> str:
        parts = []
        if self.at_least is not None:
            parts.append(f"≥ {self.at_least:,.0f}")
        if self.at_most is not None:
            parts.append(f"≤ {self.at_most:,.0f}")
        if self.min_ratio is not None:
            parts.append(f"ratio ≥ {self.min_ratio:.4g}")
        if self.whole:
            parts.append("rounded")
        return ", ".join(parts)

    def passes(self, value: float, ratio: float | None) -> bool:
        if math.isnan(value):
            return False
        if self.whole:
            value = round(value)
        if self.at_least is not None and value < self.at_least:
            return False
        if self.at_most is not None and value > self.at_most:
            return False
        return self.min_ratio is None or (ratio is not None and ratio >= self.min_ratio)


@dataclass(frozen=True, slots=True)
class Figure:
    key: str
    label: str
    unit: str
    baseline: str | None = None
    budget: Budget | None = None


_RATE = "/s"
_MS = "ms"


def _rejected(kind: str, tail: str, rpc: str, loop: str) -> tuple[Figure, Figure]:
    """Admission control's refusals of a loop's creates (bench/admission.py), each repeated."""
    return (
        Figure(f"{kind}_rejected{tail}", f"{rpc} refused RESOURCE_EXHAUSTED, {loop}", "calls"),
        Figure(f"{kind}_rejected_share{tail}", f"{rpc} attempts refused, share, {loop}", "%"),
    )


FIGURES: tuple[Figure, ...] = (
    Figure("health_calls_per_s", "baseline: health Check, closed loop", _RATE),
    Figure(
        "complete_deposits_per_s",
        "deposits completed, complete loop (each client waits)",
        _RATE,
        "health_calls_per_s",
        Budget(at_least=250, min_ratio=1 / 16),
    ),
    Figure("complete_create_to_completed_p50_ms", "create → completed p50, complete loop", _MS),
    Figure("complete_create_to_completed_p99_ms", "create → completed p99, complete loop", _MS),
    Figure("deposit_errors_complete", "deposits failed, complete loop", "calls"),
    *_rejected("deposit", "_complete", "CreateDeposit", "complete loop"),
    Figure(
        "deposit_creates_per_s", "CreateDeposit accepted, closed loop", _RATE, "health_calls_per_s"
    ),
    Figure("deposit_create_p50_ms", "CreateDeposit p50, closed loop", _MS),
    Figure("deposit_create_p95_ms", "CreateDeposit p95, closed loop", _MS),
    Figure("deposit_create_p99_ms", "CreateDeposit p99, closed loop", _MS),
    Figure(
        "deposits_completed_per_s",
        "deposits completed, closed loop",
        _RATE,
        "health_calls_per_s",
        Budget(at_least=250, min_ratio=1 / 16),
    ),
    Figure("create_to_completed_p50_ms", "create → completed p50, closed loop", _MS),
    Figure(
        "create_to_completed_p99_ms",
        "create → completed p99, closed loop (from the first attempt, refusals included)",
        _MS,
    ),
    Figure("admitted_to_completed_p50_ms", "create → completed p50, closed loop (admitted)", _MS),
    Figure(
        "admitted_to_completed_p99_ms",
        "create → completed p99, closed loop (admitted)",
        _MS,
        budget=Budget(at_most=2000),
    ),
    Figure("deposit_errors_closed", "CreateDeposit errors, closed loop", "calls"),
    *_rejected("deposit", "_closed", "CreateDeposit", "closed loop"),
    Figure("open_loop_arrivals_per_s", "open loop arrival rate (½ completed/s)", _RATE),
    Figure("open_create_p50_ms", "CreateDeposit p50, open loop", _MS),
    Figure("open_create_p99_ms", "CreateDeposit p99, open loop", _MS, budget=Budget(at_most=50)),
    Figure("webhook_to_completed_p50_ms", "webhook received → completed p50, open loop", _MS),
    Figure(
        "webhook_to_completed_p99_ms",
        "webhook received → completed p99, open loop",
        _MS,
        budget=Budget(at_most=150),
    ),
    Figure("deposit_errors_open", "CreateDeposit errors, open loop", "calls"),
    *_rejected("deposit", "_open", "CreateDeposit", "open loop"),
    Figure(
        "transfers_completed_per_s",
        "transfers completed (CreateTransfer answered), closed loop",
        _RATE,
        "health_calls_per_s",
        Budget(at_least=500),
    ),
    Figure("transfer_create_p50_ms", "CreateTransfer p50, closed loop", _MS),
    Figure("transfer_create_p99_ms", "CreateTransfer p99, closed loop", _MS),
    Figure("transfer_errors", "CreateTransfer errors, closed loop", "calls"),
    *_rejected("transfer", "", "CreateTransfer", "closed loop"),
    Figure(
        "withdrawals_completed_per_s",
        "withdrawals completed, closed loop",
        _RATE,
        "health_calls_per_s",
        Budget(at_least=200),
    ),
    Figure("withdrawal_create_p50_ms", "CreateWithdrawal p50, closed loop", _MS),
    Figure("withdrawal_create_p99_ms", "CreateWithdrawal p99, closed loop", _MS),
    Figure("withdrawal_to_completed_p50_ms", "withdrawal create → completed p50", _MS),
    Figure("withdrawal_to_completed_p99_ms", "withdrawal create → completed p99", _MS),
    Figure("withdrawal_errors", "CreateWithdrawal errors, closed loop", "calls"),
    *_rejected("withdrawal", "", "CreateWithdrawal", "closed loop"),
    Figure(
        "complete_withdrawals_per_s",
        "withdrawals completed, complete loop (each client waits)",
        _RATE,
        "health_calls_per_s",
    ),
    Figure("withdrawal_errors_complete", "withdrawals failed, complete loop", "calls"),
    *_rejected("withdrawal", "_complete", "CreateWithdrawal", "complete loop"),
    Figure("raw_xadd_per_s", "baseline: raw pipelined XADD", _RATE),
    Figure(
        "relay_events_per_s",
        "outbox relay, rows → stream",
        _RATE,
        "raw_xadd_per_s",
        Budget(at_least=10_000),
    ),
    Figure("raw_xread_per_s", "baseline: raw XREAD", _RATE),
    Figure(
        "consumer_events_per_s",
        "no-op stream consumer",
        _RATE,
        "raw_xread_per_s",
        Budget(at_least=5_000),
    ),
    # What an entry a group does not act on costs it (acknowledged unread, never decoded).
    # No group of the suite's meets one on a payment's path since the saga's triggers have a
    # stream of their own (the saga's group skipped two per deposit before); the cost table's
    # "acknowledged unread" row shows that it stays so.
    Figure(
        "skipping_consumer_events_per_s",
        "stream consumer, entries acknowledged unread",
        _RATE,
        "raw_xread_per_s",
    ),
)

# Reserved for the wallet and webhook sections (bench/wallet_bench.py, bench/webhook_bench.py):
# return these keys and the table compares them with their baseline and budget.
FIGURES += (
    Figure("wallet_trivial_calls_per_s", "baseline: wallet health Check", _RATE),
    Figure(
        "wallet_postings_distinct_per_s",
        "wallet postings, distinct accounts",
        _RATE,
        "wallet_trivial_calls_per_s",
        Budget(at_least=2_000),
    ),
    Figure(
        "wallet_postings_hot_per_s",
        "wallet postings, one hot account",
        _RATE,
        "wallet_trivial_calls_per_s",
        Budget(at_least=300),
    ),
    # No budget: the budget above is for postings that each pay their own call. This is the
    # ledger as the suite's saga reaches it, a batch call for the postings made together.
    Figure(
        "wallet_postings_batched_per_s",
        "wallet postings, distinct accounts, through the suite's batching client",
        _RATE,
        "wallet_trivial_calls_per_s",
    ),
    *(
        Figure(f"wallet_{rpc}_{q}_ms", f"wallet {rpc.replace('_', ' ')} {q}", _MS)
        for rpc in (
            "credit",
            "debit",
            "transfer",
            "hot_credit",
            "hot_debit",
            "batched_credit",
            "batched_transfer",
        )
        for q in ("p50", "p99")
    ),
    Figure("wallet_errors", "wallet calls failed", "calls"),
    # Every path takes its row locks in one order, so a deadlock is a bug: PostgreSQL breaks
    # it only after `deadlock_timeout`, and that second stalls every payment behind it.
    Figure(
        "postgres_deadlocks",
        "PostgreSQL deadlocks in the suite's databases, whole run",
        "deadlocks",
        budget=Budget(at_most=0),
    ),
    Figure("wallet_replicas", "wallet replicas in the suite", "processes"),
    Figure(
        "wallet_trivial_calls_per_s_2_replicas",
        "baseline: wallet health Check, 2 replicas",
        _RATE,
    ),
    Figure(
        "wallet_postings_distinct_per_s_2_replicas",
        "wallet postings, distinct accounts, 2 replicas",
        _RATE,
        "wallet_trivial_calls_per_s_2_replicas",
    ),
    Figure(
        "wallet_postings_hot_per_s_2_replicas",
        "wallet postings, one hot account, 2 replicas",
        _RATE,
        "wallet_trivial_calls_per_s_2_replicas",
    ),
    Figure("wallet_errors_2_replicas", "wallet calls failed, 2 replicas", "calls"),
    Figure("http_trivial_per_s", "baseline: trivial HTTP request to the adapter", _RATE),
    Figure(
        "webhooks_per_s",
        "webhooks through the adapter into the gateway",
        _RATE,
        "http_trivial_per_s",
        Budget(at_least=1_000),
    ),
)

BY_KEY = {figure.key: figure for figure in FIGURES}


def describe(key: str) -> Figure:
    """A figure's description; an undescribed one is shown under its key, without a unit."""
    return BY_KEY.get(key, Figure(key, key, ""))
