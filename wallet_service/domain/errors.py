"""The wallet's own errors. Each subclasses a family of `common.errors`, which the one table in
the transport layer maps to a status code; `reason` travels as `ErrorInfo.reason`.

    common.errors.NotFound
    ├── AccountNotFound
    └── HoldNotFound
    common.errors.IdempotencyConflict
    └── OperationRefReused      OPERATION_REF_REUSED   (ALREADY_EXISTS)
    common.errors.FailedPrecondition
    ├── common.errors.InsufficientFunds
    │   └── NotEnoughAvailable  INSUFFICIENT_FUNDS (metadata: available_minor, currency)
    ├── AccountFrozen           ACCOUNT_FROZEN
    ├── AccountClosed           ACCOUNT_CLOSED
    ├── AccountNotEmpty         ACCOUNT_NOT_EMPTY
    ├── CurrencyMismatch        CURRENCY_MISMATCH
    ├── LimitExceeded           LIMIT_EXCEEDED
    ├── HoldNotOpen             HOLD_NOT_OPEN
    ├── FxRateUnavailable       FX_RATE_UNAVAILABLE
    └── ConversionTooSmall      CONVERSION_TOO_SMALL
    common.errors.ConcurrentUpdate
    └── VersionConflict         CONCURRENT_UPDATE      (ABORTED once retries are spent)
"""

from __future__ import annotations

from common.errors import (
    ConcurrentUpdate,
    FailedPrecondition,
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
)
from common.money import Money


class AccountNotFound(NotFound):
    def __init__(self, account_id: str) -> None:
        super().__init__("account", account_id)


class HoldNotFound(NotFound):
    def __init__(self, hold_id: str) -> None:
        super().__init__("hold", hold_id)


class OperationRefReused(IdempotencyConflict):
    reason = "OPERATION_REF_REUSED"

    def __init__(self, operation_ref: str) -> None:
        super().__init__(
            f"operation_ref {operation_ref!r} was already used for a different operation"
        )


class NotEnoughAvailable(InsufficientFunds):
    """Details carry what is available, so a caller can tell the customer without a second call."""

    def __init__(self, account_id: str, available: Money, needed: Money) -> None:
        super().__init__(f"account {account_id} has {available} available, needs {needed}")
        self.available = available
        self.metadata = {
            "available_minor": str(available.amount_minor),
            "currency": available.currency,
        }


class AccountFrozen(FailedPrecondition):
    reason = "ACCOUNT_FROZEN"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id} is frozen")


class AccountClosed(FailedPrecondition):
    reason = "ACCOUNT_CLOSED"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id} is closed")


class AccountNotEmpty(FailedPrecondition):
    reason = "ACCOUNT_NOT_EMPTY"


class CurrencyMismatch(FailedPrecondition):
    reason = "CURRENCY_MISMATCH"


class LimitExceeded(FailedPrecondition):
    reason = "LIMIT_EXCEEDED"


class HoldNotOpen(FailedPrecondition):
    reason = "HOLD_NOT_OPEN"


class FxRateUnavailable(FailedPrecondition):
    reason = "FX_RATE_UNAVAILABLE"

    def __init__(self, base: str, quote: str) -> None:
        super().__init__(f"no {base}->{quote} exchange rate is configured")


class ConversionTooSmall(FailedPrecondition):
    reason = "CONVERSION_TOO_SMALL"


class VersionConflict(ConcurrentUpdate):
    """Another writer appended the same account version first; the caller retries."""
