"""The bearer token each command presents, and `paysuite token issue`.

A command uses PAYSUITE_TOKEN when it is set, as given. Otherwise, next to a suite whose
signing key it can read (the embedded suite's data folder, or PAYSUITE_AUTH_SECRET), it mints
a short-lived token of its own: an operator's for reads and operator commands, and the
account owner's for moving an account's money (looked up as the operator). Holding the key
already allows minting any token, so this adds no power; a deployment with an identity
provider gives its users tokens, and the CLI only passes them on.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from typing import Annotated

import typer

from common.auth import Role
from common.config import ConfigError, Settings, load_settings
from common.grpc.client import create_channel
from common.tokens import mint_for, with_local_key
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc

TOKEN_VARIABLE = "PAYSUITE_TOKEN"  # noqa: S105 - the variable's name, not a token
# Tokens the CLI mints for itself live only as long as one command might.
COMMAND_TOKEN_TTL_S = 600
DEFAULT_ISSUE_TTL_S = 3600
MAX_ISSUE_TTL_S = 30 * 86_400

TokenSource = Callable[[], str]


def _given() -> str | None:
    return os.environ.get(TOKEN_VARIABLE) or None


def _fixed(token: str) -> TokenSource:
    return lambda: token


def operator_name(name: str | None = None) -> str:
    """Who an operator command is recorded under (a review's `resolved_by`): the login name
    unless given."""
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "cli"
    return f"operator:{name}"


def mint(settings: Settings, subject: str, *roles: Role, ttl_s: int = COMMAND_TOKEN_TTL_S) -> str:
    return mint_for(with_local_key(settings), subject=subject, roles=roles, ttl_s=ttl_s)


def operator(settings: Settings, name: str | None = None) -> TokenSource:
    """For reads and operator commands."""
    given = _given()
    return _fixed(given or mint(settings, operator_name(name), Role.OPERATOR))


def as_user(settings: Settings, user: str) -> TokenSource:
    given = _given()
    return _fixed(given or mint(settings, user, Role.USER))


async def as_owner(settings: Settings, account_id: str) -> TokenSource:
    """For moving an account's money: the account owner's token."""
    given = _given()
    if given:
        return _fixed(given)
    async with create_channel(settings.wallet_target, token=operator(settings)) as channel:
        account = await wallet_pb2_grpc.WalletServiceStub(channel).GetAccount(
            wallet_pb2.GetAccountRequest(account_id=account_id), timeout=10
        )
    return as_user(settings, account.owner_id)


def issue(
    user: Annotated[str, typer.Option("--user", help="The token's subject: an owner_id.")],
    role: Annotated[
        list[Role] | None,
        typer.Option("--role", help="Add a role (operator, service); user when none is given."),
    ] = None,
    ttl: Annotated[
        int, typer.Option(help="Seconds until it expires.", min=1, max=MAX_ISSUE_TTL_S)
    ] = DEFAULT_ISSUE_TTL_S,
) -> None:
    """Mint a development token with the suite's signing key (HS256); print it alone, so that
    `export PAYSUITE_TOKEN=$(paysuite token issue --user alice)` works."""
    roles = tuple(role or (Role.USER,))
    try:
        token = mint(load_settings(), user, *roles, ttl_s=ttl)
    except ConfigError as exc:
        typer.echo(f"paysuite token issue: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(token)
