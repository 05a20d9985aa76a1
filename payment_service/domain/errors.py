"""The payment service's own errors. Each subclasses a family of `common.errors` (which the one
table in the transport layer maps to a status code); `reason` travels as `ErrorInfo.reason`
and is part of the API: callers branch on it, so it never changes meaning."""

from __future__ import annotations

from common.errors import DependencyUnavailable, FailedPrecondition, RetryLater


class PaymentNotRefundable(FailedPrecondition):
    """Only a completed (or partially refunded) deposit can be refunded."""

    reason = "PAYMENT_NOT_REFUNDABLE"


class RefundExceedsCaptured(FailedPrecondition):
    """The refunds of a deposit, settled and in flight, never exceed what it captured."""

    reason = "REFUND_EXCEEDS_CAPTURED"


class PaymentNotCancellable(FailedPrecondition):
    """The payment reached the provider (or settled): cancelling can no longer stop it."""

    reason = "PAYMENT_NOT_CANCELLABLE"


class SameAccount(FailedPrecondition):
    reason = "SAME_ACCOUNT"


class RequestInFlight(RetryLater):
    """A request with the same idempotency key is still being processed."""

    reason = "IDEMPOTENCY_REQUEST_IN_FLIGHT"


class Refused(FailedPrecondition):
    """A refusal replayed from an idempotency key's stored response (or a downstream refusal
    whose reason is carried as it is, e.g. INSUFFICIENT_FUNDS or ACCOUNT_FROZEN)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReviewAlreadyResolved(FailedPrecondition):
    """A review case is resolved once; a second (or racing) resolve is refused."""

    reason = "REVIEW_ALREADY_RESOLVED"


class ResolutionContradictsPayment(FailedPrecondition):
    """The payment is final or settled, and the resolution would move it (invariant 6): a
    resolution of such a payment may only record what its status already says."""

    reason = "REVIEW_RESOLUTION_CONTRADICTS_PAYMENT"


class ReviewPaymentInFlight(FailedPrecondition):
    """The payment's saga is still running (neither in review nor final): resolve the case
    once the payment has settled or reached requires_manual_review."""

    reason = "REVIEW_PAYMENT_IN_FLIGHT"


class ProviderOutcomeUnknown(DependencyUnavailable):
    """The provider did not answer a call that may have moved money: "wait and retry" for a
    stream consumer (the step is retried with the same key), and an unknown outcome for the
    recovery worker (asked about again at its next rung), never a failure."""
