"""The provider simulator's HTTP API, behind the service layer's `Provider` port.

aiohttp's errors stop here: callers see only the gateway_service.domain.provider family.
Retries are safe because every charge carries our idempotency key, which the provider
deduplicates on; they cover only failures that mean "try again" (connection errors, 5xx,
408/429), and they are few and quick, because the gRPC caller is waiting on us.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from gateway_service.domain.provider import (
    ChargeInstruction,
    ProviderAcceptance,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

log = structlog.get_logger(__name__)

SIMULATOR = "simulator"
ACCEPTED_STATUSES = frozenset({200, 201, 202})
# 4xx answers that mean "not now" rather than "no".
RETRYABLE_CLIENT_ERRORS = frozenset({408, 425, 429})


class _Transient(ProviderUnavailable):
    """Failed in a way that asking again right away may fix."""


def provider_session(timeout_ms: int) -> aiohttp.ClientSession:
    """The HTTP session provider adapters share; its timeout bounds each attempt."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_ms / 1000))


class SimulatorProvider:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        attempts: int = 3,
        initial_backoff_s: float = 0.05,
        max_backoff_s: float = 0.5,
    ) -> None:
        self._session = session
        self._charges_url = base_url.rstrip("/") + "/v1/charges"
        self._attempts = attempts
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s

    @property
    def name(self) -> str:
        return SIMULATOR

    async def create_charge(self, instruction: ChargeInstruction) -> ProviderAcceptance:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self._attempts),
            # Full jitter, so replicas retrying after one provider blip do not stampede.
            wait=wait_random_exponential(
                multiplier=self._initial_backoff_s, max=self._max_backoff_s
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._post_charge(instruction)
        raise AssertionError("unreachable")  # pragma: no cover

    def operation_id_in_event(self, raw_payload: bytes) -> str | None:
        """The simulator echoes the `reference` we sent (our operation id) in `data`."""
        try:
            reference = json.loads(raw_payload)["data"]["reference"]
            return str(uuid.UUID(reference))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    async def _post_charge(self, instruction: ChargeInstruction) -> ProviderAcceptance:
        body = {
            "idempotency_key": instruction.idempotency_key,
            "amount_minor": instruction.amount.amount_minor,
            "currency": instruction.amount.currency,
            "payment_method": instruction.payment_method,
            "reference": instruction.reference,
        }
        try:
            async with self._session.post(
                self._charges_url, json=body, allow_redirects=False
            ) as response:
                status, payload = response.status, await response.read()
        except TimeoutError as exc:
            raise ProviderTimeout("the provider did not answer in time") from exc
        except aiohttp.ClientError as exc:
            log.info("provider.attempt_failed", reference=instruction.reference, error=repr(exc))
            raise _Transient(f"cannot reach the provider: {type(exc).__name__}") from exc
        return _charge_answer(status, payload)


def _charge_answer(status: int, payload: bytes) -> ProviderAcceptance:
    if status in ACCEPTED_STATUSES:
        charge_id = _json(payload).get("id")
        if not isinstance(charge_id, str) or not charge_id:
            raise ProviderUnavailable("the provider accepted the charge without naming it")
        return ProviderAcceptance(provider_reference=charge_id)
    if status >= 500 or status in RETRYABLE_CLIENT_ERRORS:
        raise _Transient(f"the provider answered HTTP {status}")
    if 400 <= status < 500:
        code, message = _error(_json(payload), status)
        raise ProviderRejected(code, message)
    raise ProviderUnavailable(f"unexpected HTTP {status} from the provider")


def _json(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error(payload: dict[str, Any], status: int) -> tuple[str, str]:
    """The provider's `{"error": {"code", "message"}}`, or the HTTP status when absent."""
    error = payload.get("error")
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    message = error.get("message")
    return (
        code if isinstance(code, str) and code else f"http_{status}",
        message if isinstance(message, str) else "",
    )
