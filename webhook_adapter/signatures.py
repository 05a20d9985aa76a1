"""Webhook signature verification in the two formats providers use; the verifying half of the
provider port, kept in the one process that holds the secrets.

Both compare in constant time (hmac.compare_digest), accept any of the provider's currently
active secrets (two during a rotation), and refuse a timestamp more than `tolerance_s` away
from now in either direction (a replayed or a forged-future request).

    Standard Webhooks  webhook-id, webhook-timestamp, webhook-signature: "v1,<b64> v1,<b64>"
                       HMAC-SHA256(base64decode(secret minus "whsec_"), "{id}.{ts}.{body}")
    Stripe             Stripe-Signature: "t=<ts>,v1=<hex>,v1=<hex>"
                       HMAC-SHA256(secret as text, "{ts}.{body}")
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from common.config import ConfigError


class SignatureError(Exception):
    """The webhook does not prove it comes from the provider; `reason` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Verifier(Protocol):
    def verify(self, body: bytes, headers: Mapping[str, str]) -> None: ...


def _timestamp(raw: str, tolerance_s: int, now: float) -> int:
    try:
        timestamp = int(raw)
    except ValueError:
        raise SignatureError(
            "invalid_timestamp", "the signature timestamp is not a number"
        ) from None
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(
            "timestamp_out_of_tolerance",
            f"the signature timestamp is more than {tolerance_s}s from now",
        )
    return timestamp


def _any_matches(expected: Sequence[bytes], offered: Sequence[bytes]) -> bool:
    # Every pair is compared, so timing reveals neither which secret nor which offer matched.
    matched = False
    for mine in expected:
        for theirs in offered:
            matched |= hmac.compare_digest(mine, theirs)
    return matched


def standard_key(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        raise ConfigError("webhook secret: must be base64, optionally prefixed 'whsec_'") from None
    if not key:
        raise ConfigError("webhook secret: must not be empty")
    return key


class StandardWebhooksVerifier:
    def __init__(
        self, secrets: Sequence[str], *, tolerance_s: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._keys = [standard_key(secret) for secret in secrets]
        self._tolerance_s = tolerance_s
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        msg_id = headers.get("webhook-id", "")
        raw_timestamp = headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "")
        if not (msg_id and raw_timestamp and signatures):
            raise SignatureError("missing_signature", "the webhook-* signature headers are missing")
        timestamp = _timestamp(raw_timestamp, self._tolerance_s, self._clock())
        signed = f"{msg_id}.{timestamp}.".encode() + body
        expected = [
            base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()) for key in self._keys
        ]
        offered = [part.encode()[3:] for part in signatures.split() if part.startswith("v1,")]
        if not _any_matches(expected, offered):
            raise SignatureError("invalid_signature", "the webhook signature does not verify")


class StripeVerifier:
    def __init__(
        self, secrets: Sequence[str], *, tolerance_s: int, clock: Callable[[], float] = time.time
    ) -> None:
        if not all(secrets):
            raise ConfigError("webhook secret: must not be empty")
        self._keys = [secret.encode() for secret in secrets]
        self._tolerance_s = tolerance_s
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        header = headers.get("stripe-signature", "")
        pairs = [item.partition("=") for item in header.split(",")]
        timestamps = [value for key, _, value in pairs if key.strip() == "t"]
        offered = [value.strip().encode() for key, _, value in pairs if key.strip() == "v1"]
        if not timestamps or not offered:
            raise SignatureError("missing_signature", "the Stripe-Signature header is missing")
        timestamp = _timestamp(timestamps[0].strip(), self._tolerance_s, self._clock())
        signed = f"{timestamp}.".encode() + body
        expected = [
            hmac.new(key, signed, hashlib.sha256).hexdigest().encode() for key in self._keys
        ]
        if not _any_matches(expected, offered):
            raise SignatureError("invalid_signature", "the webhook signature does not verify")


def verifier_for(signature_format: str, secrets: Sequence[str], *, tolerance_s: int) -> Verifier:
    if signature_format == "stripe":
        return StripeVerifier(secrets, tolerance_s=tolerance_s)
    return StandardWebhooksVerifier(secrets, tolerance_s=tolerance_s)
