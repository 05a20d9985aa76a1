"""Who may call what: the policy table's defaults and the bearer metadata's format."""

from __future__ import annotations

import pytest

from common.auth import Access, Principal, Role
from common.errors import PermissionDenied, Unauthenticated
from common.grpc.auth import Policy, bearer_token
from tests.tokens import make_authenticator, make_token

POLICY = Policy("pkg.Svc", {"Read": Access.CALLER, "Decide": Access.OPERATOR})
METHOD = "/pkg.Svc/{}"


def metadata(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_health_and_reflection_need_no_token() -> None:
    auth = make_authenticator(POLICY)
    assert auth.authenticate("/grpc.health.v1.Health/Check", None) is None
    assert (
        auth.authenticate("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None)
        is None
    )


def test_an_unlisted_method_is_for_services_only() -> None:
    auth = make_authenticator(POLICY)
    with pytest.raises(PermissionDenied):
        auth.authenticate(METHOD.format("New"), metadata(make_token("alice", Role.USER)))
    assert auth.authenticate(METHOD.format("New"), metadata(make_token())) is not None


@pytest.mark.parametrize(
    ("roles", "read", "decide"),
    [
        ((Role.USER,), True, False),
        ((Role.OPERATOR,), True, True),
        ((Role.SERVICE,), True, True),
    ],
)
def test_each_role_reaches_its_access_levels(
    roles: tuple[Role, ...], read: bool, decide: bool
) -> None:
    auth = make_authenticator(POLICY)
    token = metadata(make_token("alice", *roles))
    for name, allowed in (("Read", read), ("Decide", decide)):
        if allowed:
            assert auth.authenticate(METHOD.format(name), token) == Principal(
                "alice", frozenset(roles)
            )
        else:
            with pytest.raises(PermissionDenied):
                auth.authenticate(METHOD.format(name), token)


@pytest.mark.parametrize(
    "entries",
    [
        [],
        [("authorization", "Basic dXNlcjpwYXNz")],
        [("authorization", "Bearer ")],
        [("x-other", "Bearer abc")],
    ],
)
def test_missing_or_malformed_metadata_is_unauthenticated(entries: list[tuple[str, str]]) -> None:
    with pytest.raises(Unauthenticated):
        bearer_token(entries)


def test_the_scheme_is_case_insensitive() -> None:
    assert bearer_token([("authorization", "bearer abc")]) == "abc"


def test_ownership_rules() -> None:
    alice = Principal("alice", frozenset({Role.USER}))
    operator = Principal("op", frozenset({Role.OPERATOR}))
    service = Principal("service:x", frozenset({Role.SERVICE}))
    assert alice.may_act_for("alice")
    assert not alice.may_act_for("bob")
    assert alice.may_read("alice")
    assert not alice.may_read("bob")
    assert operator.may_read("bob")
    assert not operator.may_act_for("bob")
    assert operator.may_support("bob")
    assert not alice.may_support("bob")
    assert service.may_act_for("bob")
    assert service.may_read("bob")
