"""Bearer tokens on gRPC: who the caller is (server side) and who we are (client side).

Every service declares, per RPC, the access it asks for (`Policy`); an RPC it does not list is
SERVICE-only, so a new RPC is closed until someone opens it. The error mapping's request scope
authenticates before the handler runs (one interceptor layer for everything: each layer costs
~20 us of CPU per call) and binds the principal for the handler to decide ownership.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

from common.auth import Access, Principal, denied
from common.config import Settings
from common.errors import Unauthenticated
from common.grpc.connections import OWN_CONNECTIONS
from common.tokens import TokenVerifier

AUTHORIZATION = "authorization"
_BEARER = "bearer "
# Answer without a token: probes (Kubernetes, `paysuite up`) and grpcurl's discovery.
_PUBLIC_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class Policy:
    """Access per full method name (`/paysuite.wallet.v1.WalletService/Credit`)."""

    def __init__(self, service: str, access: Mapping[str, Access]) -> None:
        self._access = {f"/{service}/{method}": level for method, level in access.items()}

    def methods(self) -> dict[str, Access]:
        return dict(self._access)


class Authenticator:
    def __init__(self, verifier: TokenVerifier, policies: Sequence[Policy]) -> None:
        self._verifier = verifier
        self._access: dict[str, Access] = {}
        for policy in policies:
            self._access.update(policy.methods())

    def authenticate(
        self, method_name: str, metadata: Iterable[tuple[str, Any]] | None
    ) -> Principal | None:
        """The verified principal (None for a public RPC); Unauthenticated or PermissionDenied."""
        access = self._access.get(method_name)
        if access is None:
            access = Access.PUBLIC if method_name.startswith(_PUBLIC_SERVICES) else Access.SERVICE
        if access is Access.PUBLIC:
            return None
        principal = self._verifier.verify(bearer_token(metadata))
        if not principal.allows(access):
            raise denied(f"call {method_name.rsplit('/', 1)[-1]}")
        return principal


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key == AUTHORIZATION and isinstance(value, str):
            if value[: len(_BEARER)].lower() != _BEARER or len(value) == len(_BEARER):
                raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
            return value[len(_BEARER) :].strip()
    raise Unauthenticated("a bearer token is required (authorization: Bearer <token>)")


def bearer(token: str) -> tuple[str, str]:
    """The metadata entry that presents `token`."""
    return (AUTHORIZATION, f"Bearer {token}")


def authenticator(settings: Settings, *policies: Policy) -> Authenticator:
    """The process's authenticator: its token verifier (ConfigError when no key source is
    configured) and its services' policies."""
    return Authenticator(TokenVerifier.from_settings(settings), policies)


def presents_token(metadata: Iterable[tuple[str, Any]] | None) -> bool:
    """Whether a call already brings its own `authorization` (kept as it is)."""
    return any(key == AUTHORIZATION for key, _ in metadata or ())


def _with_bearer(
    details: grpc.aio.ClientCallDetails, token: Callable[[], str]
) -> grpc.aio.ClientCallDetails:
    metadata = tuple(details.metadata or ())
    if not presents_token(metadata):
        metadata += (bearer(token()),)
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=grpc.aio.Metadata(*metadata),
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class BearerInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Presents the bearer token and nothing else: for clients that want no spans or metrics
    of their own (the bench, tests). Our services' channels present it in the tracing layer."""

    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_bearer(client_call_details, self._token), request)


class StreamBearerInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    """Presents the bearer token on server-streaming calls (WatchPayment), which unary
    interceptors do not see."""

    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_bearer(client_call_details, self._token), request)


def bearer_interceptors(token: Callable[[], str]) -> list[grpc.aio.ClientInterceptor]:
    return [BearerInterceptor(token), StreamBearerInterceptor(token)]


def bearer_channel(target: str, token: str) -> grpc.aio.Channel:
    """A plain channel (no retries, no spans or metrics of its own) whose calls present
    `token`: the bench's and the tests', which measure or check our services, not themselves.
    Round robin, as create_channel: a target naming several replicas spreads calls over them."""
    return grpc.aio.insecure_channel(
        target,
        options=[("grpc.lb_policy_name", "round_robin"), *OWN_CONNECTIONS],
        interceptors=bearer_interceptors(lambda: token),
    )
