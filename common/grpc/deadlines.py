"""A served request's deadline, carried to the calls it makes to other services.

The server interceptor records when the request must be answered; a client asks `remaining`
for its timeout, so a downstream call never outlives the request it serves (and a background
step, with no request, uses its own configured timeout).
"""

from __future__ import annotations

import contextvars
import time

# Monotonic time by which the request being served must be answered; None outside a request
# or when the caller set no deadline.
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "deadline", default=None
)

# Below this, a call cannot succeed anyway; it still gets this long to fail cleanly.
MIN_TIMEOUT_S = 0.05


def set_deadline(time_remaining_s: float | None) -> contextvars.Token[float | None]:
    due = None if time_remaining_s is None else time.monotonic() + time_remaining_s
    return deadline_var.set(due)


def remaining(timeout_s: float) -> float:
    """The timeout for a downstream call: `timeout_s`, or the served request's time left."""
    due = deadline_var.get()
    if due is None:
        return timeout_s
    return max(MIN_TIMEOUT_S, min(timeout_s, due - time.monotonic()))
