"""Tokens in tests: one signing key per run, and tokens and authenticators made with it."""

from __future__ import annotations

import uuid

from pydantic import SecretStr

from common.auth import Role
from common.config import Settings
from common.grpc.auth import Authenticator, Policy, authenticator
from common.tokens import mint_for

TEST_AUTH_SECRET = "test-signing-key-" + uuid.uuid4().hex + uuid.uuid4().hex
AUTH_SETTINGS = Settings(auth_secret=SecretStr(TEST_AUTH_SECRET))


def make_token(subject: str = "service:tests", *roles: Role) -> str:
    """A token signed with the run's key: a service's unless roles are given."""
    return mint_for(AUTH_SETTINGS, subject=subject, roles=roles or (Role.SERVICE,))


def make_authenticator(*policies: Policy) -> Authenticator:
    return authenticator(AUTH_SETTINGS, *policies)
