"""Property test on real PostgreSQL: random operations through the service layer, some of them
sent again under an earlier operation_ref (with the same or with other parameters), agree with
a simple model, apply each ref at most once (invariant 5), and leave books that `ledger verify`
finds clean (invariants 1-3)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import FailedPrecondition
from common.money import Money
from tests.integration.wallet_service.conftest import PrivateWallet
from wallet_service.adapters.audit import verify_ledger
from wallet_service.domain.errors import OperationRefReused
from wallet_service.service_layer.services import WalletService

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

steps = st.lists(
    st.tuples(
        st.sampled_from(["credit", "debit", "hold", "capture", "release", "transfer"]),
        st.integers(0, 1),  # which account
        st.integers(1, 400),  # amount, or which open hold
        st.sampled_from(["new", "new", "repeat", "reuse"]),  # whose ref
    ),
    min_size=5,
    max_size=25,
)


@dataclass
class Model:
    """Per account, a total and the open holds: too simple to be wrong."""

    totals: list[int] = field(default_factory=lambda: [0, 0])
    holds: list[dict[str, int]] = field(default_factory=lambda: [{}, {}])


Call = tuple[str, int, int, str]  # kind, account index, amount, hold id ("" if none)


def resolve(model: Model, kind: str, i: int, n: int) -> Call | None:
    """The concrete call a step stands for; None when it has nothing to act on."""
    if kind in ("capture", "release"):
        open_holds = sorted(model.holds[i])
        if not open_holds:
            return None
        return kind, i, 0, open_holds[n % len(open_holds)]
    return kind, i, n, ""


async def call(service: WalletService, accounts: list[str], ref: str, c: Call) -> Any:
    kind, i, amount, hold_id = c
    money = Money(amount, "USD")
    match kind:
        case "credit":
            return await service.credit(operation_ref=ref, account_id=accounts[i], amount=money)
        case "debit":
            return await service.debit(operation_ref=ref, account_id=accounts[i], amount=money)
        case "hold":
            return await service.place_hold(operation_ref=ref, account_id=accounts[i], amount=money)
        case "capture":
            return await service.capture_hold(operation_ref=ref, hold_id=hold_id)
        case "release":
            return await service.release_hold(operation_ref=ref, hold_id=hold_id)
        case _:
            return await service.transfer(
                operation_ref=ref,
                source_account_id=accounts[i],
                destination_account_id=accounts[1 - i],
                amount=money,
            )


def apply(model: Model, c: Call, result: Any) -> None:
    kind, i, amount, hold_id = c
    match kind:
        case "credit":
            model.totals[i] += amount
        case "debit":
            model.totals[i] -= amount
        case "hold":
            model.holds[i][result.hold_id] = amount
        case "capture":
            model.totals[i] -= model.holds[i].pop(hold_id)
        case "release":
            del model.holds[i][hold_id]
        case _:
            model.totals[i] -= amount
            model.totals[1 - i] += amount


@settings(
    max_examples=12,
    deadline=None,
    # One database for every example is intended: each example opens its own accounts.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps)
async def test_random_operations_with_repeated_refs_apply_once(
    private_wallet: PrivateWallet, ops: list[tuple[str, int, int, str]]
) -> None:
    service = private_wallet.service
    accounts = [
        (
            await service.open_account(
                owner_id="p", currency="USD", operation_ref=str(uuid.uuid4())
            )
        ).account_id
        for _ in range(2)
    ]
    model = Model()
    applied: list[tuple[str, Call, Any]] = []  # every ref that took effect, its call, result
    for kind, i, n, whose in ops:
        c = resolve(model, kind, i, n)
        if c is None:
            continue
        if whose == "new" or not applied:
            ref = str(uuid.uuid4())
            try:
                result = await call(service, accounts, ref, c)
            except FailedPrecondition:
                continue  # not enough money: refused, and the model agrees nothing moved
            apply(model, c, result)
            applied.append((ref, c, result))
        elif whose == "repeat":
            ref, first, result = applied[-1]
            again = await call(service, accounts, ref, first)
            assert _same(again, result)
        else:
            ref, first, _ = applied[-1]
            if c == first:
                continue
            with pytest.raises(OperationRefReused):
                await call(service, accounts, ref, c)

    for i, account_id in enumerate(accounts):
        account = await service.get_account(account_id)
        assert account.total_minor == model.totals[i]
        assert account.held_minor == sum(model.holds[i].values())
        assert account.available.amount_minor >= 0
    report = await verify_ledger(private_wallet.engine)
    assert report.findings == []


def _same(again: Any, first: Any) -> bool:
    key = "transaction_id" if hasattr(first, "transaction_id") else "hold_id"
    return bool(getattr(again, key) == getattr(first, key))
