"""Gateway service: the only door to payment providers, and their webhooks."""
