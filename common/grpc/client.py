"""Channels between our own services.

Retries of UNAVAILABLE are left to gRPC's own retry policy (service config) rather than
hand-written loops: every call between services is idempotent on a key the caller derives,
so a transparent retry can never apply a step twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from common.errors import (
    DependencyUnavailable,
    DomainError,
    FailedPrecondition,
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
)
from common.grpc.connections import OWN_CONNECTIONS
from common.grpc.tracing import client_interceptors

# round_robin: a target naming several addresses (`ipv4:host:port,host:port` for `paysuite up`'s
# wallet replicas, `dns:///wallet:50052` for a Kubernetes headless Service) has every call go
# to the next ready one, so each replica takes its share; gRPC's default (pick_first) would
# send them all to the first. With one address it is the same as pick_first.
LB_POLICY = "round_robin"

_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{LB_POLICY: {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


# gRPC's own reconnect backoff starts at 1 s and grows by 1.6 up to 120 s: a peer back after
# a 4 s restart is dialled again only 1.5 s later, one back after 20 s up to 8 s later. Between
# our own services (a few channels per process, on a private network) a dial every second at
# most is cheap, and a restarted peer is used within a second of being up.
RECONNECT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def channel_options() -> list[tuple[str, str | int]]:
    """create_channel's options: retries of UNAVAILABLE and round robin (service config),
    keepalive, and the short reconnect backoff."""
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.keepalive_time_ms", 30_000),
        *RECONNECT_OPTIONS,
        *OWN_CONNECTIONS,
    ]


def create_channel(target: str, *, token: Callable[[], str] | None = None) -> grpc.aio.Channel:
    """A channel to one of our services; `token` gives the bearer token each call presents
    (a common.tokens.ServiceToken between services, a user's token in the CLI). `target` may
    name several replicas (see LB_POLICY): calls are spread over them."""
    return grpc.aio.insecure_channel(
        target, options=channel_options(), interceptors=client_interceptors(token)
    )


_UNAVAILABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


def translate_rpc_error(exc: grpc.aio.AioRpcError, *, service: str) -> DomainError:
    """Another service's status as our domain error, at the adapter boundary.

    Anything transient (including the other side's INTERNAL) is DependencyUnavailable: the
    caller's step is idempotent, so it is retried rather than failing a payment.
    """
    return translate_status(
        exc.code(), exc.details() or "", _details_of(exc.trailing_metadata()), service=service
    )


def translate_item_status(status: status_pb2.Status, *, service: str) -> DomainError:
    """One item's status in a batch answer (e.g. a ChargeResult's) as our domain error: what
    translate_rpc_error makes of the same status ending a unary call."""
    return translate_status(code_of(status.code), status.message, status.details, service=service)


def translate_status(
    code: grpc.StatusCode, message: str, details: Sequence[any_pb2.Any], *, service: str
) -> DomainError:
    """A status (code, message, rich details) as our domain error; see translate_rpc_error."""
    if code in _UNAVAILABLE:
        return DependencyUnavailable(f"{service} unavailable: {code.name}")
    if code is grpc.StatusCode.NOT_FOUND:
        # The other service's message already names what was not found (safe to pass on).
        return NotFound("resource", "", message=message or f"{service}: not found")
    if code is grpc.StatusCode.ALREADY_EXISTS:
        return IdempotencyConflict(f"{service}: {message}")
    reason, metadata = _error_info(details)
    text = f"{service} refused: {message}"
    refusal: FailedPrecondition = (
        InsufficientFunds(text) if reason == InsufficientFunds.reason else FailedPrecondition(text)
    )
    # The other service's specific reason (ACCOUNT_FROZEN, FX_RATE_UNAVAILABLE, ...) is part of
    # its API; passing it on lets our callers branch on it as on our own.
    if reason and reason not in ("FAILED_PRECONDITION", "INVALID_ARGUMENT"):
        refusal.reason = reason
    refusal.metadata = {k: v for k, v in metadata.items() if k != "request_id"}  # type: ignore[attr-defined]  # only refusals passed on carry it; errors.py reads it with getattr
    return refusal


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def code_of(value: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a google.rpc.Code number (UNKNOWN for one we do not know)."""
    return _CODES.get(value, grpc.StatusCode.UNKNOWN)


def error_info(exc: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """The ErrorInfo reason and metadata a status carries in its rich details, if any."""
    return _error_info(_details_of(exc.trailing_metadata()))


def _details_of(trailing_metadata: Iterable[tuple[str, Any]] | None) -> Sequence[any_pb2.Any]:
    """The rich details of a call's status (its `grpc-status-details-bin` trailer)."""
    for key, value in trailing_metadata or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status: status_pb2.Status = status_pb2.Status.FromString(value)
            return list(status.details)
    return ()


def _error_info(details: Iterable[any_pb2.Any]) -> tuple[str, dict[str, str]]:
    for detail in details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason, dict(info.metadata)
    return "", {}
