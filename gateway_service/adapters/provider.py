"""The provider simulator's HTTP API, behind the service layer's `Provider` port.

aiohttp's errors stop here: callers see only the gateway_service.domain.provider family, and
the classification is the part that matters for money (Hyperswitch does the same per
connector): did the provider certainly not act (failover is safe), refuse (nothing happened),
or may it have acted (the outcome is unknown)? Retries, breakers and deadlines are the
service layer's (GuardedProvider); this class makes exactly one HTTP request per call.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from opentelemetry import trace

from common.httptrace import client_span, record_status
from common.money import Money
from gateway_service.domain.provider import (
    Instruction,
    InstructionKind,
    ProviderAcceptance,
    ProviderNotProcessed,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    ReportedStatus,
    StatusReport,
)

ACCEPTED_STATUSES = frozenset({200, 201, 202})
# 4xx answers that mean "not now" rather than "no": the request did nothing.
NOT_NOW = frozenset({408, 425, 429})
INSTRUMENT_FIELD = {
    InstructionKind.CHARGE: "payment_method",
    InstructionKind.PAYOUT: "destination",
    InstructionKind.REFUND: "charge",
}


def provider_session() -> aiohttp.ClientSession:
    """The HTTP session provider adapters share; each call passes its own timeout."""
    connector = aiohttp.TCPConnector(limit=256)
    return aiohttp.ClientSession(connector=connector)


class SimulatorProvider:
    def __init__(self, session: aiohttp.ClientSession, *, name: str, base_url: str) -> None:
        self._session = session
        self._name = name
        self._base_url = base_url.rstrip("/")

    @property
    def name(self) -> str:
        return self._name

    async def charge(self, instruction: Instruction, *, timeout_s: float) -> ProviderAcceptance:
        return await self._submit(instruction, timeout_s)

    async def payout(self, instruction: Instruction, *, timeout_s: float) -> ProviderAcceptance:
        return await self._submit(instruction, timeout_s)

    async def refund(self, instruction: Instruction, *, timeout_s: float) -> ProviderAcceptance:
        return await self._submit(instruction, timeout_s)

    async def get_status(
        self,
        kind: InstructionKind,
        *,
        idempotency_key: str,
        provider_reference: str,
        timeout_s: float,
    ) -> StatusReport:
        route = f"/v1/{kind.value}s"
        url = f"{self._base_url}{route}"
        if provider_reference:
            url, params = f"{url}/{provider_reference}", {}
            route = f"{route}/{{id}}"
        else:
            params = {"idempotency_key": idempotency_key}
        status, payload, headers = await self._request("GET", url, route, timeout_s, params=params)
        if status == 404:
            return StatusReport(status=ReportedStatus.NOT_FOUND)
        if status != 200:
            raise _failure(status, payload, headers)
        return _report(_json(payload))

    async def _submit(self, instruction: Instruction, timeout_s: float) -> ProviderAcceptance:
        body = {
            "amount_minor": instruction.amount.amount_minor,
            "currency": instruction.amount.currency,
            INSTRUMENT_FIELD[instruction.kind]: instruction.instrument,
            "reference": instruction.reference,
        }
        route = f"/v1/{instruction.kind.value}s"
        status, payload, headers = await self._request(
            "POST",
            f"{self._base_url}{route}",
            route,
            timeout_s,
            json=body,
            headers={"Idempotency-Key": instruction.idempotency_key},
        )
        if status not in ACCEPTED_STATUSES:
            raise _failure(status, payload, headers)
        operation_id = _json(payload).get("id")
        if not isinstance(operation_id, str) or not operation_id:
            raise ProviderUnavailable("the provider accepted the request without naming it")
        return ProviderAcceptance(provider_reference=operation_id)

    async def _request(
        self, method: str, url: str, route: str, timeout_s: float, **kwargs: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        with client_span(method, f"{self._name} {route}") as (span, trace_headers):
            kwargs["headers"] = {**kwargs.get("headers", {}), **trace_headers}
            return await self._send(method, url, timeout_s, span, **kwargs)

    async def _send(
        self, method: str, url: str, timeout_s: float, span: trace.Span, **kwargs: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            async with self._session.request(
                method,
                url,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                **kwargs,
            ) as response:
                record_status(span, response.status)
                return response.status, await response.read(), dict(response.headers)
        except TimeoutError as exc:
            raise ProviderTimeout(f"{self._name} did not answer within {timeout_s:.2f}s") from exc
        except aiohttp.ClientConnectorError as exc:
            # The connection was never made, so the request never reached the provider.
            raise ProviderNotProcessed(f"cannot connect to {self._name}: {exc.os_error}") from exc
        except aiohttp.ClientError as exc:
            # Sent, perhaps in full, and then the connection broke: the provider may have acted.
            raise ProviderUnavailable(f"{self._name}: {type(exc).__name__}") from exc


def _failure(status: int, payload: bytes, headers: dict[str, str]) -> Exception:
    code, message = _error(_json(payload), status)
    if status >= 500:
        if headers.get("Provider-Processed", "").lower() == "false":
            return ProviderNotProcessed(f"HTTP {status} {code}: not processed")
        return ProviderUnavailable(f"HTTP {status} {code}: the outcome is unknown")
    if status in NOT_NOW:
        return ProviderNotProcessed(f"HTTP {status} {code}")
    if 400 <= status < 500:
        return ProviderRejected(code, message)
    return ProviderUnavailable(f"unexpected HTTP {status} from the provider")


def _report(payload: dict[str, Any]) -> StatusReport:
    try:
        said = str(payload.get("status"))
        status = ReportedStatus("pending" if said == "processing" else said)
        amount = Money(int(payload["amount_minor"]), str(payload["currency"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderUnavailable("the provider's status answer is malformed") from exc
    if status is ReportedStatus.NOT_FOUND:
        raise ProviderUnavailable("the provider's status answer is malformed")
    return StatusReport(
        status=status,
        provider_reference=str(payload.get("id") or ""),
        failure_reason=str(payload.get("failure_reason") or ""),
        amount=amount,
    )


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
