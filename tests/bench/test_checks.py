from __future__ import annotations

from bench.checks import StoredPayment, money_problems
from bench.context import Deposit

A = "account-a"
B = "account-b"


def sent() -> list[Deposit]:
    return [
        Deposit("k1", A, 100, "p1"),
        Deposit("k2", A, 250, "p2"),
        Deposit("k3", B, 70, "p3"),
        # The call failed on the client side; the server may still have committed it.
        Deposit("k4", B, 30, ""),
    ]


def stored(**status: str) -> list[StoredPayment]:
    rows = [
        StoredPayment("p1", "k1", A, "completed", 100),
        StoredPayment("p2", "k2", A, "completed", 250),
        StoredPayment("p3", "k3", B, "failed", 70),
        StoredPayment("p4", "k4", B, "completed", 30),
    ]
    return [
        StoredPayment(
            r.payment_id,
            r.idempotency_key,
            r.account_id,
            status.get(r.payment_id, r.status),
            r.amount_minor,
        )
        for r in rows
    ]


def test_balances_that_match_completed_deposits_pass() -> None:
    assert money_problems(sent(), stored(), {A: 350, B: 30}) == []


def test_a_lost_credit_fails() -> None:
    problems = money_problems(sent(), stored(), {A: 250, B: 30})
    assert problems == [f"account {A} holds 250 minor units, its completed deposits sum to 350"]


def test_a_doubled_credit_fails() -> None:
    assert money_problems(sent(), stored(), {A: 450, B: 30})


def test_a_payment_left_pending_fails() -> None:
    problems = money_problems(sent(), stored(p2="pending"), {A: 100, B: 30})
    assert problems == ["payment p2 is still pending"]


def test_a_payment_the_bench_never_asked_for_fails() -> None:
    extra = [*stored(), StoredPayment("p9", "k9", A, "completed", 5)]
    problems = money_problems(sent(), extra, {A: 355, B: 30})
    assert problems == ["payment p9 was never requested by the bench"]


def test_two_payments_for_one_key_fail() -> None:
    twice = [*stored(), StoredPayment("p5", "k1", A, "completed", 100)]
    assert "idempotency key k1 has two payments" in money_problems(sent(), twice, {A: 450, B: 30})


def test_an_accepted_payment_missing_from_the_database_fails() -> None:
    problems = money_problems(sent(), stored()[1:], {A: 250, B: 30})
    assert problems == ["payment p1 was accepted but is not stored"]


def test_a_payment_stored_with_another_amount_fails() -> None:
    rows = stored()
    rows[0] = StoredPayment("p1", "k1", A, "completed", 101)
    assert "payment p1 differs from its request" in money_problems(sent(), rows, {A: 351, B: 30})
