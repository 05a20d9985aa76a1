from __future__ import annotations

import pytest

from bench.checks import StoredMovement, movement_problems
from bench.context import Movement
from bench.movements import transfer_pair

A, B, C = "account-a", "account-b", "account-c"
FUNDED = {A: 1_000, B: 1_000, C: 1_000}


def sent() -> list[Movement]:
    return [
        Movement("t1", "transfer", A, B, 100, "p1"),
        Movement("w1", "withdrawal", B, "", 300, "p2"),
        Movement("w2", "withdrawal", C, "", 50, "p3"),
        # The call failed on the client side; the server may still have committed it.
        Movement("t2", "transfer", C, A, 20, ""),
    ]


def stored(**status: str) -> list[StoredMovement]:
    rows = [
        ("p1", "t1", "transfer", A, B, "completed", 100),
        ("p2", "w1", "withdrawal", B, "", "completed", 300),
        ("p3", "w2", "withdrawal", C, "", "failed", 50),
        ("p4", "t2", "transfer", C, A, "completed", 20),
    ]
    return [
        StoredMovement(pid, key, kind, src, dst, status.get(pid, st), amount)
        for pid, key, kind, src, dst, st, amount in rows
    ]


BALANCES = {A: 920, B: 800, C: 980}


def test_funding_plus_completed_transfers_minus_completed_withdrawals_passes() -> None:
    assert movement_problems(sent(), stored(), FUNDED, BALANCES) == []


def test_a_withdrawal_taken_twice_is_found() -> None:
    problems = movement_problems(sent(), stored(), FUNDED, {**BALANCES, B: 500})
    assert problems == [
        f"account {B} holds 500 minor units, its funding and completed transfers and "
        "withdrawals come to 800"
    ]


def test_a_failed_withdrawal_that_kept_its_money_is_found() -> None:
    problems = movement_problems(sent(), stored(), FUNDED, {**BALANCES, C: 930})
    assert len(problems) == 1
    assert problems[0].startswith(f"account {C} holds 930")


def test_unknown_doubled_changed_missing_and_unfinished_payments_are_found() -> None:
    rows = stored(p2="pending")
    rows.append(StoredMovement("p9", "nobody", "withdrawal", A, "", "completed", 1))
    rows.append(StoredMovement("p5", "t1", "transfer", A, B, "failed", 100))
    rows[2] = StoredMovement("p3", "w2", "withdrawal", C, "", "failed", 51)
    rows = [r for r in rows if r.payment_id != "p4"]
    sent_ = [*sent()[:3], Movement("t2", "transfer", C, A, 20, "p4")]
    problems = movement_problems(sent_, rows, FUNDED, {A: 899, B: 1_100, C: 1_000})
    assert "payment p9 was never requested by the bench" in problems
    assert "idempotency key t1 has two payments" in problems
    assert "payment p3 differs from its request" in problems
    assert "payment p4 was accepted but is not stored" in problems
    assert "payment p2 is still pending" in problems


def test_transfer_pairs_are_disjoint_and_alternate_direction() -> None:
    accounts = [A, B, C, "account-d"]
    assert transfer_pair(0, accounts) == (A, B)
    assert transfer_pair(1, accounts) == (C, "account-d")
    assert transfer_pair(2, accounts) == (B, A)
    assert transfer_pair(3, accounts) == ("account-d", C)
    assert transfer_pair(4, accounts) == (A, B)


def test_transfer_pairs_need_two_accounts() -> None:
    with pytest.raises(ValueError, match="two accounts"):
        transfer_pair(0, [A])
