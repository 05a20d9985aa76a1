"""SQL statements per database, counted from PostgreSQL's own log for a window of time.

The embedded server has no pg_stat_statements, so the bench turns on
`log_min_duration_statement = 0` (every statement logged with its duration) for the window,
with a line prefix of epoch time, backend pid and database, then turns it off again. Each
message of the extended protocol is logged on its own: `parse`, `bind` and `execute` lines
(so parses and executions can be told apart: psycopg prepares a query after a few runs and
drops its prepared statements on ROLLBACK with `DEALLOCATE ALL`); the simple protocol (which
psycopg uses for BEGIN, COMMIT, ROLLBACK and queries without parameters) logs `statement`.
A statement that fails logs an ERROR instead of a duration.

statements = simple-protocol statements + executes + errors.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import sql as pgsql

LINE_PREFIX = "%n|%p|%d|"
# Set for the window, reset after: ALTER SYSTEM needs a superuser outside a transaction.
SETTINGS = (
    ("log_min_duration_statement", "0"),
    ("log_line_prefix", LINE_PREFIX),
    # Without this, every bind and execute line carries a DETAIL line of its parameters.
    ("log_parameter_max_length", "0"),
)

_RECORD = re.compile(r"^(\d+\.\d+)\|(\d*)\|([^|]*)\|([A-Z]+\d?):  (.*)$")
_DURATION = re.compile(r"^duration: [\d.]+ ms  (statement|parse|bind|execute)( [^:]*)?: (.*)$")
_WORD = re.compile(r"[A-Za-z_][\w.\"]*")


@dataclass(frozen=True, slots=True)
class Record:
    at: float  # seconds since the epoch, as the server's clock logged it
    database: str  # empty for the postmaster's own lines
    severity: str  # LOG, ERROR, DETAIL, STATEMENT, ...
    message: str  # continuation lines (a multi-line query) joined with "\n"


def records(lines: Iterable[str]) -> Iterator[Record]:
    """Log records in the bench's prefix; lines before the prefix took effect are skipped,
    continuation lines (a query's later lines, tab-indented) belong to the record above."""
    current: Record | None = None
    extra: list[str] = []
    for line in lines:
        match = _RECORD.match(line.rstrip("\n"))
        if match is None:
            if current is not None:
                extra.append(line.rstrip("\n").lstrip("\t"))
            continue
        if current is not None:
            yield _joined(current, extra)
        at, _pid, database, severity, message = match.groups()
        current, extra = Record(float(at), database, severity, message), []
    if current is not None:
        yield _joined(current, extra)


def _joined(record: Record, extra: list[str]) -> Record:
    if not extra:
        return record
    return Record(record.at, record.database, record.severity, "\n".join([record.message, *extra]))


def kind(sql: str) -> str:
    """What a statement is, for the breakdown: its first word, with the table for writes
    (`INSERT payment_steps`); `DEALLOCATE ALL` is `DEALLOCATE`."""
    words: list[str] = _WORD.findall(_without_comments(sql))
    if not words:
        return "?"
    first = words[0].upper()
    if first in ("INSERT", "DELETE") and len(words) > 2:
        return f"{first} {_table(words[2])}"  # INSERT INTO t, DELETE FROM t
    if first == "UPDATE" and len(words) > 1:
        return f"UPDATE {_table(words[1])}"
    return first


def _table(word: str) -> str:
    return word.replace('"', "").lower()


def _without_comments(sql: str) -> str:
    text = sql.strip()
    while text.startswith(("/*", "--")):
        end = text.find("*/") + 2 if text.startswith("/*") else text.find("\n") + 1
        if end <= 1:
            return ""
        text = text[end:].strip()
    return text


@dataclass
class Statements:
    """One database's statements over the window."""

    simple: int = 0  # simple-protocol statements (BEGIN, COMMIT, queries without parameters)
    parses: int = 0
    binds: int = 0
    executes: int = 0
    errors: int = 0  # statements that failed (they log an ERROR, not a duration)
    kinds: Counter[str] = field(default_factory=Counter)  # executed statements by kind

    @property
    def statements(self) -> int:
        return self.simple + self.executes + self.errors

    def add(self, record: Record) -> None:
        if record.severity == "ERROR":
            self.errors += 1
            self.kinds["(failed)"] += 1
            return
        first, _, rest = record.message.partition("\n")
        match = _DURATION.match(first)
        if record.severity != "LOG" or match is None:
            return
        what, text = match.group(1), f"{match.group(3)}\n{rest}"
        if what == "parse":
            self.parses += 1
        elif what == "bind":
            self.binds += 1
        else:
            if what == "statement":
                self.simple += 1
            else:
                self.executes += 1
            self.kinds[kind(text)] += 1


def count(
    lines: Iterable[str], *, start: float, end: float, databases: Iterable[str]
) -> dict[str, Statements]:
    """Statements per database (each of `databases`, zero if silent) logged in [start, end]."""
    found = {name: Statements() for name in databases}
    for record in records(lines):
        if start <= record.at <= end and record.database in found:
            found[record.database].add(record)
    return found


async def set_logging(conn: psycopg.AsyncConnection[object], *, on: bool) -> None:
    """Every statement logged (on) or the server's own settings again (off); an autocommit
    connection as a superuser. Takes effect in each backend before its next command."""
    for name, value in SETTINGS:
        if on:
            await conn.execute(
                pgsql.SQL("ALTER SYSTEM SET {} = {}").format(
                    pgsql.Identifier(name), pgsql.Literal(value)
                )
            )
        else:
            await conn.execute(pgsql.SQL("ALTER SYSTEM RESET {}").format(pgsql.Identifier(name)))
    await conn.execute("SELECT pg_reload_conf()")
