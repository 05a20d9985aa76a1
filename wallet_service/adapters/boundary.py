"""The adapter boundary: SQLAlchemy's and psycopg's exceptions become domain errors here,
once. Infrastructure failures leave as `DependencyUnavailable`, lost races as
`ConcurrentUpdate` (or its `VersionConflict`); no driver exception crosses it."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import psycopg
import sqlalchemy.exc

from common.errors import ConcurrentUpdate, DependencyUnavailable
from wallet_service.domain.errors import VersionConflict

P = ParamSpec("P")
R = TypeVar("R")

UNIQUE_VIOLATION = "23505"
# Lost races PostgreSQL reports on its own; retrying the unit of work is the answer to both.
RETRYABLE = {"40001", "40P01"}


@contextlib.asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """The adapter boundary: SQLAlchemy's exceptions become domain errors here, once."""
    try:
        yield
    except sqlalchemy.exc.IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) == UNIQUE_VIOLATION:
            raise VersionConflict("a concurrent request changed the same data") from exc
        raise
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        if getattr(exc.orig, "sqlstate", None) in RETRYABLE:
            raise ConcurrentUpdate("a concurrent request changed the same data") from exc
        raise DependencyUnavailable("the wallet database is unavailable") from exc
    # The same, raised by plain SQL on the driver connection.
    except psycopg.errors.UniqueViolation as exc:
        raise VersionConflict("a concurrent request changed the same data") from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        if exc.sqlstate in RETRYABLE:
            raise ConcurrentUpdate("a concurrent request changed the same data") from exc
        raise DependencyUnavailable("the wallet database is unavailable") from exc


def boundary(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        async with translated():
            return await method(*args, **kwargs)

    return wrapper
