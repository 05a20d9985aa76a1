"""After the load: every payment the bench caused is terminal, and no money was lost or doubled.

The bench opens its own accounts, so everything on them is the bench's doing: each balance
must equal the sum of its completed deposits, and every payment on them must carry an
idempotency key the bench sent (one payment per key). Matching on keys rather than payment ids
also covers calls that failed on the client side after the server committed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bench.context import Deposit, Movement

TERMINAL = frozenset({"completed", "failed", "refunded", "requires_manual_review", "cancelled"})


@dataclass(frozen=True, slots=True)
class StoredPayment:
    payment_id: str
    idempotency_key: str
    account_id: str
    status: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class StoredMovement:
    payment_id: str
    idempotency_key: str
    kind: str
    source_account_id: str  # empty when the payment has none
    destination_account_id: str
    status: str
    amount_minor: int


def not_terminal(
    stored: Iterable[StoredPayment | StoredMovement],
) -> list[StoredPayment | StoredMovement]:
    return [p for p in stored if p.status not in TERMINAL]


def money_problems(
    sent: Iterable[Deposit], stored: Iterable[StoredPayment], balances: Mapping[str, int]
) -> list[str]:
    """Everything wrong with the money, one line per problem; empty when all is well."""
    sent_by_key = {d.idempotency_key: d for d in sent}
    stored = list(stored)
    problems = _payment_problems(sent_by_key, stored)
    problems += [f"payment {p.payment_id} is still {p.status}" for p in not_terminal(stored)]
    problems += _balance_problems(stored, balances)
    return problems


def _payment_problems(sent: Mapping[str, Deposit], stored: list[StoredPayment]) -> list[str]:
    problems: list[str] = []
    stored_by_key: dict[str, StoredPayment] = {}
    for payment in stored:
        deposit = sent.get(payment.idempotency_key)
        if deposit is None:
            problems.append(f"payment {payment.payment_id} was never requested by the bench")
        elif payment.idempotency_key in stored_by_key:
            problems.append(f"idempotency key {payment.idempotency_key} has two payments")
        elif (payment.account_id, payment.amount_minor) != (
            deposit.account_id,
            deposit.amount_minor,
        ):
            problems.append(f"payment {payment.payment_id} differs from its request")
        stored_by_key[payment.idempotency_key] = payment
    for key, deposit in sent.items():
        if deposit.payment_id and key not in stored_by_key:
            problems.append(f"payment {deposit.payment_id} was accepted but is not stored")
    return problems


def _balance_problems(stored: list[StoredPayment], balances: Mapping[str, int]) -> list[str]:
    completed: defaultdict[str, int] = defaultdict(int)
    for payment in stored:
        if payment.status == "completed":
            completed[payment.account_id] += payment.amount_minor
    return [
        f"account {account} holds {balance} minor units, its completed deposits sum to "
        f"{completed[account]}"
        for account, balance in sorted(balances.items())
        if balance != completed[account]
    ]


def movement_problems(
    sent: Iterable[Movement],
    stored: Iterable[StoredMovement],
    funded: Mapping[str, int],
    balances: Mapping[str, int],
) -> list[str]:
    """The same checks for the transfer and withdrawal accounts: each holds what the bench
    credited it, plus completed transfers in, minus completed transfers and withdrawals out;
    so withdrawn money left exactly once and a failed one gave its hold back."""
    sent_by_key = {m.idempotency_key: m for m in sent}
    stored = list(stored)
    problems: list[str] = []
    seen: set[str] = set()
    for payment in stored:
        movement = sent_by_key.get(payment.idempotency_key)
        if movement is None:
            problems.append(f"payment {payment.payment_id} was never requested by the bench")
        elif payment.idempotency_key in seen:
            problems.append(f"idempotency key {payment.idempotency_key} has two payments")
        elif _shape(payment) != (
            movement.kind,
            movement.source_account_id,
            movement.destination_account_id,
            movement.amount_minor,
        ):
            problems.append(f"payment {payment.payment_id} differs from its request")
        seen.add(payment.idempotency_key)
    problems += [
        f"payment {m.payment_id} was accepted but is not stored"
        for key, m in sent_by_key.items()
        if m.payment_id and key not in seen
    ]
    problems += [f"payment {p.payment_id} is still {p.status}" for p in not_terminal(stored)]
    expected = defaultdict(int, funded)
    for payment in stored:
        if payment.status == "completed":
            expected[payment.source_account_id] -= payment.amount_minor
            if payment.destination_account_id:
                expected[payment.destination_account_id] += payment.amount_minor
    return problems + [
        f"account {account} holds {balance} minor units, its funding and completed transfers "
        f"and withdrawals come to {expected[account]}"
        for account, balance in sorted(balances.items())
        if balance != expected[account]
    ]


def _shape(payment: StoredMovement) -> tuple[str, str, str, int]:
    return (
        payment.kind,
        payment.source_account_id,
        payment.destination_account_id,
        payment.amount_minor,
    )
