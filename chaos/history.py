"""What a chaos run records (client side) and what it observes at the end (the suite's state).

Plain data, no I/O: the checker is a function of these, so a test can build them by hand.
Times are seconds since the run started.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OK = "OK"
# Answers that say nothing about whether the request took effect: the caller must retry.
AMBIGUOUS = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED"})
# Answers that are a bug whatever the faults: the service did not know what happened.
FORBIDDEN = frozenset({"INTERNAL", "UNKNOWN", "DATA_LOSS"})


@dataclass(frozen=True, slots=True)
class Call:
    """One request a client sent and the answer it got."""

    client: int
    op: str  # deposit, withdrawal, transfer, refund, cancel
    via: str  # grpc or http
    key: str  # the idempotency key ("" for a cancel)
    request: str  # the request as canonical text: one key, one request
    started: float
    ended: float
    outcome: str  # OK, or the gRPC status code name (HTTP answers are mapped to one)
    reason: str = ""  # the ErrorInfo reason of a refusal (INSUFFICIENT_FUNDS, ...)
    payment_id: str = ""
    status: str = ""  # the payment's status in the answer
    # A deliberate reuse of an earlier key with a different request: must be refused.
    reuses_key: bool = False
    detail: str = ""  # the error message, for the report
    # The RetryInfo delay (HTTP: Retry-After) the answer carried: how long to wait before
    # repeating it (RESOURCE_EXHAUSTED from admission control; ABORTED while in flight).
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str  # kill, pause, db-refuse, provider-<knob>
    target: str
    start: float
    end: float  # == start for a kill: the supervisor restarts it
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.target}"


def call_line(call: Call) -> str:
    """A call as a line of a report: when (seconds since the start), what, and its answer."""
    return f"{call.started:.1f}-{call.ended:.1f} s {call.op} via {call.via}: {call.outcome}"


@dataclass
class History:
    seed: int
    calls: list[Call] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    # Every status each WatchPayment stream delivered, in order, streams of one payment joined.
    watched: dict[str, list[str]] = field(default_factory=dict)

    @property
    def last_fault_end(self) -> float:
        return max((f.end for f in self.faults), default=0.0)

    def calls_for(self, key: str) -> list[str]:
        """The calls sent with idempotency key `key`, oldest first, as report lines."""
        return [call_line(c) for c in self.calls if key and c.key == key]


@dataclass(frozen=True, slots=True)
class PaymentView:
    payment_id: str
    kind: str  # deposit, withdrawal, transfer, refund
    status: str
    amount_minor: int
    currency: str
    idempotency_key: str
    failure_reason: str = ""
    parent_payment_id: str = ""


@dataclass(frozen=True, slots=True)
class AccountView:
    account_id: str
    currency: str
    kind: str  # customer, clearing, fx, fees
    total_minor: int  # the projection (system accounts: the sum of their entries)
    held_minor: int
    entries_minor: int  # the sum of its ledger entries: its history
    lowest_balance_minor: int = 0  # the lowest balance after any of its entries


@dataclass(frozen=True, slots=True)
class TransactionView:
    transaction_id: str
    operation_ref: str
    kind: str  # credit, debit, capture, transfer
    sums: dict[str, int]  # per currency, the sum of its entries: zero when it balances


@dataclass(frozen=True, slots=True)
class ProviderOp:
    """An operation as the provider (a simulator) holds it."""

    kind: str  # charge, payout, refund
    status: str  # processing, succeeded, failed
    amount_minor: int
    currency: str
    reference: str


@dataclass(frozen=True, slots=True)
class ReviewCase:
    payment_id: str
    reason_code: str
    status: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    stream: str
    event_type: str
    error: str


@dataclass(frozen=True, slots=True)
class PaymentSnapshot:
    """A payment as the payment database holds it at one instant (one still open, or one the
    resume sweep had to move on), for a maintainer to see where it stood."""

    payment_id: str
    kind: str
    status: str
    idempotency_key: str
    # Its audit steps ("<time> <event type> (<error>)"), oldest first: the latest few of an
    # open payment, every one (up to observe.ALL_STEPS) of a resumed one.
    steps: list[str]
    # The requests a client sent with its key and what they were answered (see `calls_for`).
    calls: list[str] = field(default_factory=list)


@dataclass
class Observed:
    """The suite's state after the recovery window."""

    payments: dict[str, PaymentView] = field(default_factory=dict)
    # Each payment's audit trail: the statuses it entered, oldest first.
    trails: dict[str, list[str]] = field(default_factory=dict)
    # The audit steps (time, event, error) of each payment not settled at the end, oldest
    # first: what a stuck payment's violation shows.
    open_steps: dict[str, list[str]] = field(default_factory=dict)
    accounts: dict[str, AccountView] = field(default_factory=dict)
    transactions: list[TransactionView] = field(default_factory=list)
    provider_ops: list[ProviderOp] = field(default_factory=list)
    review_cases: list[ReviewCase] = field(default_factory=list)
    ledger_findings: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outbox_backlog: dict[str, int] = field(default_factory=dict)  # per service database
    pending_entries: dict[str, int] = field(default_factory=dict)  # per stream and group
    # Payments the public GetPayment could not read (id -> the error).
    unreadable: dict[str, str] = field(default_factory=dict)
    # When every payment was first seen terminal (None: never within the window).
    all_terminal_at: float | None = None
    # Payments (id -> status) GetPayment answered differently from the operator read.
    disagreeing: dict[str, str] = field(default_factory=dict)
