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

from bench.context import Deposit

TERMINAL = frozenset({"completed", "failed", "refunded", "requires_manual_review", "cancelled"})


@dataclass(frozen=True, slots=True)
class StoredPayment:
    payment_id: str
    idempotency_key: str
    account_id: str
    status: str
    amount_minor: int


def not_terminal(stored: Iterable[StoredPayment]) -> list[StoredPayment]:
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
