from __future__ import annotations

import pytest

from common.config import Settings
from paysuite_cli.ops import resolve_stream


@pytest.mark.parametrize(
    ("given", "prefix", "expected"),
    [
        ("payment", "", "paysuite.payment.events"),
        ("saga", "t1.", "t1.paysuite.payment.saga"),
        ("gateway", "t1.", "t1.paysuite.gateway.events"),
        ("paysuite.wallet.events", "t1.", "t1.paysuite.wallet.events"),
        ("paysuite.wallet.events.dlq", "", "paysuite.wallet.events"),
        ("t1.paysuite.wallet.events", "t1.", "t1.paysuite.wallet.events"),
        ("custom.stream", "", "custom.stream"),
    ],
)
def test_a_stream_is_named_by_alias_full_name_or_dlq(
    given: str, prefix: str, expected: str
) -> None:
    assert resolve_stream(Settings(stream_prefix=prefix), given) == expected
