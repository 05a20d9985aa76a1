"""Webhook signatures in the two formats real providers use.

Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` over
`{id}.{timestamp}.{body}`, keyed with the base64-decoded secret (after its `whsec_` prefix).

Stripe: `Stripe-Signature: t=<timestamp>,v1=<hex>` over `{timestamp}.{body}`, keyed with the
secret's characters as they are (Stripe does not decode its `whsec_` secrets).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


def stripe_signature(secret: str, timestamp: int, body: str) -> str:
    payload = f"{timestamp}.{body}".encode()
    digest = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class Signer:
    def __init__(self, signature_format: str, secret: str) -> None:
        self._format = signature_format
        self._secret = secret
        self._standard = Webhook(secret) if signature_format == "standard" else None

    def headers(self, event_id: str, body: str) -> dict[str, str]:
        # Signed afresh for each attempt: receivers reject timestamps older than a few minutes,
        # and late retries must still verify. The id and body never change, so receivers dedup.
        now = datetime.now(UTC)
        timestamp = int(now.timestamp())
        if self._standard is None:
            return {"stripe-signature": stripe_signature(self._secret, timestamp, body)}
        return {
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self._standard.sign(event_id, now, body),
        }
