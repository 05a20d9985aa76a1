"""Property test: random sequences of credits, debits, holds, captures, releases, expiries and
transfers (across currencies too) keep design.md §8 invariants 1-3 and agree with a model that
is too simple to be wrong: per account, a total and a dict of open holds."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import FailedPrecondition
from common.money import Money
from wallet_service.domain import postings
from wallet_service.domain.account import Account, Limits
from wallet_service.domain.fx import FxRate
from wallet_service.domain.ledger import LedgerTransaction, imbalance

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# A low balance limit, so refusals for LIMIT_EXCEEDED are part of the sequences too.
LIMITS = Limits(max_balance_minor=20_000)
RATES = {
    ("USD", "JPY"): FxRate("USD", "JPY", Fraction(3011, 20), "test", T0),  # 150.55
    ("JPY", "USD"): FxRate("JPY", "USD", Fraction(133, 20000), "test", T0),  # 0.00665
    ("USD", "KWD"): FxRate("USD", "KWD", Fraction(3075, 10000), "test", T0),
    ("KWD", "USD"): FxRate("KWD", "USD", Fraction(13, 4), "test", T0),
    ("JPY", "KWD"): FxRate("JPY", "KWD", Fraction(1, 500), "test", T0),
    ("KWD", "JPY"): FxRate("KWD", "JPY", Fraction(500), "test", T0),
}
CURRENCIES = ("USD", "USD", "JPY", "KWD")

operations = st.lists(
    st.tuples(
        st.sampled_from(["credit", "debit", "hold", "capture", "release", "expire", "transfer"]),
        st.integers(0, len(CURRENCIES) - 1),
        st.integers(0, len(CURRENCIES) - 1),
        st.integers(1, 8_000),
        st.integers(0, 100),
    ),
    min_size=20,
    max_size=80,
)


@dataclass
class Model:
    totals: list[int]
    holds: list[dict[str, int]] = field(default_factory=lambda: [{} for _ in CURRENCIES])

    def available(self, i: int) -> int:
        return self.totals[i] - sum(self.holds[i].values())


@dataclass
class World:
    accounts: list[Account]
    journal: list[LedgerTransaction] = field(default_factory=list)
    now: datetime = T0
    counter: int = 0

    def ref(self) -> str:
        self.counter += 1
        return f"op-{self.counter}"


def step(world: World, model: Model, op: tuple[str, int, int, int, int]) -> None:
    kind, i, j, amount_minor, pick = op
    account = world.accounts[i]
    amount = Money(amount_minor, account.currency)
    holds = model.holds[i]
    hold_id = sorted(holds)[pick % len(holds)] if holds else ""
    fits = amount_minor <= model.available(i)
    try:
        match kind:
            case "credit":
                world.journal.append(
                    postings.credit(account, amount, operation_ref=world.ref(), limits=LIMITS)
                )
                model.totals[i] += amount_minor
            case "debit":
                world.journal.append(
                    postings.debit(account, amount, operation_ref=world.ref(), limits=LIMITS)
                )
                assert fits
                model.totals[i] -= amount_minor
            case "hold":
                ref = world.ref()
                account.place_hold(
                    hold_id=ref,
                    amount=amount,
                    expires_at=world.now + timedelta(minutes=pick),
                    reference="",
                    operation_ref=ref,
                    limits=LIMITS,
                )
                assert fits
                holds[ref] = amount_minor
            case "capture" if hold_id:
                part = min(amount_minor, holds[hold_id])
                txn = postings.capture(
                    account,
                    hold_id,
                    Money(part, account.currency),
                    operation_ref=world.ref(),
                    now=world.now,
                )
                world.journal.append(txn)
                model.totals[i] -= part
                del holds[hold_id]
            case "release" if hold_id:
                account.release_hold(hold_id, world.ref())
                del holds[hold_id]
            case "expire":
                world.now += timedelta(minutes=pick % 10)
                for expired in account.expire_holds(world.now):
                    del holds[expired]
            case "transfer" if i != j:
                destination = world.accounts[j]
                rate = RATES.get((account.currency, destination.currency))
                txn = postings.transfer(
                    account,
                    destination,
                    amount,
                    operation_ref=world.ref(),
                    limits=LIMITS,
                    rate=rate,
                )
                world.journal.append(txn)
                assert fits
                model.totals[i] -= amount_minor
                model.totals[j] += txn.entry_for(destination.account_id).amount.amount_minor
    except FailedPrecondition:
        # Refused: the model must agree there was a reason (not enough money, an expired
        # hold being captured, a conversion to nothing), and nothing may have changed.
        assert kind in {"credit", "debit", "hold", "transfer", "capture"}


def check_invariants(world: World, model: Model) -> None:
    entries = [e for txn in world.journal for e in txn.entries]
    # 1. Every transaction balances; so does the whole journal, per currency.
    for txn in world.journal:
        assert imbalance(e.amount for e in txn.entries) == {}
    assert imbalance(e.amount for e in entries) == {}
    per_account: dict[str, int] = defaultdict(int)
    for entry in entries:
        per_account[entry.account_id] += entry.amount.amount_minor
    for i, account in enumerate(world.accounts):
        # The model agrees on balances and holds.
        assert account.total_minor == model.totals[i]
        assert account.held_minor == sum(model.holds[i].values())
        assert set(account.holds) == set(model.holds[i])
        # 2. Available never negative.
        assert account.available.amount_minor >= 0
        # 3. Balance == sum of its journal entries == replay of its events.
        assert per_account[account.account_id] == account.total_minor
        replayed = Account(account.account_id, account.owner_id, account.currency)
        replayed.replay(account.new_events)
        assert replayed.snapshot() == account.snapshot()
        assert all(r.intact() for r in account.new_events)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_random_operations_keep_the_invariants(ops: list[tuple[str, int, int, int, int]]) -> None:
    accounts = [
        Account.open(owner_id=f"o{n}", currency=c, open_ref=f"r{n}")
        for n, c in enumerate(CURRENCIES)
    ]
    world = World(accounts)
    model = Model([0] * len(CURRENCIES))
    for op in ops:
        step(world, model, op)
        check_invariants(world, model)
