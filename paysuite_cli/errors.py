"""Expected failures of any `paysuite` command: one line and an exit code, never a traceback.

Exit codes (also in `paysuite --help`):
    0  done
    1  the suite refused the request (NOT_FOUND, INVALID_ARGUMENT, a failed check, ...)
    2  could not ask: no suite running, a server unreachable, bad configuration or usage
"""

from __future__ import annotations

from typing import Any

import grpc
import psycopg
import sqlalchemy.exc
import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from common.config import ConfigError
from common.errors import DomainError
from common.grpc.client import error_info
from paysuite_cli.endpoints import SuiteNotRunning

REFUSED = 1
UNREACHABLE = 2

EPILOG = (
    "Exit codes: 0 done; 1 the suite refused the request (NOT_FOUND, INVALID_ARGUMENT, a"
    " failed check); 2 could not ask (no suite running, a server unreachable, bad"
    " configuration or usage)."
)

# gRPC codes that mean the server was not there to answer, rather than that it said no.
_NOT_ANSWERED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

console = Console()


def explain(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for an expected failure; None for a bug (let it trace)."""
    if isinstance(exc, SuiteNotRunning | ConfigError):
        return UNREACHABLE, str(exc)
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        code, details = exc.code(), exc.details() if hasattr(exc, "details") else ""
        if code in _NOT_ANSWERED:
            return UNREACHABLE, f"cannot reach the suite ({code.name}): is it running?"
        # The refusal's stable reason (INSUFFICIENT_FUNDS, ...) when the status carries one.
        reason = error_info(exc)[0] if isinstance(exc, grpc.aio.AioRpcError) else ""
        label = f"{code.name} {reason}" if reason and reason != code.name else code.name
        return REFUSED, f"{label}: {details}"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return UNREACHABLE, f"cannot reach Redis: {_first_line(exc)}"
    if isinstance(exc, RedisError):
        return REFUSED, f"Redis: {_first_line(exc)}"
    if isinstance(exc, sqlalchemy.exc.OperationalError | psycopg.OperationalError):
        return UNREACHABLE, f"cannot reach PostgreSQL: {_first_line(exc)}"
    if isinstance(exc, DomainError):
        return REFUSED, exc.message
    if isinstance(exc, ConnectionError):
        return UNREACHABLE, f"cannot reach the suite: {_first_line(exc)}"
    return None


class Cli(TyperGroup):
    """The root command: every subcommand's expected failures end here as one line."""

    # typer vendors click (typer._click) and exports no name for its Context type.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            known = explain(exc)
            if known is None:
                raise
            code, line = known
            console.print(f"[red]{escape(line)}[/red]", soft_wrap=True)
            raise typer.Exit(code) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
