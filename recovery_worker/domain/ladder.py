"""The escalation ladder for payments whose provider has not answered.

A pending payment is asked about again at rungs measured from its last change (`updated_at`):
the stuck threshold (1 minute by default), 5 minutes, 1 hour, 1 day, and then once a day for
as long as it takes. Asking more often would only load a provider that is already slow or
down; never asking again would leave money in limbo (Kill Bill's Janitor and Hyperswitch's
"every 5 minutes, never auto-fail" both back off this way). An unknown answer never fails a
payment: only the provider confirming an outcome moves it, through the gateway.

The ladder is stateless arithmetic; which rung was last tried for a payment is remembered by
the worker (`RungMemory`), keyed by the payment's `updated_at` so a payment that moves starts
again at the bottom.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Ladder:
    rungs: tuple[timedelta, ...]
    # After the last rung, one more rung every `then_every`.
    then_every: timedelta = DAY

    @classmethod
    def starting_at(cls, first: timedelta) -> Ladder:
        """first, then those of 5 min, 1 h and 1 day that come after it, then daily."""
        later = (timedelta(minutes=5), timedelta(hours=1), DAY)
        return cls((first, *(rung for rung in later if rung > first)))

    def rung_at(self, age: timedelta) -> int | None:
        """The highest rung reached at `age` since the last change; None before the first."""
        if age < self.rungs[0]:
            return None
        last = len(self.rungs) - 1
        if age < self.rungs[last]:
            return sum(1 for rung in self.rungs if rung <= age) - 1
        return last + int((age - self.rungs[last]) / self.then_every)

    def reached_at(self, rung: int) -> timedelta:
        """The age at which `rung` is reached (so `rung_at(reached_at(r)) == r`)."""
        last = len(self.rungs) - 1
        if rung <= last:
            return self.rungs[rung]
        return self.rungs[last] + (rung - last) * self.then_every

    def due(self, age: timedelta, last_tried: int | None) -> int | None:
        """The rung to try now, or None when the next one is not due yet."""
        rung = self.rung_at(age)
        if rung is None or (last_tried is not None and rung <= last_tried):
            return None
        return rung
