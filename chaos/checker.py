"""Every invariant of a chaos run, judged from the recorded history and the observed end state.

A pure function: no I/O, no clock. Each check returns the violations it found, one line each,
naming the payment, account, key or event, so a failing run says where to look.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chaos.history import (
    FORBIDDEN,
    OK,
    History,
    Observed,
    PaymentView,
)
from payment_service.domain.status import ALLOWED, TERMINAL, PaymentStatus

REVIEW = PaymentStatus.REQUIRES_MANUAL_REVIEW.value
TERMINAL_NAMES = frozenset(status.value for status in TERMINAL)
# A deposit that reached COMPLETED was credited; REFUNDED without COMPLETED before it is the
# compensation path (the credit never happened, the provider gave the money back).
CREDITED = PaymentStatus.COMPLETED.value
# The answer to a key reused with a different request.
KEY_REUSED = "ALREADY_EXISTS"
# The recovery worker's reconciliation: a payment whose money disagrees with the provider.
RECONCILIATION = "RECONCILIATION_MISMATCH"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    violations: list[str]
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass(frozen=True, slots=True)
class Inputs:
    history: History
    observed: Observed
    recovery_window_s: float


Check = Callable[[Inputs], tuple[list[str], str]]


def check(history: History, observed: Observed, *, recovery_window_s: float) -> list[CheckResult]:
    inputs = Inputs(history, observed, recovery_window_s)
    results = []
    for name, run in CHECKS:
        violations, summary = run(inputs)
        results.append(CheckResult(name, violations, summary))
    return results


# --- money ---------------------------------------------------------------------------------


def _in_review(observed: Observed) -> dict[str, int]:
    """Per currency, the money of payments in review: what the books may legitimately lack
    until an operator decides (a credit not yet applied, a capture not yet taken)."""
    slack: dict[str, int] = defaultdict(int)
    for payment in observed.payments.values():
        if payment.status == REVIEW:
            slack[payment.currency] += payment.amount_minor
    return slack


def expected_money(observed: Observed) -> dict[str, int]:
    """Per currency, what the payments say the wallet holds: credited deposits, less
    completed refunds and completed withdrawals (invariant 4)."""
    money: dict[str, int] = defaultdict(int)
    for payment in observed.payments.values():
        money[payment.currency] += _effect(payment, observed.trails.get(payment.payment_id, []))
    return money


def _effect(payment: PaymentView, trail: list[str]) -> int:
    completed = payment.status == CREDITED or CREDITED in trail
    if payment.kind == "deposit" and completed:
        return payment.amount_minor
    if payment.kind in ("withdrawal", "refund") and completed:
        return -payment.amount_minor
    return 0


def held_money(observed: Observed) -> dict[str, int]:
    """Per currency, the balance of every customer, FX and fees account: the money inside."""
    money: dict[str, int] = defaultdict(int)
    for account in observed.accounts.values():
        if account.kind != "clearing":
            money[account.currency] += account.entries_minor
    return money


def _conservation(inputs: Inputs) -> tuple[list[str], str]:
    observed = inputs.observed
    expected, held, slack = expected_money(observed), held_money(observed), _in_review(observed)
    violations = []
    for currency in sorted(set(expected) | set(held)):
        diff = held.get(currency, 0) - expected.get(currency, 0)
        if abs(diff) > slack.get(currency, 0):
            violations.append(
                f"{currency}: accounts hold {held.get(currency, 0)}, payments say"
                f" {expected.get(currency, 0)} (off by {diff:+d})"
            )
    summary = ", ".join(f"{c} {v}" for c, v in sorted(held.items()))
    return violations, f"held per currency: {summary}" if summary else "no money moved"


def _provider_agrees(inputs: Inputs) -> tuple[list[str], str]:
    """What the provider holds of ours (charges less refunds and payouts that succeeded)
    equals what the clearing accounts mirror: a charge taken and never credited or refunded,
    or a payout made and never captured, is money lost."""
    observed = inputs.observed
    provider: dict[str, int] = defaultdict(int)
    sign = {"charge": 1, "refund": -1, "payout": -1}
    for op in observed.provider_ops:
        if op.status == "succeeded":
            provider[op.currency] += sign.get(op.kind, 0) * op.amount_minor
    clearing: dict[str, int] = defaultdict(int)
    for account in observed.accounts.values():
        if account.kind == "clearing":
            clearing[account.currency] -= account.entries_minor
    slack = _in_review(observed)
    violations = [
        f"{currency}: the provider holds {provider.get(currency, 0)}, clearing mirrors"
        f" {clearing.get(currency, 0)}"
        for currency in sorted(set(provider) | set(clearing))
        if abs(provider.get(currency, 0) - clearing.get(currency, 0)) > slack.get(currency, 0)
    ]
    return violations, f"{len(observed.provider_ops)} provider operations"


def _balances_are_histories(inputs: Inputs) -> tuple[list[str], str]:
    accounts = inputs.observed.accounts.values()
    violations = [
        f"account {a.account_id}: balance {a.total_minor}, its entries sum to {a.entries_minor}"
        for a in accounts
        if a.total_minor != a.entries_minor
    ]
    return violations, f"{len(inputs.observed.accounts)} accounts"


def _never_negative(inputs: Inputs) -> tuple[list[str], str]:
    violations = []
    for a in inputs.observed.accounts.values():
        if a.kind != "customer":
            continue  # system accounts may go below zero by design
        if a.total_minor - a.held_minor < 0:
            violations.append(f"account {a.account_id}: available {a.total_minor - a.held_minor}")
        if a.lowest_balance_minor < 0:
            violations.append(f"account {a.account_id}: went to {a.lowest_balance_minor}")
    return violations, "customer accounts, now and after every entry"


def _transactions_balance(inputs: Inputs) -> tuple[list[str], str]:
    transactions = inputs.observed.transactions
    violations = [
        f"transaction {t.operation_ref or t.transaction_id}: {currency} entries sum to {total}"
        for t in transactions
        for currency, total in sorted(t.sums.items())
        if total != 0
    ]
    return violations, f"{len(transactions)} ledger transactions"


def _ledger_verify(inputs: Inputs) -> tuple[list[str], str]:
    return list(inputs.observed.ledger_findings), "paysuite ledger verify"


# --- requests and keys -----------------------------------------------------------------------


def _acknowledged_accounted(inputs: Inputs) -> tuple[list[str], str]:
    payments = inputs.observed.payments
    acknowledged = [c for c in inputs.history.calls if c.outcome == OK and c.payment_id]
    violations = []
    for call in acknowledged:
        payment = payments.get(call.payment_id)
        if payment is None:
            violations.append(f"{call.op} {call.key}: acknowledged as {call.payment_id}, now gone")
        elif call.op != "cancel" and payment.kind != call.op:
            violations.append(f"{call.op} {call.key}: {call.payment_id} is a {payment.kind}")
    for payment_id, error in sorted(inputs.observed.unreadable.items()):
        violations.append(f"payment {payment_id}: GetPayment failed after the window: {error}")
    for payment_id, status in sorted(inputs.observed.disagreeing.items()):
        violations.append(f"payment {payment_id}: GetPayment and the database disagree: {status}")
    return violations, f"{len(acknowledged)} acknowledged requests"


def _one_effect_per_key(inputs: Inputs) -> tuple[list[str], str]:
    violations = []
    answers: dict[str, set[str]] = defaultdict(set)
    for call in inputs.history.calls:
        if call.outcome == OK and call.key and call.payment_id and not call.reuses_key:
            answers[call.key].add(call.payment_id)
    violations += [
        f"key {key}: answered with {len(ids)} payments ({', '.join(sorted(ids))})"
        for key, ids in sorted(answers.items())
        if len(ids) > 1
    ]
    stored: dict[str, list[str]] = defaultdict(list)
    for payment in inputs.observed.payments.values():
        stored[payment.idempotency_key].append(payment.payment_id)
    violations += [
        f"key {key}: {len(ids)} payments stored"
        for key, ids in sorted(stored.items())
        if key and len(ids) > 1
    ]
    violations += _one_effect_per_operation(inputs.observed)
    return violations, f"{len(answers)} keys, {len(inputs.observed.transactions)} operation refs"


def _one_effect_per_operation(observed: Observed) -> list[str]:
    """A payment's money moves once: at most one credit (deposit) or one capture
    (withdrawal, refund) or one transfer among the ledger transactions naming it."""
    effects: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in observed.transactions:
        payment_id = t.operation_ref.partition(":")[0]
        if payment_id in observed.payments:
            effects[(payment_id, t.kind)].append(t.operation_ref)
    return [
        f"payment {payment_id}: {len(refs)} {kind} transactions ({', '.join(sorted(refs))})"
        for (payment_id, kind), refs in sorted(effects.items())
        if len(refs) > 1
    ]


def _refunds_within_captured(inputs: Inputs) -> tuple[list[str], str]:
    """The completed refunds of a deposit never add up to more than it captured (the racing
    refunds of the workload aim at exactly this)."""
    payments = inputs.observed.payments
    refunded: dict[str, int] = defaultdict(int)
    for payment in payments.values():
        if payment.kind == "refund" and payment.status == CREDITED:
            refunded[payment.parent_payment_id] += payment.amount_minor
    violations = []
    for deposit_id, total in sorted(refunded.items()):
        deposit = payments.get(deposit_id)
        captured = deposit.amount_minor if deposit is not None else 0
        if total > captured:
            violations.append(f"deposit {deposit_id}: {total} refunded of {captured} captured")
    return violations, f"{len(refunded)} deposits refunded"


def _reused_key_refused(inputs: Inputs) -> tuple[list[str], str]:
    reuses = [c for c in inputs.history.calls if c.reuses_key]
    violations = [
        f"key {c.key}: reused with a different request, answered {c.outcome} {c.payment_id}"
        for c in reuses
        if c.outcome == OK
    ]
    refused = sum(1 for c in reuses if c.outcome == KEY_REUSED)
    return violations, f"{len(reuses)} reuses, {refused} refused, the rest unanswered"


# --- states -----------------------------------------------------------------------------------


def _all_terminal(inputs: Inputs) -> tuple[list[str], str]:
    reasons: dict[str, set[str]] = defaultdict(set)
    for case in inputs.observed.review_cases:
        reasons[case.payment_id].add(case.reason_code)
    violations = []
    for payment in inputs.observed.payments.values():
        if payment.status in TERMINAL_NAMES:
            continue
        if payment.status == REVIEW and reasons.get(payment.payment_id):
            continue
        what = "in review without a reason code" if payment.status == REVIEW else "stuck"
        steps = inputs.observed.open_steps.get(payment.payment_id)
        said = f"; its steps: {', '.join(steps)}" if steps else ""
        violations.append(f"{payment.kind} {payment.payment_id}: {payment.status}, {what}{said}")
    return violations, f"{len(inputs.observed.payments)} payments"


def _never_backwards(inputs: Inputs) -> tuple[list[str], str]:
    violations = []
    for payment_id, statuses in sorted(inputs.observed.trails.items()):
        violations += _trail_problems(payment_id, statuses)
    for payment_id, seen in sorted(inputs.history.watched.items()):
        trail = inputs.observed.trails.get(payment_id)
        if trail is None:
            continue
        if not _follows(_distinct(seen), trail):
            violations.append(
                f"payment {payment_id}: WatchPayment saw {' > '.join(seen)},"
                f" the audit trail says {' > '.join(trail)}"
            )
    watched = len(inputs.history.watched)
    return violations, f"{len(inputs.observed.trails)} audit trails, {watched} watched"


def _trail_problems(payment_id: str, trail: list[str]) -> list[str]:
    problems = []
    for before, after in itertools.pairwise(trail):
        try:
            allowed = PaymentStatus(after) in ALLOWED[PaymentStatus(before)]
        except ValueError:
            allowed = False
        if not allowed:
            problems.append(f"payment {payment_id}: went from {before} to {after}")
    return problems


def _distinct(statuses: Iterable[str]) -> list[str]:
    """Each status once where it repeats in a row: a re-opened stream starts with the
    payment as it is now, which the stream before may already have shown."""
    out: list[str] = []
    for status in statuses:
        if not out or out[-1] != status:
            out.append(status)
    return out


def _follows(seen: list[str], trail: list[str]) -> bool:
    """The statuses a watcher saw appear in the audit trail in the same order."""
    position = 0
    for status in seen:
        try:
            position = trail.index(status, position) + 1
        except ValueError:
            return False
    return True


def _no_forbidden_answers(inputs: Inputs) -> tuple[list[str], str]:
    bad = [c for c in inputs.history.calls if c.outcome in FORBIDDEN]
    violations = [
        f"{c.op} {c.key or c.payment_id} via {c.via} at {c.started:.1f}s: {c.outcome}"
        f" {c.detail[:120]}"
        for c in bad
    ]
    return violations, f"{len(inputs.history.calls)} answers"


# --- the pipeline -----------------------------------------------------------------------------


def _no_dead_letters(inputs: Inputs) -> tuple[list[str], str]:
    letters = inputs.observed.dead_letters
    violations = [f"{d.stream}: {d.event_type} dead-lettered ({d.error[:120]})" for d in letters]
    return violations, "every event the suite produced is good"


def _drained(inputs: Inputs) -> tuple[list[str], str]:
    observed = inputs.observed
    violations = [f"outbox {db}: {n} unpublished" for db, n in observed.outbox_backlog.items() if n]
    violations += [f"{group}: {n} pending" for group, n in observed.pending_entries.items() if n]
    return violations, "outboxes and consumer groups"


def _reconciled(inputs: Inputs) -> tuple[list[str], str]:
    cases = [c for c in inputs.observed.review_cases if c.reason_code == RECONCILIATION]
    violations = [f"payment {c.payment_id}: reconciliation found a mismatch" for c in cases]
    return violations, f"{len(inputs.observed.review_cases)} review cases"


def _liveness(inputs: Inputs) -> tuple[list[str], str]:
    terminal_at = inputs.observed.all_terminal_at
    last_fault = inputs.history.last_fault_end
    if terminal_at is None:
        return [f"not every payment terminal within {inputs.recovery_window_s:.0f} s"], "never"
    took = max(0.0, terminal_at - last_fault)
    violations = []
    if took > inputs.recovery_window_s:
        violations.append(f"took {took:.1f} s, the window is {inputs.recovery_window_s:.0f} s")
    return violations, f"{took:.1f} s from the last fault to every payment terminal"


CHECKS: tuple[tuple[str, Check], ...] = (
    ("money conserved per currency", _conservation),
    ("provider and clearing agree", _provider_agrees),
    ("every balance equals its history", _balances_are_histories),
    ("no available balance ever negative", _never_negative),
    ("every ledger transaction balances", _transactions_balance),
    ("ledger verify", _ledger_verify),
    ("every acknowledged request accounted for", _acknowledged_accounted),
    ("one effect per key and operation", _one_effect_per_key),
    ("a reused key with another request refused", _reused_key_refused),
    ("refunds never beyond what was captured", _refunds_within_captured),
    ("every payment terminal or in review with a reason", _all_terminal),
    ("no state went backwards", _never_backwards),
    ("no INTERNAL or UNKNOWN answer", _no_forbidden_answers),
    ("no good event dead-lettered", _no_dead_letters),
    ("outbox drained, nothing pending", _drained),
    ("no reconciliation mismatch", _reconciled),
    ("liveness", _liveness),
)
