"""Provider simulator: a real HTTP server that plays an external payment service provider.

It takes charges, payouts and refunds over a small JSON API (idempotent on the
`Idempotency-Key` header), answers `processing` at once, settles later, and reports outcomes by
webhooks signed in the Standard Webhooks or the Stripe format, retried the way real providers
retry. Its chaos knobs (declines, 503s, unanswered requests, outages, duplicated, delayed and
reordered webhooks) change at run time; its dice are seeded. Operations survive a restart in a
small file-backed store. It imports nothing from the services. Run it with
``python -m provider_simulator``.
"""
