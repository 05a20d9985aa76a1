"""The nemesis's schedule is a function of the seed, covers every kind it was given, and
overlaps; `--faults` selects families, kinds and single targets."""

from __future__ import annotations

import itertools

from chaos.nemesis import fault_kinds, schedule, select

PROCESSES = ["payment", "wallet", "redis", "postgres"]
SIMULATORS = ["sim-primary"]


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    kinds = fault_kinds(PROCESSES, SIMULATORS)

    first = schedule(kinds, seed=16, start=5, end=600)

    assert first == schedule(kinds, seed=16, start=5, end=600)
    assert first != schedule(kinds, seed=17, start=5, end=600)


def test_every_kind_comes_once_where_time_allows_and_faults_overlap() -> None:
    kinds = fault_kinds(PROCESSES, SIMULATORS)

    plan = schedule(kinds, seed=3, start=5, end=600)

    assert {(p.kind, p.target) for p in plan} == set(kinds)
    assert all(5 <= p.at < 600 and p.at + p.duration <= 600 for p in plan)
    spans = sorted((p.at, p.at + p.duration) for p in plan if p.duration)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def test_kills_last_no_time() -> None:
    plan = schedule(fault_kinds(PROCESSES, SIMULATORS), seed=1, start=0, end=300)

    assert all(p.duration == 0 for p in plan if p.kind == "kill")
    assert all(p.duration > 0 for p in plan if p.kind != "kill")


def test_faults_are_selected_by_family_kind_or_target() -> None:
    kinds = fault_kinds(PROCESSES, SIMULATORS)

    assert select(kinds, "all") == kinds
    assert {k for k, _ in select(kinds, "kill")} == {"kill"}
    assert {k for k, _ in select(kinds, "provider")} == {
        k for k, _ in kinds if k.startswith("provider-")
    }
    assert select(kinds, "kill:redis, provider-outage") == [
        ("kill", "redis"),
        ("provider-outage", "sim-primary"),
    ]
    assert select(kinds, "db-refuse") == [
        ("db-refuse", "payments"),
        ("db-refuse", "wallets"),
        ("db-refuse", "gateway"),
    ]
