"""How badly the simulator behaves, changeable at run time, and its seeded dice.

Every knob is per instance. The dice are one seeded `random.Random`, so a chaos run with the
same seed and the same sequence of requests misbehaves the same way again.
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Chaos(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # How long an accepted operation stays pending before it settles.
    settle_delay_ms: int = Field(default=300, ge=0)
    # Share of operations that settle as failed (declined) instead of succeeded.
    decline_rate: float = Field(default=0.0, ge=0, le=1)
    # Share of requests answered 503 without being processed.
    error_rate: float = Field(default=0.0, ge=0, le=1)
    # Share of requests that are processed but never answered.
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    # Share of requests lost on their way in: never processed and never answered, as a request
    # that timed out before it reached the provider. A later lookup says "no such operation".
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    # Share of webhooks never sent, as by a provider whose sender lost them: the operation's
    # outcome is only learnt by asking (a lookup), as the recovery worker does.
    webhook_drop_rate: float = Field(default=0.0, ge=0, le=1)
    # Share of webhooks sent twice.
    webhook_duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    # Share of webhooks held back for webhook_delay_ms before their first attempt.
    webhook_delay_rate: float = Field(default=0.0, ge=0, le=1)
    webhook_delay_ms: int = Field(default=2000, ge=0)
    # Share of operations that also announce "<kind>.processing", delivered after their outcome.
    webhook_reorder_rate: float = Field(default=0.0, ge=0, le=1)
    # Every request is answered 503, unprocessed, as during a provider outage.
    outage: bool = False

    def update(self, changes: dict[str, Any]) -> Chaos:
        """A validated copy with `changes` applied; raises pydantic's ValidationError."""
        return Chaos.model_validate({**self.model_dump(), **changes})


class Dice:
    def __init__(self, seed: int | None) -> None:
        # Not for security: reproducible misbehaviour is the point.
        self._random = random.Random(seed)  # noqa: S311 - seeded for reproducible misbehaviour, not for secrets

    def roll(self, rate: float) -> bool:
        return rate > 0 and self._random.random() < rate
