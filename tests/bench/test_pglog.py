from __future__ import annotations

from bench.pglog import count, kind, records

# As the embedded PostgreSQL 16 writes it with log_min_duration_statement = 0 and the bench's
# prefix (epoch|pid|database|): a query's later lines are tab-indented continuation lines.
LOG = """\
2026-12-05 07:55:48.319 UTC [17719] LOG:  received SIGHUP, reloading configuration files
1796457348.322|17719||LOG:  parameter "log_line_prefix" changed to "%n|%p|%d|"
1796457348.331|17755|payments|LOG:  duration: 0.041 ms  statement: BEGIN
1796457348.344|17755|payments|LOG:  duration: 0.130 ms  parse <unnamed>: INSERT INTO payment_steps
\tVALUES ($1)
1796457348.344|17755|payments|LOG:  duration: 0.062 ms  bind <unnamed>: INSERT INTO payment_steps
\tVALUES ($1)
1796457348.344|17755|payments|LOG:  duration: 0.138 ms  execute <unnamed>: INSERT INTO payment_steps
\tVALUES ($1)
1796457348.345|17755|payments|LOG:  duration: 0.988 ms  statement: COMMIT
1796457348.347|17756|gateway|LOG:  duration: 0.007 ms  statement: BEGIN
1796457348.348|17756|gateway|LOG:  duration: 0.020 ms  bind _pg3_0: UPDATE "operations" SET x=1
1796457348.348|17756|gateway|LOG:  duration: 0.016 ms  execute _pg3_0: UPDATE "operations" SET x=1
1796457348.349|17756|gateway|LOG:  duration: 0.023 ms  parse <unnamed>: insert into t values ($1)
1796457348.349|17756|gateway|LOG:  duration: 0.019 ms  bind <unnamed>: insert into t values ($1)
1796457348.351|17756|gateway|ERROR:  duplicate key value violates unique constraint "t_pkey"
1796457348.351|17756|gateway|DETAIL:  Key (id)=(1) already exists.
1796457348.351|17756|gateway|STATEMENT:  insert into t values ($1)
1796457348.352|17756|gateway|LOG:  duration: 0.010 ms  statement: ROLLBACK
1796457348.352|17756|gateway|LOG:  duration: 0.013 ms  statement: DEALLOCATE ALL
1796457349.500|17755|payments|LOG:  duration: 0.041 ms  statement: BEGIN
1796457348.360|17757|postgres|LOG:  duration: 0.041 ms  statement: SELECT 1
"""


def test_records_join_continuation_lines_and_skip_lines_in_another_format() -> None:
    found = list(records(LOG.splitlines()))
    assert found[0].database == ""  # the postmaster's own line
    insert = found[2]
    assert insert.database == "payments"
    assert insert.message.endswith("INSERT INTO payment_steps\nVALUES ($1)")
    assert insert.at == 1796457348.344
    assert [r.severity for r in found[11:14]] == ["ERROR", "DETAIL", "STATEMENT"]


def test_statements_per_database_in_the_window() -> None:
    found = count(
        LOG.splitlines(),
        start=1796457348.0,
        end=1796457349.0,  # the last payments BEGIN is outside
        databases=["payments", "gateway", "wallets"],
    )

    payments, gateway, wallets = found["payments"], found["gateway"], found["wallets"]
    assert (payments.simple, payments.parses, payments.binds, payments.executes) == (2, 1, 1, 1)
    assert payments.statements == 3
    assert payments.kinds == {"BEGIN": 1, "INSERT payment_steps": 1, "COMMIT": 1}
    # BEGIN, the prepared UPDATE, the failed INSERT, ROLLBACK, DEALLOCATE ALL.
    assert gateway.statements == 5
    assert (gateway.parses, gateway.executes, gateway.errors) == (1, 1, 1)
    assert gateway.kinds == {
        "BEGIN": 1,
        "UPDATE operations": 1,
        "(failed)": 1,
        "ROLLBACK": 1,
        "DEALLOCATE": 1,
    }
    assert wallets.statements == 0
    assert "postgres" not in found  # the bench's own database is not one of the suite's


def test_kinds() -> None:
    assert kind("  /* comment */ SELECT 1") == "SELECT"
    assert kind("-- why\nwith x as (select 1) select * from x") == "WITH"
    assert kind('DELETE FROM "Outbox" WHERE id = $1') == "DELETE outbox"
    assert kind("DEALLOCATE ALL") == "DEALLOCATE"
    assert kind("") == "?"
