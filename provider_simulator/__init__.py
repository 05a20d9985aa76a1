"""Provider simulator: a real HTTP server that plays an external payment service provider.

It accepts charges over a small JSON API, settles them after a configurable delay (the payment
method token decides the outcome) and reports the result with Standard Webhooks signed
callbacks, retried the way real providers retry. Everything lives in memory: restart it and
the provider "forgets". Run it with ``python -m provider_simulator``.
"""
