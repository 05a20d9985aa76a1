"""The checker cannot lie: a consistent history passes, and each doctored one is caught by the
check meant for it. Small hand-built histories, no servers."""

from __future__ import annotations

import dataclasses

import pytest

from chaos.checker import CheckResult, check
from chaos.history import (
    AccountView,
    Call,
    DeadLetter,
    Fault,
    History,
    Observed,
    PaymentView,
    ProviderOp,
    ReviewCase,
    TransactionView,
)

ACCOUNT = "acc-1"
CLEARING = "clearing-usd"
DEPOSIT = "pay-dep"
WITHDRAWAL = "pay-wd"


def _call(op: str, key: str, payment_id: str, **changes: object) -> Call:
    call = Call(
        client=0,
        op=op,
        via="grpc",
        key=key,
        request=f"{op} 100",
        started=1.0,
        ended=1.1,
        outcome="OK",
        payment_id=payment_id,
        status="initiated",
    )
    return dataclasses.replace(call, **changes)  # type: ignore[arg-type]  # changes are Call fields given by each test, typed object


def consistent() -> tuple[History, Observed]:
    """A deposit of 100 USD completed, then a withdrawal of 30 completed: 70 left."""
    history = History(
        seed=7,
        calls=[_call("deposit", "k-dep", DEPOSIT), _call("withdrawal", "k-wd", WITHDRAWAL)],
        faults=[Fault("kill", "payment", 2.0, 2.0)],
        watched={DEPOSIT: ["initiated", "pending", "completed"]},
    )
    observed = Observed(
        payments={
            DEPOSIT: PaymentView(DEPOSIT, "deposit", "completed", 100, "USD", "k-dep"),
            WITHDRAWAL: PaymentView(WITHDRAWAL, "withdrawal", "completed", 30, "USD", "k-wd"),
        },
        trails={
            DEPOSIT: ["initiated", "pending", "completed"],
            WITHDRAWAL: ["initiated", "pending", "completed"],
        },
        accounts={
            ACCOUNT: AccountView(ACCOUNT, "USD", "customer", 70, 0, 70, 70),
            CLEARING: AccountView(CLEARING, "USD", "clearing", -70, 0, -70, -70),
        },
        transactions=[
            TransactionView("t1", f"{DEPOSIT}:credit", "credit", {"USD": 0}),
            TransactionView("t2", f"{WITHDRAWAL}:capture", "capture", {"USD": 0}),
        ],
        provider_ops=[
            ProviderOp("charge", "succeeded", 100, "USD", DEPOSIT),
            ProviderOp("payout", "succeeded", 30, "USD", WITHDRAWAL),
        ],
        outbox_backlog={"payments": 0},
        pending_entries={"paysuite.payment.events/payment": 0},
        all_terminal_at=5.0,
    )
    return history, observed


def failed(history: History, observed: Observed) -> dict[str, list[str]]:
    results: list[CheckResult] = check(history, observed, recovery_window_s=60)
    return {r.name: r.violations for r in results if not r.ok}


def test_a_consistent_history_passes_every_check() -> None:
    assert failed(*consistent()) == {}


def test_a_doubled_credit_is_caught() -> None:
    history, observed = consistent()
    observed.accounts[ACCOUNT] = AccountView(ACCOUNT, "USD", "customer", 170, 0, 170, 70)
    observed.accounts[CLEARING] = AccountView(CLEARING, "USD", "clearing", -170, 0, -170, -170)
    observed.transactions.append(
        TransactionView("t3", f"{DEPOSIT}:review-credit", "credit", {"USD": 0})
    )

    problems = failed(history, observed)

    assert "money conserved per currency" in problems
    assert "provider and clearing agree" in problems
    assert any("2 credit transactions" in v for v in problems["one effect per key and operation"])


def test_a_lost_deposit_is_caught() -> None:
    """The provider took the money, the deposit failed and nothing gave the money back."""
    history, observed = consistent()
    observed.payments[DEPOSIT] = PaymentView(DEPOSIT, "deposit", "failed", 100, "USD", "k-dep")
    observed.trails[DEPOSIT] = ["initiated", "pending", "failed"]
    history.watched[DEPOSIT] = ["initiated", "pending", "failed"]
    observed.accounts[ACCOUNT] = AccountView(ACCOUNT, "USD", "customer", -30, 0, -30, -30)
    observed.accounts[CLEARING] = AccountView(CLEARING, "USD", "clearing", 30, 0, 30, 30)
    observed.transactions.pop(0)

    problems = failed(history, observed)

    assert "provider and clearing agree" in problems


def test_an_acknowledged_deposit_that_vanished_is_caught() -> None:
    history, observed = consistent()
    del observed.payments[DEPOSIT]

    problems = failed(history, observed)

    assert any("now gone" in v for v in problems["every acknowledged request accounted for"])


def test_a_negative_balance_is_caught() -> None:
    history, observed = consistent()
    observed.accounts[ACCOUNT] = AccountView(ACCOUNT, "USD", "customer", 70, 0, 70, -20)

    problems = failed(history, observed)

    assert problems == {"no available balance ever negative": [f"account {ACCOUNT}: went to -20"]}


def test_holds_beyond_the_balance_are_caught() -> None:
    history, observed = consistent()
    observed.accounts[ACCOUNT] = AccountView(ACCOUNT, "USD", "customer", 70, 90, 70, 70)

    assert "no available balance ever negative" in failed(history, observed)


def test_a_balance_that_differs_from_its_history_is_caught() -> None:
    history, observed = consistent()
    observed.accounts[ACCOUNT] = AccountView(ACCOUNT, "USD", "customer", 75, 0, 70, 70)

    assert "every balance equals its history" in failed(history, observed)


