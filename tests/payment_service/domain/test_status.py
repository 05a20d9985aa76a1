"""The state table: final and settled states, and no move backwards."""

import pytest

from payment_service.domain.status import ALLOWED, FINAL, SETTLED, TERMINAL, PaymentStatus

S = PaymentStatus


@pytest.mark.parametrize("final", sorted(FINAL))
def test_final_states_are_final(final: PaymentStatus) -> None:
    assert ALLOWED[final] == frozenset()


@pytest.mark.parametrize("settled", sorted(SETTLED))
def test_settled_states_move_only_to_refunded_ones(settled: PaymentStatus) -> None:
    assert ALLOWED[settled] <= {S.PARTIALLY_REFUNDED, S.REFUNDED}
    assert settled in TERMINAL


def test_every_transition_in_the_table_moves_forward() -> None:
    order = [S.INITIATED, S.PENDING, S.REFUNDING, S.REQUIRES_MANUAL_REVIEW]
    for source, targets in ALLOWED.items():
        for target in targets:
            assert target not in order[: order.index(source) + 1] if source in order else True
