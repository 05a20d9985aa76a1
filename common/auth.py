"""Who is calling, and what they may do: the principal of a request as the services see it.

Tokens are verified at the edge of each process (common.tokens, common.grpc.auth); from there
on a request carries a `Principal`, and the service layers decide with the three questions
below, never with token claims or metadata.

Roles (a token may carry several):
- user: acts on the accounts it owns (`subject` == the account's `owner_id`), and reads them
  and their payments.
- operator: reads every account and payment, and runs the operator workflows (manual review,
  freezing accounts, refunds and cancels on a customer's behalf); it does not open accounts
  or create payments for others.
- service: our own processes (payment service, webhook adapter, recovery worker) calling one
  another; may do everything, including the wallet's posting RPCs no user may call.
"""

from __future__ import annotations

import contextvars
import enum
from dataclasses import dataclass

from common.errors import PermissionDenied, Unauthenticated


class Role(enum.StrEnum):
    USER = "user"
    OPERATOR = "operator"
    SERVICE = "service"


class Access(enum.Enum):
    """What an RPC asks of its caller before its handler runs (the handler then checks
    ownership for CALLER methods)."""

    PUBLIC = "public"  # health and reflection: probes and grpcurl need no token
    CALLER = "caller"  # any verified principal; the handler checks what it owns
    OPERATOR = "operator"  # operators and services
    SERVICE = "service"  # our own services only


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    roles: frozenset[Role]

    @property
    def is_service(self) -> bool:
        return Role.SERVICE in self.roles

    @property
    def is_operator(self) -> bool:
        """Operators, and services (which act for operators: the recovery worker opens cases)."""
        return Role.OPERATOR in self.roles or self.is_service

    def may_act_for(self, owner_id: str) -> bool:
        """Open an account for, or move money of, `owner_id`."""
        return self.is_service or self.subject == owner_id

    def may_read(self, owner_id: str) -> bool:
        return self.is_operator or self.subject == owner_id

    def may_support(self, owner_id: str) -> bool:
        """Refund or cancel a payment of `owner_id`: the owner, or an operator on their behalf."""
        return self.is_operator or self.subject == owner_id

    def allows(self, access: Access) -> bool:
        if access is Access.SERVICE:
            return self.is_service
        if access is Access.OPERATOR:
            return self.is_operator
        return True


# Internal work that no caller asked for (consumers, sweeps, tests of a service layer).
SYSTEM = Principal("service:system", frozenset({Role.SERVICE}))

principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)


def current_principal() -> Principal:
    """The verified caller of the request being served."""
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("a bearer token is required")
    return principal


def denied(what: str) -> PermissionDenied:
    """The one refusal for anything a principal may not touch. It names what was asked for,
    never whether it exists, so another user's ids cannot be probed."""
    return PermissionDenied(f"the caller may not {what}")
