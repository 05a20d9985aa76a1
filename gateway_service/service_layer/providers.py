"""What the gateway wraps around every provider it calls.

`Provider` (service_layer/ports.py) is what an adapter implements, one per provider instance.
`GuardedProvider` adds, per provider: a circuit breaker, a timeout on every call bounded by the
caller's deadline, and retries with exponential backoff and full jitter for errors classified
retryable, always with the same idempotency key; each attempt is counted through `CallMetrics`.
`ProviderRouter` holds them in failover order.

A timeout is never retried: the provider may have acted, and asking again only to time out
again wastes the caller's deadline. If any attempt may have reached the provider, a later
"not processed" answer does not make the whole call "not processed": it stays unknown.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from common.errors import FieldViolation, ValidationError
from gateway_service.domain.breaker import BreakerSnapshot, CircuitBreaker
from gateway_service.domain.provider import (
    CircuitOpen,
    Instruction,
    InstructionKind,
    ProviderAcceptance,
    ProviderError,
    ProviderNotProcessed,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    StatusReport,
)
from gateway_service.service_layer.ports import CallMetrics, Provider

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Below this much time left there is no point in sending a request at all.
MIN_ATTEMPT_S = 0.05


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 0.5


def _retryable(exc: BaseException) -> bool:
    # CircuitOpen: asking again now is exactly what the breaker is there to prevent.
    # ProviderTimeout: see the module docstring.
    if isinstance(exc, CircuitOpen | ProviderTimeout | ProviderRejected):
        return False
    return isinstance(exc, ProviderNotProcessed | ProviderUnavailable)


class GuardedProvider:
    def __init__(
        self,
        provider: Provider,
        breaker: CircuitBreaker,
        *,
        timeout_s: float,
        metrics: CallMetrics,
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self.breaker = breaker
        self._timeout_s = timeout_s
        self._retry = retry
        self._clock = clock
        self._metrics = metrics

    @property
    def name(self) -> str:
        return self._provider.name

    async def submit(
        self, instruction: Instruction, *, deadline: float | None = None
    ) -> ProviderAcceptance:
        call = {
            InstructionKind.CHARGE: self._provider.charge,
            InstructionKind.PAYOUT: self._provider.payout,
            InstructionKind.REFUND: self._provider.refund,
        }[instruction.kind]
        return await self._call(
            lambda timeout_s: call(instruction, timeout_s=timeout_s),
            deadline,
            operation=instruction.kind.value,
        )

    async def get_status(
        self,
        kind: InstructionKind,
        *,
        idempotency_key: str,
        provider_reference: str,
        deadline: float | None = None,
    ) -> StatusReport:
        return await self._call(
            lambda timeout_s: self._provider.get_status(
                kind,
                idempotency_key=idempotency_key,
                provider_reference=provider_reference,
                timeout_s=timeout_s,
            ),
            deadline,
            operation="status",
        )

    async def _call(
        self, call: Callable[[float], Awaitable[T]], deadline: float | None, *, operation: str
    ) -> T:
        maybe_acted = False
        attempts = 0

        async def attempt() -> T:
            nonlocal maybe_acted, attempts
            attempts += 1
            if attempts > 1:
                self._metrics.retried(operation)
            try:
                return await self._attempt(call, deadline, operation)
            except ProviderNotProcessed:
                raise
            except ProviderUnavailable:
                maybe_acted = True
                raise

        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_any(stop_after_attempt(self._retry.attempts), self._out_of_time(deadline)),
            # Full jitter, so replicas retrying after one provider blip do not stampede.
            wait=wait_random_exponential(
                multiplier=self._retry.initial_backoff_s, max=self._retry.max_backoff_s
            ),
            reraise=True,
        )
        try:
            async for retry_state in retrying:
                with retry_state:
                    return await attempt()
        except ProviderNotProcessed as exc:
            if maybe_acted:
                raise ProviderUnavailable(f"an earlier attempt may have reached it: {exc}") from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, call: Callable[[float], Awaitable[T]], deadline: float | None, operation: str
    ) -> T:
        timeout_s = self._attempt_timeout(deadline)
        permit = self.breaker.acquire()
        if permit is None:
            self._metrics.refused(operation)
            raise CircuitOpen(self.name)
        started = time.perf_counter()
        try:
            result = await call(timeout_s)
        except ProviderRejected:
            # The provider answered, clearly: it is healthy, the request was not.
            self.breaker.record(permit, failed=False)
            self._observe(operation, "rejected", started)
            raise
        except ProviderError as exc:
            self.breaker.record(permit, failed=True)
            self._observe(operation, _outcome(exc), started)
            log.info("provider.attempt_failed", provider=self.name, error=str(exc))
            raise
        except BaseException:
            # Cancelled (the caller went away) or a bug: no outcome, but a half-open trial
            # must give its slot back, or the breaker refuses this provider for good.
            self.breaker.release(permit)
            raise
        self.breaker.record(permit, failed=False)
        self._observe(operation, "ok", started)
        return result

    def _observe(self, operation: str, outcome: str, started: float) -> None:
        self._metrics.attempted(operation, outcome, time.perf_counter() - started)

    def _attempt_timeout(self, deadline: float | None) -> float:
        if deadline is None:
            return self._timeout_s
        left = deadline - self._clock()
        if left < MIN_ATTEMPT_S:
            raise ProviderNotProcessed("the caller's deadline left no time to ask the provider")
        return min(self._timeout_s, left)

    def _out_of_time(self, deadline: float | None) -> _OutOfTime:
        return _OutOfTime(deadline, self._clock)


def _outcome(exc: ProviderError) -> str:
    if isinstance(exc, ProviderTimeout):
        return "timeout"
    if isinstance(exc, ProviderUnavailable):
        return "unavailable"
    return "not_processed"


class _OutOfTime(stop_base):
    """Stops retrying when the caller's deadline leaves no time for another attempt."""

    def __init__(self, deadline: float | None, clock: Callable[[], float]) -> None:
        self._deadline = deadline
        self._clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._deadline is not None and self._deadline - self._clock() < MIN_ATTEMPT_S


class ProviderRouter:
    """The configured providers, in failover order (the first is preferred)."""

    def __init__(self, providers: Sequence[GuardedProvider]) -> None:
        if not providers:
            raise ValueError("at least one provider is required")
        self._providers = list(providers)
        self._by_name = {p.name: p for p in providers}

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def in_order(self) -> list[GuardedProvider]:
        return list(self._providers)

    def get(self, name: str) -> GuardedProvider:
        provider = self._by_name.get(name)
        if provider is None:
            raise ValidationError(FieldViolation("provider", f"unknown provider {name!r}"))
        return provider

    def status(self) -> list[tuple[int, BreakerSnapshot]]:
        return [(i, p.breaker.snapshot()) for i, p in enumerate(self._providers)]
