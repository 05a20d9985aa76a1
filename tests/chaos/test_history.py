"""The calls a payment's key was sent with, for the report of a payment still open."""

from __future__ import annotations

from chaos.history import Call, History


def _call(key: str, outcome: str, started: float) -> Call:
    return Call(0, "withdrawal", "grpc", key, "req", started, started + 5.0, outcome)


def test_the_calls_of_one_key_oldest_first() -> None:
    history = History(seed=1)
    history.calls += [
        _call("k1", "DEADLINE_EXCEEDED", 58.0),
        _call("k2", "OK", 58.5),
        _call("k1", "ABORTED", 63.5),
    ]

    assert history.calls_for("k1") == [
        "58.0-63.0 s withdrawal via grpc: DEADLINE_EXCEEDED",
        "63.5-68.5 s withdrawal via grpc: ABORTED",
    ]
    assert history.calls_for("") == []
