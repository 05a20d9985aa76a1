"""The wallet's publisher: the envelope of an event of a published type, else nothing."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from common.events import WALLET_STREAM
from wallet_service.adapters.event_mapping import publisher
from wallet_service.domain import events as ev
from wallet_service.domain.account import Published


def _published(event: ev.AccountEvent) -> Published:
    recorded = ev.RecordedEvent.record("acc-1", 2, event, ev.GENESIS_HASH)
    return Published(recorded, "USD", 500, 0)


CREDITED = _published(ev.Credited(operation_ref="c", amount_minor=500, transaction_id="t"))


def test_nothing_is_published_by_default() -> None:
    assert publisher(())(CREDITED) is None


def test_a_published_type_becomes_an_envelope_on_the_wallet_stream() -> None:
    outgoing = publisher(("account.cred*",))(CREDITED)
    assert outgoing is not None
    assert outgoing.stream == WALLET_STREAM
    assert outgoing.envelope.event_type == "account.credited"
    assert outgoing.envelope.aggregate_id == "acc-1"


def test_a_pattern_naming_no_wallet_event_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'account\.credit'"):
        publisher(("account.credited", "account.credit"))
