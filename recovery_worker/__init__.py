"""Recovery worker: sweeps payments and money stuck between services, on a schedule, and
moves them on through the services' gRPC APIs (it owns no business data; design.md §2).

Sweeps (`service_layer.sweeps`), each claimed through a Redis lease per run so several
replicas never do the same sweep at once (`adapters.redis_store` says why Redis):

- pending, initiated, refunding: payments stuck past their threshold are moved on at the
  rungs of an escalating ladder (`domain.ladder`) through the payment service's
  RecoverPayment, which asks the provider again (SyncOperation) or resumes the saga, and
  notes each attempt in the payment's audit trail. An unknown answer never fails a
  payment; a refund still unsettled after three attempts goes to manual review.
- expired_holds: wallet holds past their expiry, released (WalletService.ExpireHolds).
- pipeline: consumer groups with stalled entries, their lag, and dead letters, reported.

`python -m recovery_worker` runs them every PAYSUITE_RECOVERY_INTERVAL_S; `paysuite recover
--once` runs each once and prints what it did.
"""
