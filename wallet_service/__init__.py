"""Wallet service: accounts and their event-sourced, double-entry, verifiable ledger.

- Every change to an account is an immutable event (`domain/events.py`) appended under the
  unique `(account_id, version)` and chained by hash to the one before; the state of an
  account is its latest snapshot (every `PAYSUITE_WALLET_SNAPSHOT_EVERY` events) plus the
  events after it. Balances (available, held, total) and holds are read models written in the
  same transaction.
- Every movement of money is one journal transaction whose entries sum to zero per currency,
  across customer accounts and system accounts: clearing (per provider and currency), FX
  liquidity (per currency) and fees (per currency). The journal and the histories are
  append-only; a trigger refuses UPDATE, DELETE and TRUNCATE.
- Every mutating RPC is idempotent on its operation_ref (`OPERATION_REF_REUSED` when reused
  with other parameters). Requests arriving together share one transaction (group commit).
- Cross-currency transfers convert at the latest rate (`paysuite fx set USD EUR 0.9215`), on
  integers, rounding half to even to the target currency's minor unit (`domain/fx.py`).
- Operators: `paysuite ledger verify` proves the books (exit 1 on any finding),
  `paysuite wallet rebuild-projections` recomputes the read models from the events,
  `paysuite wallet expire-holds` releases expired holds (the service also sweeps on its own).
"""
