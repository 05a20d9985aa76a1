"""The domain error family every service raises. Transport layers map these, in one table,
to gRPC status codes (common.grpc.errors) and HTTP statuses; domain code never knows either.

    DomainError
    ├── ValidationError          request fields are wrong (carries FieldViolations)
    ├── NotFound                 the referenced thing does not exist
    ├── AlreadyExists            creating something that exists
    ├── IdempotencyConflict      a key / operation ref reused with different parameters
    ├── Unauthenticated          no credentials, or credentials that do not verify
    ├── PermissionDenied         the caller may not do this (not the owner, not an operator)
    ├── FailedPrecondition       the state does not allow it
    │   └── InsufficientFunds
    ├── ConcurrentUpdate         lost an optimistic race; retrying is safe
    ├── RetryLater               the same request is still in flight; retry after a pause
    ├── Overloaded               shed before doing anything (backlog over its bound); retry later
    │   └── RateLimited          the caller is over its rate limit
    └── DependencyUnavailable    a database, Redis, another service or the provider is down
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base of every error a caller may see. Its message is safe to show to the caller."""

    reason = "UNSPECIFIED"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(DomainError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, *violations: FieldViolation) -> None:
        text = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {text}")
        self.violations = violations


class NotFound(DomainError):
    reason = "NOT_FOUND"

    def __init__(self, kind: str, identifier: str, *, message: str = "") -> None:
        super().__init__(message or f"{kind} {identifier!r} not found")
        self.kind = kind
        self.identifier = identifier


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"


class IdempotencyConflict(DomainError):
    reason = "IDEMPOTENCY_KEY_REUSED"


class Unauthenticated(DomainError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    reason = "PERMISSION_DENIED"


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"


class InsufficientFunds(FailedPrecondition):
    reason = "INSUFFICIENT_FUNDS"


class ConcurrentUpdate(DomainError):
    reason = "CONCURRENT_UPDATE"


class RetryLater(DomainError):
    """The caller should repeat the request after `retry_after_s` (sent as RetryInfo)."""

    reason = "RETRY_LATER"
    retry_after_s = 1.0


class Overloaded(DomainError):
    """Refused before anything was done, because the suite is overloaded (common/admission.py):
    the caller repeats the request, with the same idempotency key, after `retry_after_s`."""

    reason = "OVERLOADED"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(Overloaded):
    reason = "RATE_LIMITED"


class DependencyUnavailable(DomainError):
    reason = "DEPENDENCY_UNAVAILABLE"


def require(value: str, field: str, *, max_length: int = 128) -> str:
    """A required, bounded, printable identifier-like request field."""
    if not value:
        raise ValidationError(FieldViolation(field, "is required"))
    if len(value) > max_length:
        raise ValidationError(FieldViolation(field, f"must be at most {max_length} characters"))
    if not value.isprintable():
        raise ValidationError(FieldViolation(field, "must contain printable characters only"))
    return value


async def retry_on_conflict(operation: Callable[[], Awaitable[T]], *, attempts: int = 3) -> T:
    """Re-runs a whole unit of work that lost a race (a unique key taken meanwhile).

    The second run normally finds the winner's row and answers as an idempotent replay.
    """
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(ConcurrentUpdate),
        stop=stop_after_attempt(attempts),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await operation()
    raise AssertionError("unreachable")  # pragma: no cover