def test_a_state_regression_in_the_audit_trail_is_caught() -> None:
    history, observed = consistent()
    observed.trails[DEPOSIT] = ["initiated", "pending", "completed", "pending", "completed"]

    problems = failed(history, observed)

    assert (
        f"payment {DEPOSIT}: went from completed to pending" in problems["no state went backwards"]
    )


def test_a_watch_stream_that_disagrees_with_the_audit_trail_is_caught() -> None:
    history, observed = consistent()
    history.watched[DEPOSIT] = ["initiated", "completed", "pending"]

    assert "no state went backwards" in failed(history, observed)


def test_a_reopened_watch_stream_repeating_the_current_status_passes() -> None:
    history, observed = consistent()
    history.watched[DEPOSIT] = ["initiated", "pending", "pending", "completed"]

    assert failed(history, observed) == {}


def test_a_stuck_payment_is_caught_and_so_is_liveness() -> None:
    history, observed = consistent()
    observed.payments[WITHDRAWAL] = PaymentView(
        WITHDRAWAL, "withdrawal", "pending", 30, "USD", "k-wd"
    )
    observed.all_terminal_at = None

    problems = failed(history, observed)

    assert problems["every payment terminal or in review with a reason"] == [
        f"withdrawal {WITHDRAWAL}: pending, stuck"
    ]
    assert "liveness" in problems


def test_a_review_needs_a_reason_code() -> None:
    history, observed = consistent()
    observed.payments[WITHDRAWAL] = PaymentView(
        WITHDRAWAL, "withdrawal", "requires_manual_review", 30, "USD", "k-wd"
    )
    observed.trails[WITHDRAWAL] = ["initiated", "pending", "requires_manual_review"]
    assert "every payment terminal or in review with a reason" in failed(history, observed)

    observed.review_cases.append(ReviewCase(WITHDRAWAL, "CAPTURE_FAILED", "open"))
    assert failed(history, observed) == {}


def test_a_dead_lettered_good_event_is_caught() -> None:
    history, observed = consistent()
    observed.dead_letters.append(
        DeadLetter("paysuite.gateway.events", "charge.succeeded", "handler failed")
    )

    assert "no good event dead-lettered" in failed(history, observed)


def test_an_unbalanced_ledger_transaction_is_caught() -> None:
    history, observed = consistent()
    observed.transactions[0] = TransactionView("t1", f"{DEPOSIT}:credit", "credit", {"USD": 5})

    problems = failed(history, observed)

    assert problems["every ledger transaction balances"] == [
        f"transaction {DEPOSIT}:credit: USD entries sum to 5"
    ]


def test_refunds_beyond_the_captured_amount_are_caught() -> None:
    history, observed = consistent()
    for n in (1, 2):
        refund = f"pay-ref-{n}"
        observed.payments[refund] = PaymentView(
            refund, "refund", "completed", 60, "USD", f"k-ref-{n}", parent_payment_id=DEPOSIT
        )

    problems = failed(history, observed)

    assert problems["refunds never beyond what was captured"] == [
        f"deposit {DEPOSIT}: 120 refunded of 100 captured"
    ]


def test_a_key_reused_with_another_request_must_be_refused() -> None:
    history, observed = consistent()
    history.calls.append(_call("deposit", "k-dep", "pay-other", reuses_key=True))

    assert "a reused key with another request refused" in failed(history, observed)

    history.calls[-1] = _call("deposit", "k-dep", "", reuses_key=True, outcome="ALREADY_EXISTS")
    assert failed(history, observed) == {}


def test_one_key_answered_with_two_payments_is_caught() -> None:
    history, observed = consistent()
    history.calls.append(_call("deposit", "k-dep", WITHDRAWAL))

    assert "one effect per key and operation" in failed(history, observed)


@pytest.mark.parametrize("code", ["INTERNAL", "UNKNOWN"])
def test_an_internal_or_unknown_answer_is_caught(code: str) -> None:
    history, observed = consistent()
    history.calls.append(_call("transfer", "k-t", "", outcome=code))

    assert "no INTERNAL or UNKNOWN answer" in failed(history, observed)


def test_a_backlog_or_pending_entry_is_caught() -> None:
    history, observed = consistent()
    observed.outbox_backlog["wallets"] = 3
    observed.pending_entries["paysuite.gateway.events/payment"] = 1

    assert len(failed(history, observed)["outbox drained, nothing pending"]) == 2


def test_recovery_slower_than_the_window_is_caught() -> None:
    history, observed = consistent()
    observed.all_terminal_at = 2.0 + 61.0

    assert failed(history, observed) == {
        "liveness": ["took 61.0 s, the window is 60 s"],
    }


def test_ledger_verify_findings_fail_the_run() -> None:
    history, observed = consistent()
    observed.ledger_findings.append("chain acc-1: hash mismatch at version 3")

    assert "ledger verify" in failed(history, observed)


def test_a_stuck_payment_s_violation_shows_its_steps() -> None:
    history, observed = consistent()
    observed.payments[WITHDRAWAL] = PaymentView(
        WITHDRAWAL, "withdrawal", "pending", 30, "USD", "k-wd"
    )
    observed.open_steps[WITHDRAWAL] = ["22:01:02.003 payment.pending", "22:01:15.120 recovery"]

    problems = failed(history, observed)

    assert problems["every payment terminal or in review with a reason"] == [
        f"withdrawal {WITHDRAWAL}: pending, stuck; its steps:"
        " 22:01:02.003 payment.pending, 22:01:15.120 recovery"
    ]
