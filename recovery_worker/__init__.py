"""Recovery worker: sweeps payments and money stuck between services, on a schedule, and
moves them on through the services' gRPC APIs (it owns no business data; design.md §2).

Sweeps (`service_layer.sweeps`), each claimed through a Redis lease per run so several
replicas never do the same sweep at once (`adapters.redis_store` says why Redis):

- pending: payments the provider has not answered are asked about again (SyncOperation) on
  an escalating ladder (`domain.ladder`); an unknown answer never fails a payment.
- initiated: payments whose saga's first step never ran, reported (resuming them is the
  payment service's job).
- refunding: refunds stuck past their threshold, reported until the payment service
  exposes an RPC that retries its refund step.
- expired_holds: wallet holds past their expiry, released (WalletService.ExpireHolds).
- pipeline: consumer groups with stalled entries, their lag, and dead letters, reported.

`python -m recovery_worker` runs them every PAYSUITE_RECOVERY_INTERVAL_S; `paysuite recover
--once` runs each once and prints what it did.
"""
